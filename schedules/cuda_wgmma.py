"""Hopper (sm_90a) warpgroup tensor-core kernel (``wgmma.mma_async``) for float16 and float32
calls (float32 as 3xTF32, :class:`Operands`: float32-accurate, the split TVM's CUTLASS offload
also uses for float32 GEMMs).

Same implicit GEMM as :mod:`.cuda_tensorcore` (per phase ``r``: ``acc[p, m] += X[p, k] * W[m,
k]``, pixels ``p = (n, q..)``, channels ``m``, ``k = (j.., ic)``; :class:`Geometry` holds the
index arithmetic, for 1-d, 2-d and 3-d alike), except that phases reading one input window
(runs of ``gcd(s, pad)`` per axis: all 4 of U-Net's k2 s2, 4 of HiFi-GAN's 8) share one GEMM,
their weights side by side (column ``n = m * group_size + l``); phases with different tap
counts (k % s != 0: CycleGAN's k3 s2) run exact GEMMs of their own lengths (a tile's K loop
covers its phase's taps, :meth:`Geometry.tap_count`); and a hand-laid kernel instead of a
scheduled compute: ``wgmma`` reads both operands straight from shared memory through
descriptors and runs asynchronously, which TIR's schedule primitives and WMMA intrinsics cannot
express. TVM 0.27's table-driven PTX (``T.ptx.wgmma``, ``T.ptx.cp.async``, ``T.ptx.mbarrier``)
and ``T.cuda.wgmma.encode_matrix_descriptor`` write it.

Kernel 1 copies the input zero-padded and channels last (``[N, H+pads, W+pads, Cin']``, Cin' =
Cin rounded up to BK with zero channels: FCN-8s' 21 -> 64; float32: its three tf32 parts side
by side), so every operand row of a K step is 16-byte ``cp.async`` copies with no guards.
Kernel 2: a thread block owns BM = 128 pixels (the last tile's rows past the pixels repeat the
last one and are not stored) x BN columns of one phase group; per K step of BK = 128 bytes (64
float16, 32 float32; inside one tap) the A (pixels) and B (channels, :func:`wgmma_pack`'s
K-major weight) tiles go into a ``stages``-deep ring of 128-byte-swizzled shared tiles
(:func:`tile_offset`; B optionally by TMA), then each of two warpgroups issues 4
``wgmma.m64n{BN}k16`` (tf32: k8) on its 64 rows.  Two K loops (:class:`WgmmaTile`): one
warpgroup copies and signals each stage through an mbarrier while two multiply and release it
(the default); or all warpgroups copy, then multiply, between CTA barriers.  The float32
accumulators (BN/2 registers a thread; float32 calls add each step's into a second set) are
cast and written to ``out[n, m, q*s + r]``, a pair a store where a group's phases run along x
(a column pair is two neighbouring outputs).  The
tiles run phase groups fastest, so the thread blocks writing one output region's interleaved
phases run together.

Measured (benchmarks/cuda_wgmma_ab.py, H100, batch 64): the swizzled tiles, each quarter warp
copying one whole 128-byte row, run the GEMM 2.8x faster than the unswizzled core-matrix tiles
of session 24 (pose 2048->256: 99 against 341 us); the layer then takes 0.117 ms against
cuDNN's 0.141 and the WMMA kernel's 0.218.  Through ``tvm_deconv.build`` it ran 1.10-1.82x the
WMMA kernel's speed on the seven eligible zoo layers at batch 64, so ``cuda.wgmma`` takes
float16 layers on Hopper by default (grids of MIN_BLOCKS or more). Session 26: the
phase-fastest tile order (U-Net 1.70x, HiFi-GAN 1.20x, pose 256->256 1.15x;
h100-wgmma-order-ab-s26.json), then the shared GEMMs of phase groups (HiFi-GAN 1.70x, U-Net
1.07x; h100-wgmma-groups-ab-s26.json): at batch 64 U-Net 1.50x, HiFi-GAN 1.38x and pose
256->256 1.07x cuDNN float16; with ragged phases taken, CycleGAN 256->128 / 128->64 1.77x /
1.76x the zero taps on the WMMA kernel (h100-wgmma-ragged-ab-s26.json); Cin padded and the last
pixel tile cut: FCN-8s 6.1x its FFMA kernel at batch 64 (3.3x cuDNN), pose 256->256 at batch 1
2.6x the WMMA kernel (h100-wgmma-padded-cin-ab-s26.json); in 3-d, the 3-D U-Net's k4 s2 1.75x /
2.0x the WMMA kernel at batch 64 / 1 and k2 s2 1.34x at batch 64 (h100-wgmma-3d-ab-s26.json).
"""

from __future__ import annotations

import functools
import math
import operator
import os
import sys
from dataclasses import dataclass

from tvm import tirx
from tvm.script import tirx as T
from tvm.target import Target

from tvm_deconv.plan import ConvTransposeSpec, make_plan, plan_axis

from .common import module_switch

BM = 128          # pixels per thread block: two warpgroups of m64
ROW_BYTES = 128   # a stage tile row: one K step (BK elements), the swizzle's span
CHUNK_BYTES = 16  # one cp.async; a core matrix row
CHUNKS = ROW_BYTES // CHUNK_BYTES  # 16-byte chunks a row (and rows a core matrix)
MMA_K_BYTES = 32  # the K of one wgmma: k16 float16, k8 tf32
THREADS = 256
WS_THREADS = 384  # warp-specialized: a copying warpgroup and two multiplying ones
TILED_COPY_SMEM = 40 << 10  # the tiled input copy's row tile, at most
ROW_GROUP = CHUNKS * ROW_BYTES  # bytes of 8 rows of a stage tile: the descriptors' SBO
SWIZZLE_128B = 3  # CUtensorMapSwizzle of the stage tiles' layout
L2_PROMOTION_128B = 2  # CUtensorMapL2promotion
TMA_LOAD_3D = "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes"


@dataclass(frozen=True)
class Operands:
    """How a dtype's GEMM operands sit in the stage tiles and which wgmma multiplies them.

    float16: the values, ``wgmma ... k16 .f32.f16.f16``.  float32: 3xTF32 -- each value ``x``
    split into tf32 parts ``hi = tf32(x)``, ``lo = tf32(x - hi)`` (:func:`tf32_round`), laid
    side by side along K so that one ``wgmma ... k8 .f32.tf32.tf32`` GEMM over 3 x K sums
    ``A_hi B_hi + A_hi B_lo + A_lo B_hi`` (A parts ``(hi, hi, lo)``, B parts ``(hi, lo,
    hi)``); the dropped ``A_lo B_lo`` is below 2^-22 of each product.  With each K step's sums
    promoted (:attr:`promote`) the zoo's outputs were within 1.3e-7 to 5.3e-7 of float64 on
    the H100, the FFMA kernels' 1.4e-7 to 1.6e-6 (h100-zoo-fp32-b{1,64}-s27.json)."""

    dtype: str
    parts: int  # the GEMM's K is parts x taps x channels
    mma_type: str  # wgmma's .atype / .btype

    @property
    def promote(self) -> bool:
        """Whether each K step's wgmma sums are added into a second set of float32 registers
        by FADD (float32): the tensor cores' accumulation truncates, so over a long K (3 x
        8192 for pose 2048->256 at batch 64) one accumulator drifted to 6.1e-5 relative error
        on the H100 (h100-wgmma-fp32-first-s27.json); promoted, 5.3e-7, the FFMA kernel's
        1.6e-6 (h100-zoo-fp32-b64-s27.json)."""
        return self.parts > 1

    @property
    def max_bn(self) -> int:
        """The widest tile whose accumulators fit a thread's 232 registers (two sets of BN/2
        where the steps' sums are promoted)."""
        return 128 if self.promote else 256

    @property
    def bytes(self) -> int:
        return 2 if self.dtype == "float16" else 4

    @property
    def bk(self) -> int:
        """Elements of a K step (one 128-byte tile row)."""
        return ROW_BYTES // self.bytes

    @property
    def core(self) -> int:
        """Elements of a 16-byte copy."""
        return CHUNK_BYTES // self.bytes

    @property
    def mma_k(self) -> int:
        """The K of one wgmma."""
        return MMA_K_BYTES // self.bytes


OPERANDS = {"float16": Operands("float16", 1, "f16"), "float32": Operands("float32", 3, "tf32")}
# float32 part p of the A (input) and B (weight) operands is the low part where these hold
A_LOW_PART, B_LOW_PART = 2, 1


def tf32_round(x):
    """float32 ``x`` (TIR) rounded to tf32's 10 mantissa bits, ties away from zero (the 13
    bits below are what wgmma ignores)."""
    bits = T.reinterpret("uint32", x)
    return T.reinterpret("float32", (bits + T.uint32(0x1000)) & T.uint32(0xFFFFE000))


def tf32_part(x, low):
    """``tf32(x)``, or where ``low`` (TIR bool) holds ``tf32(x - tf32(x))``."""
    high = tf32_round(x)
    return T.if_then_else(low, tf32_round(x - high), high)


@dataclass(frozen=True)
class WgmmaTile:
    """BN GEMM columns per thread block (output channels x the phases of a group; a multiple
    of 8 up to 256), the depth of the shared-memory ring, and the kernel's form."""

    bn: int = 128
    stages: int = 4
    # one warpgroup copying (mbarrier handshakes) while two multiply, or all warpgroups
    # copying, then multiplying, between CTA barriers (its best form 1.01-1.03x slower on the
    # four layers of h100-wgmma-ab-s25.json)
    warp_specialized: bool = True
    # the input copy through a shared-memory tile per padded row (where it fits), or with
    # lanes along x straight to global memory
    tiled_copy: bool = False
    # CTA-barrier loop: the next step's wgmmas issued while the previous step's run
    # (wait_group 1), or each step's waited for before the next (wait_group 0).  (The
    # warp-specialized loop releasing a stage one step late gave wrong results.)
    mma_in_flight: bool = False
    # the B tile (weight) by a TMA bulk tensor copy (one thread, completion on an mbarrier)
    # instead of 16-byte cp.async by every copying thread
    tma_b: bool = False


# On: faster than the WMMA kernel on every timed layer with MIN_BLOCKS or more thread blocks
# (h100-wgmma-zoo-s25.json); TVM_DECONV_CUDA_WGMMA=0 or wgmma_kernel(False) switch it off.
_ENABLED = os.environ.get("TVM_DECONV_CUDA_WGMMA", "1") == "1"
# float32 as 3xTF32 (:class:`Operands`); TVM_DECONV_CUDA_WGMMA_FP32=0 or wgmma_float32(False)
# keep float32 on the FFMA kernels
_FLOAT32 = os.environ.get("TVM_DECONV_CUDA_WGMMA_FP32", "1") == "1"
HOPPER_ARCHS = ("sm_90", "sm_90a")
# the fewest thread blocks for which the strategy takes the kernel (DCGAN 128->64 at batch 1,
# 8 of them, ran 0.95x the WMMA kernel's speed; HiFi-GAN at batch 1, 32, 2.3x:
# h100-wgmma-shipped-s25.json)
MIN_BLOCKS = 16
# the widest tile whose grid has at least this many thread blocks (most of the H100's 132
# SMs: pose 2048->256 at batch 64 fills 96 with BN 256, its fastest)
FULL_GRID = 96
# SMs of the H100 SXM and the H200: a grid of fewer blocks whose reduction is one K step has
# nothing to overlap (the 3-D U-Net's k2 s2 at batch 1, 128 blocks of one step, ran 0.58x the
# WMMA kernel's speed; at batch 64, 2048 blocks, 1.34x: h100-wgmma-3d-ab-s26.json)
SMS = 132
# float32 (3xTF32) against the FFMA kernels on the H100 (h100-zoo-fp32-b{1,64}-s27.json):
# grids of 32 thread blocks (pose 256->256 and HiFi-GAN at batch 1) ran 0.56-0.57x their
# split-K kernels' speed, grids of 84 and more (FCN-8s, U-Net at batch 1) 1.29-2.06x; tiles
# of 32 columns (the 3-D U-Net's k4 s2, whose A tile feeds the fewest MACs) 0.86x at batch
# 64 (1.04x at batch 1), of 64 columns 0.97-1.33x
MIN_BLOCKS_FP32 = 64
MIN_BN_FP32 = 64


def wgmma_kernel(enabled: bool):
    """Within the context, float16 calls on Hopper take (``True``) or skip the wgmma kernel."""
    return module_switch(sys.modules[__name__], "_ENABLED", enabled)


def wgmma_float32(enabled: bool):
    """Within the context, float32 calls on Hopper take (``True``) or skip the wgmma kernel's
    3xTF32 form (while the kernel is on)."""
    return module_switch(sys.modules[__name__], "_FLOAT32", enabled)


def wgmma_reason(spec: ConvTransposeSpec, target: Target | None = None) -> str | None:
    """``None`` where the wgmma kernel can run ``spec`` (on ``target``), else why not."""
    if target is not None and str(target.attrs.get("arch", "")) not in HOPPER_ARCHS:
        return f"target arch {target.attrs.get('arch')} is not Hopper (sm_90)"
    if spec.dtype not in OPERANDS or spec.out_dtype != spec.dtype:
        return (f"{spec.dtype} -> {spec.out_dtype} (float16 -> float16 or float32 -> float32 "
                "only)")
    if (spec.data_layout, spec.kernel_layout, spec.out_layout) not in (
            ("NCW", "IOW", "NCW"), ("NCHW", "IOHW", "NCHW"), ("NCDHW", "IODHW", "NCDHW")):
        return "NCW / NCHW / NCDHW data with IOW / IOHW / IODHW weights only"
    if spec.groups != 1:
        return f"groups={spec.groups}"
    if any(ax.dilation != 1 or ax.out_size % ax.stride for ax in make_plan(spec).axes):
        return "phases of unequal sizes (s does not divide the output) or dilation above 1"
    geo = Geometry(spec)
    if geo.pixels < BM:
        return f"batch x phase pixels ({geo.pixels}) < {BM}: no whole pixel tile"
    if geo.columns % 8:
        return f"phase group x Cout ({geo.columns}) % 8 != 0"
    return None


def supports_cuda_wgmma(spec: ConvTransposeSpec, target: Target) -> str | None:
    """The strategy predicate: :func:`wgmma_reason`, while the kernel is switched on, for
    grids of at least MIN_BLOCKS thread blocks (float32: MIN_BLOCKS_FP32, and tiles of
    MIN_BN_FP32 columns), and of at least SMS where the reduction is one K step."""
    if not _ENABLED:
        return "off (TVM_DECONV_CUDA_WGMMA=0 switched it off)"
    if spec.dtype == "float32" and not _FLOAT32:
        return "float32 off (TVM_DECONV_CUDA_WGMMA_FP32=0: float32 keeps the FFMA kernels)"
    reason = wgmma_reason(spec, target)
    if reason is not None:
        return reason
    tile = choose_tile(spec)
    blocks = grid_blocks(spec, tile)
    if blocks < MIN_BLOCKS:
        return f"{blocks} thread blocks (< {MIN_BLOCKS}: the WMMA kernel is as fast)"
    if spec.dtype == "float32" and blocks < MIN_BLOCKS_FP32:
        return (f"float32 in {blocks} thread blocks (< {MIN_BLOCKS_FP32}: the FFMA kernels' "
                "split-K is faster)")
    if spec.dtype == "float32" and tile.bn < MIN_BN_FP32:
        return (f"float32 tiles of {tile.bn} GEMM columns (< {MIN_BN_FP32}: the FFMA kernel "
                "is faster)")
    geo = Geometry(spec)
    if geo.reduce <= geo.ops.bk and blocks < SMS:
        return (f"one K step in {blocks} thread blocks (< {SMS}, one wave): nothing to "
                "pipeline, the WMMA kernel is faster")
    return None


def sm90a(target: Target) -> Target:
    """``target`` with arch ``sm_90a`` (wgmma is an sm_90a instruction)."""
    config = dict(target.export())
    config["arch"] = "sm_90a"
    config.pop("host", None)
    return Target(config, host=target.host)


def workspace_bytes(spec: ConvTransposeSpec) -> int:
    """The zero-padded channels-last copy of the input (float32: its 3 tf32 parts)."""
    geo = Geometry(spec)
    return spec.batch * math.prod(geo.padded_size) * geo.cin * geo.ops.bytes


def grid_blocks(spec: ConvTransposeSpec, tile: WgmmaTile) -> int:
    """Thread blocks of the GEMM kernel: pixel tiles x column tiles x phase groups."""
    geo = Geometry(spec)
    return -(-geo.pixels // BM) * (geo.columns // tile.bn) * geo.groups


def choose_tile(spec: ConvTransposeSpec) -> WgmmaTile:
    """The widest BN (a multiple of 8 dividing the columns, 64 to 256, or the widest below 64)
    whose grid has FULL_GRID thread blocks, else the narrowest: on the H100 the fastest BN of
    each timed layer but pose 256->256 (BN 64 1.02x faster than its 256) and U-Net at batch 1
    (BN 128 1.04x faster than its 64; h100-wgmma-zoo-s25.json)."""
    geo = Geometry(spec)
    widths = [b for b in range(8, geo.ops.max_bn + 1, 8) if geo.columns % b == 0]
    widths = [b for b in widths if b >= min(64, max(widths))]
    full = [b for b in widths if grid_blocks(spec, WgmmaTile(bn=b)) >= FULL_GRID]
    return WgmmaTile(bn=max(full) if full else min(widths))


def _product(values):
    """The product of ``values`` (ints or TIR), with no leading 1 for TIR."""
    return functools.reduce(operator.mul, values)


def _max(a, b):
    """The larger of ``a`` and ``b`` (ints, or TIR where either is)."""
    return max(a, b) if isinstance(a, int) and isinstance(b, int) else T.max(a, b)


def _over_phases(phases, r, value):
    """``value(phase)`` of phase ``r``: for TIR ``r`` a select over the phases."""
    if isinstance(r, int):
        return value(phases[r])
    out = value(phases[0])
    for i, ph in enumerate(phases[1:], start=1):
        out = T.if_then_else(r == i, value(ph), out)
    return out


def _digits(value, radices):
    """``value`` (int or TIR) as mixed-radix digits, the last fastest (the first unbounded)."""
    digits = []
    for i, radix in enumerate(radices):
        inner = value if i == len(radices) - 1 else value // _product(radices[i + 1:])
        digits.append(inner if i == 0 else inner % radix)
    return tuple(digits)


@dataclass(frozen=True)
class Geometry:
    """Where the GEMM of a plan with phases of one size reads and writes, per spatial axis
    (2-d: y, x; 3-d: z, y, x; 1-d: x after a y of one input row, one tap, stride 1): the
    phases ``r = (.., ry, rx)`` (tuples), taps ``j = (.. * th + jy) * tw + jx`` (``k = j *
    Cin' + ic``), pixels ``p = (n, .., qy, qx)`` and the zero-padded channels-last input
    ``[N, .., hp, wp, Cin']``.  The kernel, the pack and the tests index through it (ints or
    TIR expressions)."""

    spec: ConvTransposeSpec

    @property
    def axes(self):
        """The axis plans, outermost first (a 1-d spec's y: one input row, one tap, stride
        1)."""
        axes = make_plan(self.spec).axes
        return axes if len(axes) > 1 else (plan_axis(1, 1, 1),) + axes

    def spatial(self, *index) -> tuple:
        """The spatial index of a buffer of the spec from one index per axis (1-d: x
        alone)."""
        return index[len(index) - self.spec.ndim:]

    @property
    def strides(self) -> tuple[int, ...]:
        return tuple(ax.stride for ax in self.axes)

    @property
    def taps(self) -> tuple[int, ...]:
        """The most taps of any phase along each axis."""
        return tuple(ax.max_taps for ax in self.axes)

    def tap_count(self, axis: int, r):
        """Taps of phase ``r`` along ``axis``: one number on a phase-batched axis, else (TIR
        ``r``) a select over the phases."""
        ax = self.axes[axis]
        if ax.uniform_taps:
            return ax.max_taps
        return _over_phases(ax.phases, r, lambda ph: ph.num_taps)

    @property
    def pads(self) -> tuple[tuple[int, int], ...]:
        return tuple(ax.input_pads() for ax in self.axes)

    @property
    def padded_size(self) -> tuple[int, ...]:
        return tuple(ax.in_size + lo + hi for ax, (lo, hi) in zip(self.axes, self.pads))

    @property
    def phase_size(self) -> tuple[int, ...]:
        """Output positions per phase (q extent) along each axis."""
        return tuple(ax.out_size // ax.stride for ax in self.axes)

    @property
    def pixels(self) -> int:
        return self.spec.batch * math.prod(self.phase_size)

    @property
    def ops(self) -> Operands:
        return OPERANDS[self.spec.dtype]

    @property
    def channels(self) -> int:
        """Cin rounded up to a K step (BK): zeros past Cin in the padded input and the packed
        weight, so that a K step stays inside one tap (and one float32 part)."""
        bk = self.ops.bk
        return -(-self.spec.in_channels // bk) * bk

    @property
    def cin(self) -> int:
        """Input channels of the GEMM per tap (``Cin'``): the operand parts (float32: 3) x
        :attr:`channels`, part-major."""
        return self.ops.parts * self.channels

    def channel_part(self, c):
        """(operand part, input channel) of GEMM channel ``c`` (int or TIR)."""
        if self.ops.parts == 1:
            return 0, c
        return c // self.channels, c % self.channels

    @property
    def runs(self) -> tuple[int, ...]:
        """Phases per group along each axis (:attr:`AxisPlan.phase_run`): a group's phases
        read one input window, so one A tile serves them all."""
        return tuple(ax.phase_run for ax in self.axes)

    @property
    def group_size(self) -> int:
        return math.prod(self.runs)

    @property
    def groups(self) -> int:
        return math.prod(self.strides) // self.group_size

    @property
    def columns(self) -> int:
        """GEMM columns of a group: ``n = m * group_size + l``, its phases ``l`` fastest."""
        return self.group_size * self.spec.out_channels

    def group_phase(self, g, n) -> tuple:
        """The phase (one index per axis) of column ``n`` of group ``g`` (ints or TIR): group
        digits ``g_a`` (radices ``s_a / u_a``, ``u`` the :attr:`runs`) hold phases ``g_a * u_a
        + l_a``, column ``n`` the one whose digits ``l_a`` (radices ``u_a``) are ``n %
        group_size``."""
        runs = self.runs
        group = _digits(g, [s // u for s, u in zip(self.strides, runs)])
        lane = _digits(n % self.group_size, runs)
        return tuple(gd * u + ld for gd, u, ld in zip(group, runs, lane))

    @property
    def reduce(self) -> int:
        """The longest reduction of any phase (the packed weight's K)."""
        return math.prod(self.taps) * self.cin

    def phase_reduce(self, r):
        """Reduction length ``K = taps x Cin'`` of phase ``r``."""
        return _product([self.tap_count(a, ra) for a, ra in enumerate(r)]) * self.cin

    def pixel(self, p) -> tuple:
        """(n, .., qy, qx) of GEMM row ``p``."""
        return _digits(p, (self.spec.batch,) + self.phase_size)

    def padded_input(self, axis: int, r, q, j):
        """Index into the padded input along ``axis`` read by tap ``j`` of output ``q*s + r``."""
        return self.axes[axis].batched_input(r, q, j) + self.pads[axis][0]

    def row_offset(self, p, r):
        """Element offset in the flat padded channels-last input of GEMM row ``p``'s tap 0,
        channel 0 in phase ``r``."""
        n, *qs = self.pixel(p)
        offset = n
        for axis, (size, ra, qa) in enumerate(zip(self.padded_size, r, qs)):
            offset = offset * size + self.padded_input(axis, ra, qa, 0)
        return offset * self.cin

    def tap_digits(self, j, r) -> tuple:
        """Tap ``j`` of phase ``r`` as one tap index per axis (``j = (.. * th + jy) * tw +
        jx`` with the phase's tap counts, each at least 1 so that a phase with none divides
        by it)."""
        counts = [self.tap_count(a, ra) for a, ra in enumerate(r)]
        return _digits(j, [_max(t, 1) for t in counts])

    def k_offset(self, k, r):
        """What reduction index ``k = j * Cin' + ic`` (:meth:`tap_digits`) adds to
        :meth:`row_offset` (the same for every row: inputs shift by -1 per tap)."""
        cin = self.cin
        js = self.tap_digits(k // cin, r)
        offset = None
        for axis, (size, ra, ja) in enumerate(zip(self.padded_size, r, js)):
            here, first = self.padded_input(axis, ra, 0, ja), self.padded_input(axis, ra, 0, 0)
            offset = here - first if offset is None else offset * size + here - first
        return offset * cin + k % cin

    def kernel_index(self, axis: int, r, j):
        """Kernel index of tap ``j`` of phase ``r`` (a select over the phases for TIR ``r``)."""
        return _over_phases(self.axes[axis].phases, r,
                            lambda ph: ph.tap_start + j * ph.tap_step)


def wgmma_packed_shape(spec: ConvTransposeSpec) -> tuple[int, int, int]:
    """``[groups, group_size x Cout, taps x Cin']``: :func:`wgmma_pack`'s weight."""
    geo = Geometry(spec)
    return geo.groups, geo.columns, geo.reduce


def wgmma_pack(spec: ConvTransposeSpec) -> tirx.PrimFunc:
    """``(weight [Cin, Cout, k..], packed [groups, group_size x Cout, taps x Cin'])``: per
    phase group the K-major GEMM weight, column ``n = m * group_size + l`` the sub-kernel of
    channel ``m`` in phase :meth:`Geometry.group_phase` (``k = j * Cin' + ic``, tap ``j`` as
    :meth:`Geometry.tap_digits` splits it; zeros past Cin and past a phase's reduction where
    the phases differ)."""
    geo = Geometry(spec)
    cin, size, dtype = geo.cin, geo.group_size, spec.dtype
    shape = wgmma_packed_shape(spec)
    wshape = tuple(spec.weight_shape)

    def packed_value(weight, g, n, k):
        # packed[g, n, k]: the weight element (float32: its tf32 part of the B operand), zero
        # past the phase's reduction and past Cin
        part, channel = geo.channel_part(k % cin)
        r = geo.group_phase(g, n)
        js = geo.tap_digits(k // cin, r)
        w = weight[(channel, n // size) + geo.spatial(
            *(geo.kernel_index(a, ra, ja) for a, (ra, ja) in enumerate(zip(r, js))))]
        if geo.ops.parts > 1:
            w = tf32_part(w, part == B_LOW_PART)
        return T.if_then_else(tirx.all(k < geo.phase_reduce(r), channel < spec.in_channels),
                              w, tirx.const(0, dtype))

    @T.prim_func(private=True, s_tir=True)
    def pack(weight: T.Buffer(wshape, dtype), packed: T.Buffer(shape, dtype)):
        T.func_attr({"tirx.noalias": True})
        for g, n, k in T.grid(*shape):
            with T.sblock("pack"):
                vg, vn, vk = T.axis.remap("SSS", [g, n, k])
                packed[vg, vn, vk] = packed_value(weight, vg, vn, vk)
    return pack


def copy_row_chunk(cidx):
    """(row, 16-byte chunk) of a stage tile (BM or BN rows x BK) that its 16-byte copy
    ``cidx`` (int or TIR) fills: 8 consecutive copies fill one row, so a warp reads 4 whole
    128-byte rows of global memory."""
    return cidx // CHUNKS, cidx % CHUNKS


def tile_offset(cidx, ops: Operands):
    """Element offset in a stage tile of its 16-byte copy ``cidx`` (:func:`copy_row_chunk`):
    128-byte rows, each row's chunk c at ``c ^ (row % 8)`` (the 128-byte swizzle of the wgmma
    descriptors and TMA), so the 8 copies of a quarter warp hit distinct banks."""
    row, chunk = copy_row_chunk(cidx)
    xor = (chunk ^ (row % CHUNKS) if isinstance(cidx, int)
           else tirx.bitwise_xor(chunk, row % CHUNKS))
    return row * ops.bk + xor * ops.core


def tile_coords(tile, tiles_x: int, groups: int):
    """(pixel tile, column tile, phase group) of the linear tile index ``tile`` (int or TIR):
    phase groups fastest, so that the thread blocks writing the interleaved phases of one
    output region run together and fill its 32-byte sectors in L2 (U-Net at batch 64: 1.7x
    faster than phases slowest, h100-wgmma-order-ab-s26.json), then pixel tiles, then
    column tiles."""
    rest = tile // groups
    return rest % tiles_x, rest // tiles_x, tile % groups


def _wgmma(ops: Operands, bn, acc, desc_a, desc_b):
    shape = getattr(T.ptx.wgmma.mma_async.sync.aligned, f"m64n{bn}k{ops.mma_k}").f32
    op = getattr(getattr(shape, ops.mma_type), ops.mma_type)
    # float16 tiles take the transpose immediates (0: both K-major), tf32 has none
    trans = (0, 0) if ops.mma_type == "f16" else ()
    return op(*[acc[i] for i in range(bn // 2)], desc_a, desc_b, T.ptx.pred(1), 1, 1, *trans)


def wgmma_conv_transpose(spec: ConvTransposeSpec, tile: WgmmaTile | None = None
                         ) -> tirx.PrimFunc:
    """``(data, packed weight, out)``, NCW, NCHW or NCDHW, float16 (float32 accumulators) or
    float32 (3xTF32, :class:`Operands`): the input copy and the GEMM kernel of ``tile``
    (default :func:`choose_tile`)."""
    reason = wgmma_reason(spec)
    if reason:
        raise ValueError(reason)
    tile = tile or choose_tile(spec)
    geo = Geometry(spec)
    if geo.columns % tile.bn or tile.bn % 8:
        raise ValueError(f"wgmma: BN {tile.bn} must divide the {geo.columns} GEMM columns "
                         f"({geo.group_size} phases x Cout {spec.out_channels})")
    if tile.bn > geo.ops.max_bn:
        raise ValueError(f"wgmma: BN {tile.bn} > {geo.ops.max_bn}, the widest whose "
                         f"{spec.dtype} accumulators fit the registers")
    bn, stages = tile.bn, tile.stages
    strides, padded = geo.strides, geo.padded_size
    lows = [lo for lo, _ in geo.pads]
    wp = padded[-1]
    data_shape, out_shape = tuple(spec.data_shape), tuple(spec.out_shape)
    packed_shape = wgmma_packed_shape(spec)
    n_, cin, real_cin = spec.batch, geo.cin, spec.in_channels
    ops, dtype = geo.ops, spec.dtype
    bk, core, zero = ops.bk, ops.core, tirx.const(0, spec.dtype)
    in_sizes = [ax.in_size for ax in geo.axes]
    win, px0 = in_sizes[-1], lows[-1]
    columns, groups, group_size = geo.columns, geo.groups, geo.group_size
    kred, pixels = geo.reduce, geo.pixels

    def live_channel(ch, inside):
        # ``inside`` (the padded position is in the input), for an input channel below Cin
        return inside if real_cin == geo.channels else tirx.all(inside, ch < real_cin)

    def real_channel(ch):
        # an input channel to read for input channel ch (any: its value is not used)
        return ch if real_cin == geo.channels else T.min(ch, real_cin - 1)

    def input_value(data, n, c, positions):
        # x_cl[n, positions.., c] of kernel 1: the input (float32: its tf32 part of the A
        # operand), zero in the padding and past Cin
        part, channel = geo.channel_part(c)
        x = data[(n, real_channel(channel)) + input_index(positions)]
        if ops.parts > 1:
            x = tf32_part(x, part == A_LOW_PART)
        return T.if_then_else(live_channel(channel, in_input(positions)), x, zero)

    def out_index(pixel, col, r, e):
        # out[n, channel, q * s + r (+ e along x)] of GEMM row ``pixel`` (n, q..), column col
        n, *qs = pixel
        positions = [q * s + ra for q, s, ra in zip(qs, strides, r)]
        positions[-1] = positions[-1] + e
        return (n, col // group_size) + geo.spatial(*positions)

    def last_row(p):
        # GEMM row p, or the last pixel past it
        return T.min(p, pixels - 1) if ragged_rows else p

    def ksteps(r):
        # K steps of phase r: a number where the phases are alike, else per tile
        return geo.phase_reduce(r) // bk

    def tail_start(r):
        # the CTA-barrier loop's first step without copies
        return _max(lead, ksteps(r))
    cin_chunks = cin // core
    stage_elems = (BM + bn) * bk
    warp_specialized = tile.warp_specialized
    threads = WS_THREADS if warp_specialized else THREADS
    copiers = 128 if warp_specialized else THREADS  # threads that copy the stage tiles
    a_copies = BM * bk // core // copiers  # 16-byte copies of A per copying thread per stage
    b_copies, b_rem = divmod(bn * bk // core, copiers)  # rem: the first threads copy one more
    copy_total = n_ * math.prod(padded) * cin_chunks

    def copy_coords(idx):
        # (n, padded position per axis, 16-byte channel chunk) of kernel 1's copy idx: x
        # fastest, then the chunks, then the outer axes
        *outer, chunk, x = _digits(idx, (n_,) + padded[:-1] + (cin_chunks, wp))
        return tuple(outer) + (x, chunk)

    def row_coords(cb):
        # (n, padded position per outer axis, first channel) of the tiled copy's block cb
        *outer, chunk = _digits(cb, (n_,) + padded[:-1] + (cin // bk,))
        return tuple(outer) + (chunk * bk,)

    def in_input(positions):
        # the padded positions (one per axis, outermost first) lie inside the input
        return tirx.all(*(term for a, q in enumerate(positions)
                          for term in (lows[a] <= q, q < lows[a] + in_sizes[a])))

    def input_index(positions):
        # the input's spatial index of padded positions, clamped into it
        return geo.spatial(*(T.max(T.min(q - lows[a], in_sizes[a] - 1), 0)
                             for a, q in enumerate(positions)))
    copy_blocks = (copy_total + THREADS - 1) // THREADS
    # Stage tiles: 128-byte rows (a K step of bk), 8-row groups of ROW_GROUP bytes (the
    # descriptors' stride byte offset), 128-byte swizzle (descriptor mode 3); a wgmma's K step
    # starts 32 bytes further (the leading byte offset is unused with this swizzle: 16)
    lbo, mode = 16, 3

    # (float16 only, every channel real: the tile holds one channel row of bk)
    tiled_copy = (tile.tiled_copy and wp * (bk + 2) * ops.bytes <= TILED_COPY_SMEM
                  and real_cin == cin)
    in_flight = tile.mma_in_flight
    tma_b = tile.tma_b
    if in_flight and warp_specialized:
        raise ValueError("wgmma: mma_in_flight is a form of the CTA-barrier loop")
    promote = ops.promote
    if in_flight and promote:
        raise ValueError("wgmma: float32 adds each step's sums once its wgmmas are done, so "
                         "no step stays in flight (mma_in_flight)")
    tiles_x = -(-pixels // BM)
    # the last pixel tile runs past the pixels: its A rows repeat the last pixel, its stores
    # stop there
    ragged_rows = pixels % BM != 0
    # a column pair (2c, 2c + 1) of the accumulator fragment is phases (rx, rx + 1) of one
    # channel and row where the groups run along x by twos: one 4-byte store (x even, the
    # output rows of even length)
    pair = 2 if geo.runs[-1] % 2 == 0 else 1
    # CTA-barrier loop: copies run ``lead`` steps ahead of the MMAs, so that the stage a step
    # fills was last read by wgmmas waited for before the barrier (in flight: one step more)
    lead = stages - 1 - int(in_flight)
    if lead < 1:
        raise ValueError(f"wgmma: {stages} stages leave no step to copy ahead")

    @T.macro
    def copy_input_lanes(data, x_cl):
        # kernel 1: zero-padded channels-last copy; lanes along x (coalesced reads)
        with T.launch_thread("blockIdx.x", copy_blocks) as cb:
            ct = T.launch_thread("threadIdx.x", THREADS)
            vec = T.alloc_buffer((core,), dtype, scope="local")
            idx = cb * THREADS + ct
            if idx < copy_total:
                pos = copy_coords(idx)  # (n, positions.., chunk)
                for e in T.unroll(core):
                    vec[e] = input_value(data, pos[0], pos[-1] * core + e, pos[1:-1])
                for e in T.vectorized(core):
                    x_cl[pos[:-1] + (pos[-1] * core + e,)] = vec[e]

    @T.macro
    def copy_input_tiled(data, x_cl):
        # kernel 1, through shared memory: a block copies one padded row of 64 channels,
        # reading channel rows (lanes along x) and writing 128 contiguous bytes per position
        with T.launch_thread("blockIdx.x", n_ * math.prod(padded[:-1]) * (cin // bk)) as cb:
            ct = T.launch_thread("threadIdx.x", THREADS)
            # rows of bk + 2: a row is 33 words, so neither phase's lanes share a bank
            tile_s = T.alloc_buffer((wp * (bk + 2),), dtype, scope="shared", align=16)
            vec = T.alloc_buffer((core,), dtype, scope="local")
            row = row_coords(cb)  # (n, outer positions.., first channel)
            if in_input(row[1:-1]):
                for i in T.unroll((bk * win + THREADS - 1) // THREADS):
                    if ct + THREADS * i < bk * win:
                        tile_s[((ct + THREADS * i) % win + px0) * (bk + 2)
                               + (ct + THREADS * i) // win] = data[
                            (row[0], row[-1] + (ct + THREADS * i) // win)
                            + input_index(row[1:-1] + ((ct + THREADS * i) % win + px0,))]
            T.tvm_storage_sync("shared")
            for i in T.unroll((wp * core + THREADS - 1) // THREADS):
                if ct + THREADS * i < wp * core:
                    for e in T.unroll(core):
                        vec[e] = T.if_then_else(
                            in_input(row[1:-1] + ((ct + THREADS * i) // core,)),
                            tile_s[(ct + THREADS * i) // core * (bk + 2)
                                   + (ct + THREADS * i) % core * core + e],
                            zero)
                    for e in T.vectorized(core):
                        x_cl[row[:-1] + ((ct + THREADS * i) // core,
                                         row[-1] + (ct + THREADS * i) % core * core + e)] = vec[e]

    @T.macro
    def copy_input(data, x_cl):
        if tiled_copy:
            copy_input_tiled(data, x_cl)
        else:
            copy_input_lanes(data, x_cl)

    @T.macro
    def a_bases(a_base, bx, r, tid, nthreads, copies):
        # where each of this thread's A copies starts in the padded input (tap 0, the
        # channel chunk of its copy); a K step adds Geometry.k_offset
        for i in T.unroll(copies):
            a_base[i] = (geo.row_offset(last_row(bx * BM + copy_row_chunk(tid + nthreads * i)[0]),
                                        r)
                         + copy_row_chunk(tid + nthreads * i)[1] * core)

    @T.macro
    def copy_a(smem, x_flat, a_base, stage, kt, r, tid, nthreads, copies):
        # the A tile of step kt (BM pixels x bk channels of one tap)
        for i in T.unroll(copies):
            T.ptx.cp.async_.cg.shared.global_(
                T.address_of(smem[stage * stage_elems + tile_offset(tid + nthreads * i, ops)]),
                T.address_of(x_flat[a_base[i] + geo.k_offset(kt * bk, r)]), 16)

    @T.macro
    def copy_b(smem, weight, w_map, bar, stage, kt, bz, by, tid, nthreads, copies, rem):
        # the B tile of step kt (BN columns of group bz's K-major weight): by TMA (thread 0,
        # completion on ``bar``), or by ``nthreads`` copying threads, ``copies`` 16-byte
        # copies each, one more for the first ``rem``
        if tma_b:
            if tid == 0:
                T.ptx.mbarrier.arrive.expect_tx.shared__cta.b64(T.address_of(bar),
                                                                 bn * bk * ops.bytes)
                T.ptx[TMA_LOAD_3D](
                    T.address_of(smem[stage * stage_elems + BM * bk]), T.address_of(w_map),
                    T.cast(kt * bk, "int32"), T.cast(by * bn, "int32"), T.cast(bz, "int32"),
                    T.address_of(bar))
        else:
            for i in T.unroll(copies + int(rem > 0)):
                if i < copies or tid < rem:
                    T.ptx.cp.async_.cg.shared.global_(
                        T.address_of(smem[stage * stage_elems + BM * bk
                                          + tile_offset(tid + nthreads * i, ops)]),
                        T.address_of(weight[bz, by * bn + copy_row_chunk(tid + nthreads * i)[0],
                                            kt * bk + copy_row_chunk(tid + nthreads * i)[1]
                                            * core]),
                        16)

    @T.macro
    def mma_step(smem, stage, wg, acc, desc_a, desc_b):
        # 4 wgmmas (k16 float16, k8 tf32) on one stage: this warpgroup's 64 rows of A, all
        # BN rows of B
        T.ptx.wgmma.fence.sync.aligned()
        for kk in T.unroll(bk // ops.mma_k):
            T.cuda.wgmma.encode_matrix_descriptor(
                desc_a.data,
                T.address_of(smem[stage * stage_elems + wg * 64 * bk + kk * ops.mma_k]),
                lbo // 16, ROW_GROUP // 16, mode)
            T.cuda.wgmma.encode_matrix_descriptor(
                desc_b.data, T.address_of(smem[stage * stage_elems + BM * bk + kk * ops.mma_k]),
                lbo // 16, ROW_GROUP // 16, mode)
            _wgmma(ops, bn, acc, desc_a[0], desc_b[0])
        T.ptx.wgmma.commit_group.sync.aligned()

    @T.macro
    def clear(acc, sums):
        for i in T.unroll(bn // 2):
            acc[i] = T.float32(0)
        if promote:
            for i in T.unroll(bn // 2):
                sums[i] = T.float32(0)

    @T.macro
    def promote_step(acc, sums):
        # float32: a step's wgmma sums added into ``sums`` (FADD rounds to nearest), acc
        # cleared for the next step (:attr:`Operands.promote`)
        if promote:
            for i in T.unroll(bn // 2):
                sums[i] = sums[i] + acc[i]
                acc[i] = T.float32(0)

    @T.macro
    def sync_step(smem, x_flat, weight, w_map, bars, a_base, acc, sums, desc_a, desc_b, kt, bz,
                  by, r, tx, wg, copies: bool):
        # CTA-barrier loop: the MMAs of step kt - lead, once its copies landed and are visible
        # to the async proxy, and (``copies``: kt < K steps, a static branch, so that no branch
        # separates a wgmma from its wait) the copies of step kt
        T.ptx.cp.async_.wait_group(lead - 1)
        T.ptx.fence.proxy.async_.shared__cta()
        # after it every warpgroup has waited for the wgmmas of step
        # kt - lead - 1 - in_flight = kt - stages, the last to read the stage that step kt fills
        T.tvm_storage_sync("shared")
        if copies:
            copy_a(smem, x_flat, a_base, kt % stages, kt, r, tx, copiers, a_copies)
            copy_b(smem, weight, w_map, bars[kt % stages], kt % stages, kt, bz, by, tx, copiers,
                   b_copies, b_rem)
        T.ptx.cp.async_.commit_group()
        if tma_b:
            T.cuda.mbarrier_wait(T.address_of(bars[(kt - lead) % stages]),
                                 (kt - lead) // stages % 2)
        mma_step(smem, (kt - lead) % stages, wg, acc, desc_a, desc_b)
        T.ptx.wgmma.wait_group.sync.aligned(int(in_flight))
        promote_step(acc, sums)

    @T.macro
    def store(out, acc, bx, by, bz, wg, lane):
        # the accumulator fragment of wgmma m64nN: warp w of the warpgroup holds rows
        # 16w + lane/4 (+8), columns 8i' + 2(lane%4) (+1); column n of group bz is channel
        # n / group_size in phase group_phase(bz, n)
        # (acc's index is written out, not bound to a name: a bound index becomes a local
        # variable, and CUDA codegen then reused the first store's half2 for every store of
        # an unrolled run with no loop before it -- one K step)
        for i in T.unroll(bn // 2 // pair):
            row = wg * 64 + lane // 32 * 16 + lane % 32 // 4 + i * pair // 2 % 2 * 8
            col = by * bn + i * pair // 4 * 8 + lane % 4 * 2 + i * pair % 2
            if not ragged_rows or bx * BM + row < pixels:
                for e in T.vectorized(pair):
                    out[out_index(geo.pixel(bx * BM + row), col, geo.group_phase(bz, col), e)] = (
                        T.cast(acc[i * pair + e], dtype))

    @T.macro
    def ws_produce(smem, x_flat, weight, w_map, bars, a_base, bx, by, bz, r, tx):
        # warp-specialized loop, copying warpgroup: the stages of tile (bx, by, group bz,
        # its input window that of phase r)
        a_bases(a_base, bx, r, tx, copiers, a_copies)
        for kt in range(ksteps(r)):
            stage = kt % stages
            T.cuda.mbarrier_wait(T.address_of(bars[stages + stage]), (kt // stages + 1) % 2)
            copy_a(smem, x_flat, a_base, stage, kt, r, tx, copiers, a_copies)
            copy_b(smem, weight, w_map, bars[stage], stage, kt, bz, by, tx, copiers,
                   b_copies, b_rem)
            T.ptx.cp.async_.mbarrier.arrive.noinc.shared__cta.b64(T.address_of(bars[stage]))

    @T.macro
    def ws_consume(smem, out, bars, acc, sums, desc_a, desc_b, bx, by, bz, wg, tx):
        # warp-specialized loop, multiplying warpgroups: tile (bx, by, group bz)
        clear(acc, sums)
        for kt in range(ksteps(geo.group_phase(bz, 0))):
            stage = kt % stages
            T.cuda.mbarrier_wait(T.address_of(bars[stage]), kt // stages % 2)
            T.ptx.fence.proxy.async_.shared__cta()
            mma_step(smem, stage, wg, acc, desc_a, desc_b)
            # its wgmmas done, the stage goes back to the copying warpgroup
            T.ptx.wgmma.wait_group.sync.aligned(0)
            T.ptx.mbarrier.arrive.shared__cta.b64(T.address_of(bars[stages + stage]))
            promote_step(acc, sums)
        store(out, sums, bx, by, bz, wg, tx % 128)

    @T.macro
    def sync_loop(smem, x_flat, weight, out, w_map, acc, sums, bx, by, bz, r, tx):
        # CTA-barrier loop: all warpgroups copy, then multiply
        desc_a = T.alloc_buffer((1,), "uint64", scope="local")
        desc_b = T.alloc_buffer((1,), "uint64", scope="local")
        a_base = T.alloc_buffer((a_copies,), "int32", scope="local")
        wg = tx // 128
        a_bases(a_base, bx, r, tx, copiers, a_copies)
        clear(acc, sums)
        # tma_b: a stage's B tile landed
        bars = T.alloc_buffer((stages,), "uint64", scope="shared", align=8)
        if tma_b:
            if tx == 0:
                for s in T.unroll(stages):
                    T.ptx.mbarrier.init.shared__cta.b64(T.address_of(bars[s]), 1)
                T.ptx.fence.mbarrier_init.release.cluster()
            T.tvm_storage_sync("shared")
        for kt in range(lead):
            # the first ``lead`` steps' copies (one commit group a step)
            if kt < ksteps(r):
                copy_a(smem, x_flat, a_base, kt, kt, r, tx, copiers, a_copies)
                copy_b(smem, weight, w_map, bars[kt], kt, kt, bz, by, tx, copiers, b_copies,
                       b_rem)
            T.ptx.cp.async_.commit_group()
        for kt in range(lead, ksteps(r)):
            sync_step(smem, x_flat, weight, w_map, bars, a_base, acc, sums, desc_a, desc_b, kt,
                      bz, by, r, tx, wg, True)
        for kt in range(tail_start(r), ksteps(r) + lead):
            sync_step(smem, x_flat, weight, w_map, bars, a_base, acc, sums, desc_a, desc_b, kt,
                      bz, by, r, tx, wg, False)
        T.ptx.wgmma.wait_group.sync.aligned(0)
        store(out, sums, bx, by, bz, wg, tx % 128)

    @T.prim_func(private=True)
    def conv(data: T.Buffer(data_shape, dtype),
             weight: T.Buffer(packed_shape, dtype),
             out: T.Buffer(out_shape, dtype)):
        T.func_attr({"tirx.noalias": True})
        x_cl = T.alloc_buffer((n_,) + padded + (cin,), dtype)
        x_flat = T.decl_buffer((n_ * math.prod(padded) * cin,), dtype, data=x_cl.data)
        copy_input(data, x_cl)
        # host: the weight's tensor map (encoded for tma_b): boxes of bk x BN x 1, innermost
        # first
        w_map = T.Bind(T.tvm_stack_alloca("tensormap", 1))
        if tma_b:
            T.evaluate(T.tensormap_encode_tiled(
                w_map, weight.data, kred, columns, groups, kred * ops.bytes,
                columns * kred * ops.bytes, bk, bn, 1, 1, 1, 1, descriptor_dtype=dtype, rank=3,
                swizzle=SWIZZLE_128B, l2_promotion=L2_PROMOTION_128B))
        # kernel 2: the GEMMs
        with T.launch_thread("blockIdx.x", grid_blocks(spec, tile)) as block:
            tx = T.launch_thread("threadIdx.x", threads)
            smem = T.alloc_buffer((stages * stage_elems,), dtype, scope="shared.dyn",
                                  align=1024)
            bx, by, bz = tile_coords(block, tiles_x, groups)
            # the group's input window: that of its first phase
            r = geo.group_phase(bz, 0)
            if warp_specialized:
                # warpgroup 0 copies (cp.async, completion on full[s]), warpgroups 1-2
                # multiply (wgmma, then release the stage on empty[s])
                bars = T.alloc_buffer((2 * stages,), "uint64", scope="shared", align=8)
                if tx == 0:
                    for s in T.unroll(stages):
                        # the copying threads' cp.async arrivals (and thread 0's TMA one)
                        T.ptx.mbarrier.init.shared__cta.b64(T.address_of(bars[s]),
                                                            128 + int(tma_b))
                        T.ptx.mbarrier.init.shared__cta.b64(T.address_of(bars[stages + s]), 256)
                    T.ptx.fence.mbarrier_init.release.cluster()
                T.tvm_storage_sync("shared")
                if tx < 128:
                    # registers to the multiplying warpgroups (168 a thread at launch)
                    T.ptx.setmaxnreg.dec.sync.aligned.u32(40)
                    a_base = T.alloc_buffer((a_copies,), "int32", scope="local")
                    ws_produce(smem, x_flat, weight, w_map, bars, a_base, bx, by, bz, r, tx)
                    T.ptx.cp.async_.wait_all()
                else:
                    T.ptx.setmaxnreg.inc.sync.aligned.u32(232)
                    wg = tx // 128 - 1
                    acc = T.alloc_buffer((bn // 2,), "float32", scope="local")
                    desc_a = T.alloc_buffer((1,), "uint64", scope="local")
                    desc_b = T.alloc_buffer((1,), "uint64", scope="local")
                    if promote:
                        sums = T.alloc_buffer((bn // 2,), "float32", scope="local")
                        ws_consume(smem, out, bars, acc, sums, desc_a, desc_b, bx, by, bz, wg,
                                   tx)
                    else:
                        ws_consume(smem, out, bars, acc, acc, desc_a, desc_b, bx, by, bz, wg,
                                   tx)
            else:
                # all warpgroups copy, then multiply, between CTA barriers
                acc = T.alloc_buffer((bn // 2,), "float32", scope="local")
                if promote:
                    sums = T.alloc_buffer((bn // 2,), "float32", scope="local")
                    sync_loop(smem, x_flat, weight, out, w_map, acc, sums, bx, by, bz, r, tx)
                else:
                    sync_loop(smem, x_flat, weight, out, w_map, acc, acc, bx, by, bz, r, tx)

    return conv
