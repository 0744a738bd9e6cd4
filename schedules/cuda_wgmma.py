"""Hopper (sm_90a) warpgroup tensor-core kernel (``wgmma.mma_async``) for float16 calls.

Same implicit GEMM as :mod:`.cuda_tensorcore` (per phase ``r``: ``acc[p, m] += X[p, k] *
W[m, k]``, pixels ``p = (n, q..)``, channels ``m``, ``k = (j.., ic)``; :class:`Geometry` holds
the index arithmetic), but a hand-laid kernel instead of a scheduled compute: ``wgmma`` reads
both operands straight from shared memory through descriptors and runs asynchronously, which
TIR's schedule primitives and WMMA intrinsics cannot express.  TVM 0.27's table-driven PTX
(``T.ptx.wgmma``, ``T.ptx.cp.async``, ``T.ptx.mbarrier``) and
``T.cuda.wgmma.encode_matrix_descriptor`` write it.

Kernel 1 copies the input zero-padded and channels last (``[N, H+pads, W+pads, Cin]``), so
every operand row of a K step is 16-byte ``cp.async`` copies with no guards.  Kernel 2: a
thread block owns BM = 128 pixels of one phase x BN output channels; per K step of BK = 64
(inside one tap: Cin % 64 == 0) the A (pixels) and B (channels, :func:`wgmma_pack`'s
K-major weight) tiles go into a ``stages``-deep ring of shared tiles
(:func:`tile_offset`), then each of two warpgroups issues BK/16 ``wgmma.m64n{BN}k16`` on its
64 rows.  Two K loops (:class:`WgmmaTile`): all warpgroups copy, then multiply, between CTA
barriers; or one warpgroup copies and signals each stage through an mbarrier while two
multiply and release it.  The float32 accumulators (BN/2 registers a thread) are cast and
written to ``out[n, m, q*s + r]``.

Measured (benchmarks/cuda_wgmma_ab.py): correct on the zoo, but 0.57-0.90x the WMMA
kernel's speed on the H200 and 0.49-0.75x on the H100, so ``cuda.wgmma`` is off unless
switched on (``TVM_DECONV_CUDA_WGMMA=1``, :func:`wgmma_kernel`).
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass

from tvm import tirx
from tvm.script import tirx as T
from tvm.target import Target

from tvm_deconv.plan import ConvTransposeSpec, make_plan, plan_axis

from .common import module_switch

BM = 128          # pixels per thread block: two warpgroups of m64
BK = 64           # K per stage: 4 wgmma k16 steps
CORE = 8          # core matrix: 8 rows x 8 float16 (16 bytes)
THREADS = 256
WS_THREADS = 384  # warp-specialized: a copying warpgroup and two multiplying ones
TILED_COPY_SMEM = 40 << 10  # the tiled input copy's row tile, at most
ROW_GROUP = CORE * BK * 2  # bytes of 8 rows of a stage tile (both layouts): the SBO


@dataclass(frozen=True)
class WgmmaTile:
    """BN output channels per thread block (a multiple of 8 up to 256), the depth of the
    shared-memory ring, and the kernel's form."""

    bn: int = 128
    stages: int = 4
    # the stage tiles' layout: 128-byte swizzle (each row's 16-byte chunk c stored at
    # c ^ (row % 8)) or none (core matrices of 128 contiguous bytes).  The swizzle is built
    # and assembled but not yet run on a GPU.
    swizzle: bool = False
    # one warpgroup copying (mbarrier handshakes) while two multiply, or all warpgroups
    # copying, then multiplying, between CTA barriers (1.11x faster on pose 2048->256 on the
    # H100: h100-wgmma-ws-ab-s24.json)
    warp_specialized: bool = False
    # the input copy through a shared-memory tile per padded row (where it fits), or with
    # lanes along x straight to global memory
    tiled_copy: bool = False


# Off until timed on a GPU (TVM_DECONV_CUDA_WGMMA=1 or wgmma_kernel(True) switch it on).
_ENABLED = os.environ.get("TVM_DECONV_CUDA_WGMMA", "0") == "1"
HOPPER_ARCHS = ("sm_90", "sm_90a")


def wgmma_kernel(enabled: bool):
    """Within the context, float16 calls on Hopper take (``True``) or skip the wgmma kernel."""
    return module_switch(sys.modules[__name__], "_ENABLED", enabled)


def wgmma_reason(spec: ConvTransposeSpec, target: Target | None = None) -> str | None:
    """``None`` where the wgmma kernel can run ``spec`` (on ``target``), else why not."""
    if target is not None and str(target.attrs.get("arch", "")) not in HOPPER_ARCHS:
        return f"target arch {target.attrs.get('arch')} is not Hopper (sm_90)"
    if spec.dtype != "float16" or spec.out_dtype != "float16":
        return f"{spec.dtype} -> {spec.out_dtype} (float16 -> float16 only)"
    if (spec.data_layout, spec.kernel_layout, spec.out_layout) not in (
            ("NCHW", "IOHW", "NCHW"), ("NCW", "IOW", "NCW")):
        return "2-d NCHW / IOHW or 1-d NCW / IOW only"
    if spec.groups != 1:
        return f"groups={spec.groups}"
    plan = make_plan(spec)
    if not plan.phase_batched:
        return "phases differ (k % s != 0 or s does not divide the output)"
    if spec.in_channels % BK:
        return f"Cin % {BK} != 0 (a K step of {BK} stays inside one tap)"
    pixels = Geometry(spec).pixels
    if pixels % BM:
        return f"batch x phase pixels ({pixels}) % {BM} != 0"
    if spec.out_channels % 8:
        return "Cout % 8 != 0"
    return None


def supports_cuda_wgmma(spec: ConvTransposeSpec, target: Target) -> str | None:
    """The strategy predicate: :func:`wgmma_reason`, while the kernel is switched on."""
    if not _ENABLED:
        return "off (TVM_DECONV_CUDA_WGMMA=1 switches it on)"
    return wgmma_reason(spec, target)


def sm90a(target: Target) -> Target:
    """``target`` with arch ``sm_90a`` (wgmma is an sm_90a instruction)."""
    config = dict(target.export())
    config["arch"] = "sm_90a"
    config.pop("host", None)
    return Target(config, host=target.host)


def workspace_bytes(spec: ConvTransposeSpec) -> int:
    """The zero-padded channels-last copy of the input."""
    return spec.batch * math.prod(Geometry(spec).padded_size) * spec.in_channels * 2


def choose_tile(spec: ConvTransposeSpec) -> WgmmaTile:
    """The widest BN (a multiple of 8, at most 256) dividing Cout: the timed zoo layers ran
    fastest with it, except DCGAN 512->256 (4x4 inputs, few thread blocks: BN 64 on the H200,
    128 on the H100)."""
    return WgmmaTile(bn=max(b for b in range(8, 257, 8) if spec.out_channels % b == 0))


@dataclass(frozen=True)
class Geometry:
    """Where the GEMM of a phase-batched 2-d plan reads and writes: the phases ``r = ry * sx
    + rx``, taps ``j = jy * tw + jx`` (``k = j * Cin + ic``), pixels ``p = (n, qy, qx)`` and
    the zero-padded channels-last input ``[N, hp, wp, Cin]``.  The kernel, the pack and the
    tests index through it (ints or TIR expressions)."""

    spec: ConvTransposeSpec

    @property
    def axes(self):
        """The y and x axis plans (a 1-d spec's y: one input row, one tap, stride 1)."""
        axes = make_plan(self.spec).axes
        return axes if len(axes) == 2 else (plan_axis(1, 1, 1),) + axes

    def spatial(self, y, x) -> tuple:
        """The spatial index (y, x) of a buffer of the spec (1-d: x alone)."""
        return (y, x) if self.spec.ndim == 2 else (x,)

    @property
    def strides(self) -> tuple[int, int]:
        return tuple(ax.stride for ax in self.axes)

    @property
    def taps(self) -> tuple[int, int]:
        return tuple(ax.max_taps for ax in self.axes)

    @property
    def pads(self) -> tuple[tuple[int, int], tuple[int, int]]:
        return tuple(ax.input_pads() for ax in self.axes)

    @property
    def padded_size(self) -> tuple[int, int]:
        return tuple(ax.in_size + lo + hi for ax, (lo, hi) in zip(self.axes, self.pads))

    @property
    def phase_size(self) -> tuple[int, int]:
        """Output positions per phase (q extent) along y and x."""
        return tuple(ax.out_size // ax.stride for ax in self.axes)

    @property
    def pixels(self) -> int:
        return self.spec.batch * math.prod(self.phase_size)

    @property
    def reduce(self) -> int:
        return math.prod(self.taps) * self.spec.in_channels

    def pixel(self, p):
        """(n, qy, qx) of GEMM row ``p``."""
        qy, qx = self.phase_size
        return p // (qy * qx), p // qx % qy, p % qx

    def padded_input(self, axis: int, r, q, j):
        """Index into the padded input along ``axis`` read by tap ``j`` of output ``q*s + r``."""
        return self.axes[axis].batched_input(r, q, j) + self.pads[axis][0]

    def row_offset(self, p, ry, rx):
        """Element offset in the flat padded channels-last input of GEMM row ``p``'s tap 0,
        channel 0 in phase (ry, rx)."""
        n, qy, qx = self.pixel(p)
        hp, wp = self.padded_size
        return ((n * hp + self.padded_input(0, ry, qy, 0)) * wp
                + self.padded_input(1, rx, qx, 0)) * self.spec.in_channels

    def k_offset(self, k, ry, rx):
        """What reduction index ``k = j * Cin + ic`` adds to :meth:`row_offset` (the same for
        every row of a phase-batched plan: inputs shift by -1 per tap)."""
        cin, tw = self.spec.in_channels, self.taps[1]
        j, wp = k // cin, self.padded_size[1]
        return ((self.padded_input(0, ry, 0, j // tw) - self.padded_input(0, ry, 0, 0)) * wp
                + self.padded_input(1, rx, 0, j % tw) - self.padded_input(1, rx, 0, 0)
                ) * cin + k % cin

    def kernel_index(self, axis: int, r, j):
        """Kernel index of tap ``j`` of phase ``r`` (a select over the phases for TIR ``r``)."""
        phases = self.axes[axis].phases
        if isinstance(r, int):
            return phases[r].tap_start + j * phases[r].tap_step
        out = phases[0].tap_start + j * phases[0].tap_step
        for i, ph in enumerate(phases[1:], start=1):
            out = T.if_then_else(r == i, ph.tap_start + j * ph.tap_step, out)
        return out


def wgmma_packed_shape(spec: ConvTransposeSpec) -> tuple[int, int, int]:
    """``[R, Cout, taps x Cin]``: :func:`wgmma_pack`'s weight."""
    geo = Geometry(spec)
    return math.prod(geo.strides), spec.out_channels, geo.reduce


def wgmma_pack(spec: ConvTransposeSpec) -> tirx.PrimFunc:
    """``(weight [Cin, Cout, kh, kw], packed [R, Cout, taps x Cin])``: per phase ``r`` the
    K-major GEMM weight (:class:`Geometry`: ``k = (jy * tw + jx) * Cin + ic``)."""
    geo = Geometry(spec)
    sx = geo.strides[1]
    tw = geo.taps[1]
    cin = spec.in_channels
    shape = wgmma_packed_shape(spec)
    wshape = tuple(spec.weight_shape)

    @T.prim_func(private=True, s_tir=True)
    def pack(weight: T.Buffer(wshape, "float16"), packed: T.Buffer(shape, "float16")):
        T.func_attr({"tirx.noalias": True})
        for r, m, k in T.grid(*shape):
            with T.sblock("pack"):
                vr, vm, vk = T.axis.remap("SSS", [r, m, k])
                packed[vr, vm, vk] = weight[(vk % cin, vm) + geo.spatial(
                    geo.kernel_index(0, vr // sx, vk // cin // tw),
                    geo.kernel_index(1, vr % sx, vk // cin % tw))]
    return pack


def tile_offset(cidx, swizzle: bool):
    """Element offset in a stage tile of its 16-byte copy ``cidx`` (int or TIR): row
    ``cidx//64*8 + cidx%8``, chunk ``cidx//8%8``.  Unswizzled that is ``16 * cidx`` bytes
    (8-row groups of 8 core matrices in K order); swizzled, 128-byte rows with the chunk at
    ``chunk ^ (row % 8)``.  Either way the 8 copies of a quarter warp hit distinct banks."""
    if not swizzle:
        return cidx * CORE
    row = cidx // 64 * CORE + cidx % CORE
    chunk = cidx // CORE % CORE
    xor = chunk ^ (cidx % CORE) if isinstance(cidx, int) else tirx.bitwise_xor(chunk, cidx % CORE)
    return row * BK + xor * CORE


def _wgmma(bn, acc, desc_a, desc_b):
    shape = f"m64n{bn}k16"
    op = getattr(T.ptx.wgmma.mma_async.sync.aligned, shape).f32.f16.f16
    return op(*[acc[i] for i in range(bn // 2)], desc_a, desc_b, T.ptx.pred(1), 1, 1, 0, 0)


def wgmma_conv_transpose(spec: ConvTransposeSpec, tile: WgmmaTile | None = None
                         ) -> tirx.PrimFunc:
    """``(data, packed weight, out)``, NCHW or NCW, float16 with float32 accumulation: the
    input copy and the GEMM kernel of ``tile`` (default :func:`choose_tile`)."""
    reason = wgmma_reason(spec)
    if reason:
        raise ValueError(reason)
    tile = tile or choose_tile(spec)
    if spec.out_channels % tile.bn or tile.bn % 8 or tile.bn > 256:
        raise ValueError(f"wgmma: BN {tile.bn} must divide Cout {spec.out_channels}")
    bn, stages, swizzle = tile.bn, tile.stages, tile.swizzle
    geo = Geometry(spec)
    sy, sx = geo.strides
    (py0, _), (px0, _) = geo.pads
    hp, wp = geo.padded_size
    data_shape, out_shape = tuple(spec.data_shape), tuple(spec.out_shape)
    n_, cin = data_shape[:2]
    hin, win = (ax.in_size for ax in geo.axes)
    cout = spec.out_channels
    kred, pixels = geo.reduce, geo.pixels
    ksteps = kred // BK
    c8 = cin // CORE
    stage_elems = (BM + bn) * BK
    warp_specialized = tile.warp_specialized
    threads = WS_THREADS if warp_specialized else THREADS
    copiers = 128 if warp_specialized else THREADS  # threads that copy the stage tiles
    a_copies = BM * BK // CORE // copiers  # 16-byte copies of A per copying thread per stage
    b_copies, b_rem = divmod(bn * BK // CORE, copiers)  # rem: the first threads copy one more
    copy_total = n_ * hp * wp * c8
    copy_blocks = (copy_total + THREADS - 1) // THREADS
    # Stage tiles: 8-row groups of ROW_GROUP bytes (the descriptors' SBO).  Swizzled, rows are
    # 128 bytes (a K step of 64) with chunk c at c ^ (row % 8); a k16 step starts 32 bytes
    # further (LBO unused: 16).  Unswizzled, a group is its 8 core matrices in K order (LBO
    # 128 bytes), a k16 step two of them further.
    k16, lbo, mode = (16, 16, 3) if swizzle else (2 * CORE * CORE, 128, 0)

    tiled_copy = tile.tiled_copy and wp * (BK + 2) * 2 <= TILED_COPY_SMEM

    @T.macro
    def copy_input_lanes(data, x_cl):
        # kernel 1: zero-padded channels-last copy; lanes along x (coalesced reads)
        with T.launch_thread("blockIdx.x", copy_blocks) as cb:
            ct = T.launch_thread("threadIdx.x", THREADS)
            vec = T.alloc_buffer((CORE,), "float16", scope="local")
            idx = cb * THREADS + ct
            if idx < copy_total:
                xq = idx % wp
                c = idx // wp % c8
                yq = idx // (wp * c8) % hp
                nn = idx // (wp * c8 * hp)
                for e in T.unroll(CORE):
                    vec[e] = T.if_then_else(
                        py0 <= yq and yq < py0 + hin and px0 <= xq and xq < px0 + win,
                        data[(nn, c * CORE + e) + geo.spatial(T.max(T.min(yq - py0, hin - 1), 0),
                                                              T.max(T.min(xq - px0, win - 1), 0))],
                        T.float16(0))
                for e in T.vectorized(CORE):
                    x_cl[nn, yq, xq, c * CORE + e] = vec[e]

    @T.macro
    def copy_input_tiled(data, x_cl):
        # kernel 1, through shared memory: a block copies one padded row of 64 channels,
        # reading channel rows (lanes along x) and writing 128 contiguous bytes per position
        with T.launch_thread("blockIdx.x", n_ * hp * (cin // BK)) as cb:
            ct = T.launch_thread("threadIdx.x", THREADS)
            # rows of BK + 2: a row is 33 words, so neither phase's lanes share a bank
            tile_s = T.alloc_buffer((wp * (BK + 2),), "float16", scope="shared", align=16)
            vec = T.alloc_buffer((CORE,), "float16", scope="local")
            c0 = cb % (cin // BK) * BK
            yq = cb // (cin // BK) % hp
            nn = cb // (cin // BK * hp)
            if py0 <= yq and yq < py0 + hin:
                for i in T.unroll((BK * win + THREADS - 1) // THREADS):
                    if ct + THREADS * i < BK * win:
                        tile_s[((ct + THREADS * i) % win + px0) * (BK + 2)
                               + (ct + THREADS * i) // win] = data[
                            (nn, c0 + (ct + THREADS * i) // win)
                            + geo.spatial(yq - py0, (ct + THREADS * i) % win)]
            T.tvm_storage_sync("shared")
            for i in T.unroll((wp * CORE + THREADS - 1) // THREADS):
                if ct + THREADS * i < wp * CORE:
                    for e in T.unroll(CORE):
                        vec[e] = T.if_then_else(
                            py0 <= yq and yq < py0 + hin and px0 <= (ct + THREADS * i) // CORE
                            and (ct + THREADS * i) // CORE < px0 + win,
                            tile_s[(ct + THREADS * i) // CORE * (BK + 2)
                                   + (ct + THREADS * i) % CORE * CORE + e],
                            T.float16(0))
                    for e in T.vectorized(CORE):
                        x_cl[nn, yq, (ct + THREADS * i) // CORE,
                             c0 + (ct + THREADS * i) % CORE * CORE + e] = vec[e]

    @T.macro
    def copy_input(data, x_cl):
        if tiled_copy:
            copy_input_tiled(data, x_cl)
        else:
            copy_input_lanes(data, x_cl)

    @T.macro
    def a_bases(a_base, bx, ry, rx, tid, nthreads, copies):
        # where each of this thread's A copies starts in the padded input (tap 0, the
        # channel chunk of its copy); a K step adds Geometry.k_offset
        for i in T.unroll(copies):
            a_base[i] = (geo.row_offset(bx * BM + (tid + nthreads * i) // 64 * CORE
                                        + (tid + nthreads * i) % CORE, ry, rx)
                         + (tid + nthreads * i) // CORE % CORE * CORE)

    @T.macro
    def copy_a(smem, x_flat, a_base, stage, kt, ry, rx, tid, nthreads, copies):
        # the A tile of step kt (BM pixels x BK channels of one tap)
        for i in T.unroll(copies):
            T.ptx.cp.async_.cg.shared.global_(
                T.address_of(smem[stage * stage_elems + tile_offset(tid + nthreads * i, swizzle)]),
                T.address_of(x_flat[a_base[i] + geo.k_offset(kt * BK, ry, rx)]), 16)

    @T.macro
    def copy_b(smem, weight, stage, kt, bz, by, tid, nthreads, copies, rem):
        # the B tile of step kt (BN rows of K-major weight) by ``nthreads`` copying threads:
        # ``copies`` 16-byte copies each, one more for the first ``rem``
        for i in T.unroll(copies + int(rem > 0)):
            if i < copies or tid < rem:
                T.ptx.cp.async_.cg.shared.global_(
                    T.address_of(smem[stage * stage_elems + BM * BK
                                      + tile_offset(tid + nthreads * i, swizzle)]),
                    T.address_of(weight[bz, by * bn + (tid + nthreads * i) // 64 * CORE
                                        + (tid + nthreads * i) % CORE,
                                        kt * BK + (tid + nthreads * i) // CORE % CORE * CORE]),
                    16)

    @T.macro
    def mma_step(smem, stage, wg, acc, desc_a, desc_b):
        # BK/16 wgmmas on one stage: this warpgroup's 64 rows of A, all BN rows of B
        T.ptx.wgmma.fence.sync.aligned()
        for kk in T.unroll(BK // 16):
            T.cuda.wgmma.encode_matrix_descriptor(
                desc_a.data, T.address_of(smem[stage * stage_elems + wg * 64 * BK + kk * k16]),
                lbo // 16, ROW_GROUP // 16, mode)
            T.cuda.wgmma.encode_matrix_descriptor(
                desc_b.data, T.address_of(smem[stage * stage_elems + BM * BK + kk * k16]),
                lbo // 16, ROW_GROUP // 16, mode)
            _wgmma(bn, acc, desc_a[0], desc_b[0])
        T.ptx.wgmma.commit_group.sync.aligned()

    @T.macro
    def store(out, acc, bx, by, ry, rx, wg, lane):
        # the accumulator fragment of wgmma m64nN: warp w of the warpgroup holds rows
        # 16w + lane/4 (+8), columns 8i' + 2(lane%4) (+1)
        for i in T.unroll(bn // 2):
            row = wg * 64 + lane // 32 * 16 + lane % 32 // 4 + i // 2 % 2 * 8
            col = i // 4 * 8 + lane % 4 * 2 + i % 2
            n, qy, qx = geo.pixel(bx * BM + row)
            out[(n, by * bn + col) + geo.spatial(qy * sy + ry, qx * sx + rx)] = T.cast(
                acc[i], "float16")

    @T.prim_func(private=True)
    def conv(data: T.Buffer(data_shape, "float16"),
             weight: T.Buffer((sy * sx, cout, kred), "float16"),
             out: T.Buffer(out_shape, "float16")):
        T.func_attr({"tirx.noalias": True})
        x_cl = T.alloc_buffer((n_, hp, wp, cin), "float16")
        x_flat = T.decl_buffer((n_ * hp * wp * cin,), "float16", data=x_cl.data)
        copy_input(data, x_cl)
        # kernel 2: the GEMMs
        with T.launch_thread("blockIdx.x", pixels // BM) as bx:
            by = T.launch_thread("blockIdx.y", cout // bn)
            bz = T.launch_thread("blockIdx.z", sy * sx)
            tx = T.launch_thread("threadIdx.x", threads)
            smem = T.alloc_buffer((stages * stage_elems,), "float16", scope="shared.dyn",
                                  align=1024)
            ry = bz // sx
            rx = bz % sx
            if warp_specialized:
                # warpgroup 0 copies (cp.async, completion on full[s]), warpgroups 1-2
                # multiply (wgmma, then release the stage on empty[s])
                bars = T.alloc_buffer((2 * stages,), "uint64", scope="shared", align=8)
                if tx == 0:
                    for s in T.unroll(stages):
                        T.ptx.mbarrier.init.shared__cta.b64(T.address_of(bars[s]), 128)
                        T.ptx.mbarrier.init.shared__cta.b64(T.address_of(bars[stages + s]), 256)
                T.tvm_storage_sync("shared")
                if tx < 128:
                    a_base = T.alloc_buffer((a_copies,), "int32", scope="local")
                    a_bases(a_base, bx, ry, rx, tx, copiers, a_copies)
                    for kt in range(ksteps):
                        stage = kt % stages
                        T.cuda.mbarrier_wait(T.address_of(bars[stages + stage]),
                                             (kt // stages + 1) % 2)
                        copy_a(smem, x_flat, a_base, stage, kt, ry, rx, tx, copiers, a_copies)
                        copy_b(smem, weight, stage, kt, bz, by, tx, copiers, b_copies, b_rem)
                        T.ptx.cp.async_.mbarrier.arrive.noinc.shared__cta.b64(
                            T.address_of(bars[stage]))
                    T.ptx.cp.async_.wait_all()
                else:
                    wg = tx // 128 - 1
                    acc = T.alloc_buffer((bn // 2,), "float32", scope="local")
                    desc_a = T.alloc_buffer((1,), "uint64", scope="local")
                    desc_b = T.alloc_buffer((1,), "uint64", scope="local")
                    for i in T.unroll(bn // 2):
                        acc[i] = T.float32(0)
                    for kt in range(ksteps):
                        stage = kt % stages
                        T.cuda.mbarrier_wait(T.address_of(bars[stage]), kt // stages % 2)
                        T.ptx.fence.proxy.async_.shared__cta()
                        mma_step(smem, stage, wg, acc, desc_a, desc_b)
                        # its wgmmas done, the stage goes back to the copying warpgroup
                        # (leaving one group in flight and releasing the stage before gave
                        # wrong results on the H100: h100-wgmma-ws-ab-s24.json)
                        T.ptx.wgmma.wait_group.sync.aligned(0)
                        T.ptx.mbarrier.arrive.shared__cta.b64(
                            T.address_of(bars[stages + stage]))
                    store(out, acc, bx, by, ry, rx, wg, tx % 128)
            else:
                # all warpgroups copy, then multiply, between CTA barriers
                acc = T.alloc_buffer((bn // 2,), "float32", scope="local")
                desc_a = T.alloc_buffer((1,), "uint64", scope="local")
                desc_b = T.alloc_buffer((1,), "uint64", scope="local")
                a_base = T.alloc_buffer((a_copies,), "int32", scope="local")
                wg = tx // 128
                a_bases(a_base, bx, ry, rx, tx, copiers, a_copies)
                for i in T.unroll(bn // 2):
                    acc[i] = T.float32(0)
                for kt in range(ksteps + stages - 2):
                    # copies of step kt (issued stages-2 iterations ahead of its MMAs)
                    if kt < ksteps:
                        stage = kt % stages
                        copy_a(smem, x_flat, a_base, stage, kt, ry, rx, tx, copiers, a_copies)
                        copy_b(smem, weight, stage, kt, bz, by, tx, copiers, b_copies, b_rem)
                    T.ptx.cp.async_.commit_group()
                    # MMAs of step kt - (stages - 2)
                    if kt >= stages - 2:
                        mt = kt - (stages - 2)
                        T.ptx.cp.async_.wait_group(stages - 2)
                        T.ptx.fence.proxy.async_.shared__cta()
                        T.tvm_storage_sync("shared")
                        mma_step(smem, mt % stages, wg, acc, desc_a, desc_b)
                        # done before any thread passes the next CTA barrier, so the copies
                        # issued after it may overwrite this stage
                        T.ptx.wgmma.wait_group.sync.aligned(0)
                store(out, acc, bx, by, ry, rx, wg, tx % 128)

    return conv
