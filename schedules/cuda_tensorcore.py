"""Tensor-core (WMMA 16x16x16, float16 in, float32 accumulators) path of the CUDA kernel.

Where :func:`tensor_core_reason` accepts a float16 call (a phase-batched plan, or a ragged
one with taps in every phase; no groups; output channels, batch x phase pixels and taps x
input channels all multiples of 16; an sm_70+ target), :func:`~.cuda.cuda_compute` gives it
:func:`tensor_core_conv_transpose` instead of the FFMA compute, and
:func:`~.cuda.schedule_cuda` schedules it with :func:`schedule_tensor_core`.  Otherwise the
FFMA schedule runs and one ``tvm_deconv`` log line (INFO) says why.

Ragged plans (k % s != 0: CycleGAN k3 s2) get one GEMM, and one kernel, per phase, each with
exactly its taps (:func:`phase_gemms`: XNNPACK's subconvolutions; no zero tap is multiplied,
unlike :mod:`.cuda_padded_taps`).  Their stores each write an alias of the output, so the
PrimFunc is opaque to epilogue fusion, like the FFMA per-phase kernels.

The compute of a phase-batched plan is the same implicit GEMM, written as one batched GEMM
per phase ``r`` (the phases flattened, row-major over the strides; a ragged plan's GEMMs
have one ``r`` each)::

    acc[r, p, m] += X[r, p, k] * W[r, k, m]      p = (n, q..) row-major,  k = (j.., ic)

``X`` is a gather of the input (the input index from the plan's
:meth:`~tvm_deconv.plan.AxisPlan.batched_input`, or one phase's
:class:`~tvm_deconv.plan.AxisPhase` offsets; zero where
:meth:`~tvm_deconv.plan.AxisPlan.input_pads` says a phase reads outside it: the clamped
element times 0, so an Inf/NaN on the input's border would turn those zeros into NaN),
``W`` a view of :func:`decomposed_pack`'s weight (per phase and tap a ``[Cin, Cout]``
matrix: ``k = j*Cin + ic`` is its row).  Both gathers are spatial blocks that the schedule
stages in shared memory per K step (so the index arithmetic runs once per staged element);
unscheduled (LLVM) they are whole buffers.  ``store`` (of a phase-batched plan the only
writer of the output: epilogues fuse into it) casts ``acc`` and writes
``out[.., q*s + r, ..]``.

Schedule: thread block = BM pixels x BN output channels of one phase (blockIdx.y = phase),
warps ``wp x wo`` each holding ``fp x fo`` 16x16 float32 accumulator fragments; per K step of
BK = 16*fk the gathers are copied into shared memory by all threads, then each warp loads its
A/B fragments and issues ``wmma::mma_sync``; the fragments are stored into a shared tile
that the fused store (+ bias/activation) writes out.  TVM's own WMMA tensor intrinsics
(their copies in :mod:`.wmma_intrin`) do the loads, the MMA, the fill and the store.

NC.. inputs with narrow rows (:func:`input_copy`) are first copied, zero-padded and channels
last, by a kernel of their own; the input gather then loads 8 channels (16 bytes) at a time
with no guards, so both staging copies become ``cp.async`` in a double-buffered K loop
(:data:`COPY_PIPELINE`; the build sets ``tirx.use_async_copy``).
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass

import tvm_ffi
from tvm import s_tir, tirx
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as T
from tvm.target import Target

from tvm_deconv.compute import (OUT_ELEMWISE_FUSABLE, PADDED_INPUT_ANNOTATION,
                                 PHASE_ANNOTATION, _i64, _index, _padded_data_block,
                                 decomposed_packed_shape, flat_index)
from tvm_deconv.plan import ConvTransposeSpec, Phase, make_plan

from . import wmma_intrin
from .common import inline_epilogues, module_switch, root_blocks

logger = logging.getLogger("tvm_deconv")

# Block role annotation of :func:`tensor_core_conv_transpose`: "gather_x", "gather_w",
# "gemm", "store".
TC_ANNOTATION = "tvm_deconv.tensor_core"
MMA = 16  # the WMMA fragment edge (m = n = k = 16)
# float16 calls that the FFMA kernel would split into at least this many K slices (batch 1,
# few output pixels, long K) take it instead: the tensor-core kernel's few thread blocks ran
# slower on the H100 at batch 1 (split FFMA over tensor cores: pose 2048->256 (32 slices)
# 2.19x, DCGAN 512->256 (16) 2.66x, DCGAN 256->128 (8) 1.65x, pose 256->256 (8) 1.12x, but
# HiFi-GAN (8) 0.94x; benchmarks/results/h100-fp16-split-k-ab-s20.json).
SPLIT_K_OVER_TENSOR_CORES = 8

_ENABLED = os.environ.get("TVM_DECONV_CUDA_TENSOR_CORES", "1") != "0"
# Grid order: ``None`` for :func:`~.cuda.phases_fastest`'s rule, True / False to force it.
PHASES_FASTEST: bool | None = None
# Two knobs of the K loop and the input gather, the shipped default here (also set by
# ``benchmarks/cuda_tc_variants_ab.py``).  K_PIPELINE: None (:func:`default_k_pipeline`'s
# rule), "off"; "double_buffer" (staging
# buffers doubled, the next step's gathers issued before this step's MMAs); "rotate" (this
# step's MMAs first, then the next step's gathers into the same buffers: nvcc hoists their
# global loads above the MMAs, a register prefetch); "async" (double-buffered, the weight copy
# as cp.async under the PassContext config ``tirx.use_async_copy``; the input gather computes
# its zero padding, so it stays a plain copy).  X_GATHER, the input gather's thread layout:
# "pixels" (32 pixels per warp store, rows 80 bytes apart: 4-way bank conflicts) or "tiles"
# (8 pixels x 4 K per warp store: conflict-free, at half the global-load sector efficiency).
K_PIPELINE: str | None = None
X_GATHER = "pixels"
# INPUT_COPY, the input's form: "none" (the gather reads the input as given, computing its
# zero padding), "channels_last" (a first kernel copies it zero-padded and channels last,
# where its channels divide into VECTOR-element vectors; the gather then loads 16 bytes at a
# time, unguarded, and COPY_PIPELINE "async" makes both staging copies cp.async), or None:
# "channels_last" for NC.. inputs with rows narrower than NARROW_ROW or with each input
# element feeding at least COPY_REUSE multiply-adds (output channels x kernel taps), else
# "none".  Narrow rows: on the H200 at batch 64 (benchmarks/results/h200-tc-nhwc-ab-s21.json)
# the copy with cp.async ran DCGAN 512->256 (rows of 4) 1.70x and pose 2048->256 (6) 1.21x
# faster.  Reuse: with the copy's lanes along the channels (COPY_LANES), on the H100 at batch
# 64 (benchmarks/results/h100-tc-lanes-tiles-ab-s22.json) it ran pose 256->256 (256 x 16
# MACs per input element, rows of 16) 1.04x and HiFi-GAN (256 x 16, rows of 32) 1.22x
# faster, CycleGAN 256->128 (128 x 9) 1.01x and U-Net (256 x 4) 0.94x: where each input
# element feeds few MACs the copy's own traffic is not repaid.
INPUT_COPY: str | None = None
NARROW_ROW = 8
COPY_REUSE = 4096
VECTOR = 8  # float16 elements per 16-byte load
COPY_PIPELINE = "async"  # the K pipeline of calls with the channels-last input copy
# COPY_LANES, the input copy's thread layout: "channels" (lanes along the channels, each
# thread copying VECTOR positions of its channel's row: every warp store is 64 contiguous
# bytes, and a thread's loads of one row share their sectors) or "rows" (lanes along the
# input row: its loads coalesce, its 2-byte stores land a row of channels apart).  On the
# H100 at batch 64 (h100-tc-lanes-tiles-ab-s22.json) "channels" ran pose 2048->256 1.23x,
# HiFi-GAN 1.23x, U-Net 1.82x, CycleGAN 256->128 1.70x faster than "rows".
COPY_LANES = "channels"
# No variant wins everywhere (default_k_pipeline gives "rotate" to the tall tiles where it
# wins).  On the H200, fp16 at batch 64, one run each
# (benchmarks/results/h200-tc-variants-ab.json): "rotate" ran pose 2048->256 1.23x and pose
# 256->256 1.12x faster than the default but DCGAN 512->256 0.49x and pose 2048->256 at
# batch 1 0.68x; "tiles" ran DCGAN 512->256 1.15x, the 3-D U-Net k4 0.48x; "async" HiFi-GAN
# 1.21x.  So the tuning space (:func:`~.cuda.schedule_cuda_space`)
# offers these (pipeline, gather) designs (the tuner builds them with cp.async, as
# tvm_deconv.build does; layers with the channels-last input copy ignore the gather).
TUNING_VARIANTS = (("off", "pixels"), ("rotate", "pixels"), ("off", "tiles"),
                   ("rotate", "tiles"), ("double_buffer", "pixels"), ("async", "pixels"))
# Small grids (batch-1 DCGAN / pose: <= 64 pixels per phase, 1-warp tiles) take the tensor
# cores too: session 9's tiles ran them 0.19-0.31x the FFMA kernel there, so a size rule kept
# FFMA; with session 12's tiles (choose_tile) they ran 1.04-1.86x faster than FFMA, both in
# one run on the H200 (benchmarks/results/h200-zoo-b1-s13.json, ours_fp16_tc), and the rule
# went.


def tensor_cores(enabled: bool):
    """Within the context, float16 calls take (``True``) or skip (``False``) the tensor-core
    path (default: on unless ``TVM_DECONV_CUDA_TENSOR_CORES=0``).  Benchmarks use it to time
    both paths in one process."""
    return module_switch(sys.modules[__name__], "_ENABLED", enabled)


@dataclass(frozen=True)
class GemmShape:
    """The per-phase GEMM of a phase-batched plan: R phases of [P x K] @ [K x M]."""

    phases: int       # R = prod(strides)
    pixels: int       # P = batch * prod(output extent per phase)
    reduce: int       # K = prod(taps per phase) * Cin
    channels: int     # M = Cout


def gemm_shape(spec: ConvTransposeSpec) -> GemmShape:
    """The one GEMM of a phase-batched plan (all phases alike)."""
    plan = make_plan(spec)
    return GemmShape(math.prod(ax.stride for ax in plan.axes),
                     spec.batch * math.prod(ax.out_size // ax.stride for ax in plan.axes),
                     math.prod(ax.max_taps for ax in plan.axes) * spec.in_per_group,
                     spec.out_channels)


@dataclass(frozen=True)
class PhaseGemm:
    """One GEMM of :func:`tensor_core_conv_transpose`: every phase (``phase`` ``None``,
    phase-batched plans: ``r`` runs over them) or one phase of a ragged plan, whose taps
    differ from its neighbours' (k % s != 0: CycleGAN k3 s2), so each phase is a GEMM, and a
    kernel, of its own with exactly its taps (no zero taps)."""

    phase: Phase | None
    shape: GemmShape

    @property
    def suffix(self) -> str:
        """Block name suffix: "" for the phase-batched GEMM, else the phase's index."""
        return "" if self.phase is None else self.phase.name[len("phase"):]

    def phase_index(self, ndim: int) -> list[int]:
        """Its blocks' PHASE_ANNOTATION: the phase's index, -1s for every phase."""
        return [-1] * ndim if self.phase is None else list(self.phase.index)


def phase_gemms(spec: ConvTransposeSpec) -> list[PhaseGemm]:
    """The GEMMs of ``spec``'s tensor-core compute: one for a phase-batched plan, else one
    per phase (B x prod(extent) pixels, prod(taps) x Cin reduction)."""
    plan = make_plan(spec)
    if plan.phase_batched:
        return [PhaseGemm(None, gemm_shape(spec))]
    return [PhaseGemm(ph, GemmShape(1, spec.batch * math.prod(ph.extent),
                                    math.prod(ph.num_taps) * spec.in_per_group,
                                    spec.out_channels))
            for ph in plan.phases()]


def _sm_version(target: Target | None) -> int:
    if target is None:
        return 90
    arch = str(target.attrs.get("arch", "sm_90"))
    digits = "".join(c for c in arch if c.isdigit())
    return int(digits) if digits else 0


def tensor_core_reason(spec: ConvTransposeSpec, target: Target | None = None,
                       split_k_slices: int = 1) -> str | None:
    """``None`` where the tensor-core path takes ``spec``, else why it does not.
    ``split_k_slices``: the split-K slices the FFMA kernel would run it with."""
    if spec.dtype != "float16":
        return f"dtype {spec.dtype} (tensor cores: float16 in, float32 accumulators)"
    if spec.out_dtype not in ("float16", "float32"):
        return f"out_dtype {spec.out_dtype}"
    if not _ENABLED:
        return "disabled (TVM_DECONV_CUDA_TENSOR_CORES=0 or tensor_cores(False))"
    if _sm_version(target) < 70:
        return f"target arch {target.attrs.get('arch')} has no WMMA (needs sm_70+)"
    plan = make_plan(spec)
    if not plan.phase_batched and not all(ph.has_taps and not ph.is_empty
                                          for ph in plan.phases()):
        return "a phase without taps or outputs (k < s, or a stride above the output)"
    if spec.groups != 1:
        return f"groups={spec.groups} (one GEMM per phase needs groups=1)"
    for gemm in phase_gemms(spec):
        g = gemm.shape
        for what, value in (("output channels", g.channels),
                            ("batch x pixels per phase", g.pixels),
                            ("taps per phase x input channels", g.reduce)):
            if value % MMA:
                return f"{what} = {value} is not a multiple of {MMA}"
    if split_k_slices >= SPLIT_K_OVER_TENSOR_CORES:
        return (f"its grid is short and the FFMA kernel splits K into {split_k_slices} slices "
                f"(>= {SPLIT_K_OVER_TENSOR_CORES}), which has no tensor-core form")
    return None


_LOGGED: set = set()  # (spec, reason) already logged: one line per call, not per build step


def uses_tensor_cores(spec: ConvTransposeSpec, target: Target | None = None,
                      split_k_slices: int = 1) -> bool:
    """Whether :func:`~.cuda.cuda_compute` gives ``spec`` the tensor-core compute
    (:func:`tensor_core_reason`); logs why not for float16 calls that fall back to the FFMA
    kernel."""
    why = tensor_core_reason(spec, target, split_k_slices)
    if why is not None and spec.dtype == "float16" and (spec, why) not in _LOGGED:
        _LOGGED.add((spec, why))
        logger.info("tvm_deconv: conv%dd_transpose(data %s, weight %s, strides=%s) float16 "
                    "runs the FFMA kernel, not tensor cores: %s", spec.ndim, spec.data_shape,
                    spec.weight_shape, spec.strides, why)
    return why is None


def _unflatten(expr, extents: list) -> list:
    """Row-major digits of ``expr`` in a grid of ``extents`` (the inverse of flat_index)."""
    out, inner = [], 1
    for e in reversed(extents):
        digit = tirx.floordiv(expr, _i64(inner)) if inner > 1 else expr
        out.append(tirx.floormod(digit, _i64(e)) if e > 1 else _i64(0))
        inner *= e
    return out[::-1]


def input_copy(spec: ConvTransposeSpec) -> str:
    """The input form :func:`tensor_core_conv_transpose` gives ``spec`` (:data:`INPUT_COPY`,
    by default narrow rows or high reuse): "channels_last" only where the channels divide into
    16-byte vectors."""
    form = INPUT_COPY
    if form is None:
        reuse = spec.out_per_group * math.prod(spec.kernel)
        rows_first = spec.data_layout.index("C") == 1
        form = "channels_last" if rows_first and (spec.in_size[-1] < NARROW_ROW or
                                                  reuse >= COPY_REUSE) else "none"
    return form if form == "none" or spec.in_per_group % VECTOR == 0 else "none"


def input_copy_bytes(spec: ConvTransposeSpec) -> int:
    """Global memory of the channels-last input copy (0 without it)."""
    if input_copy(spec) == "none":
        return 0
    plan = make_plan(spec)
    padded = math.prod(ax.in_size + sum(ax.input_pads()) for ax in plan.axes)
    return spec.batch * padded * spec.in_per_group * tvm_ffi.dtype(spec.dtype).itemsize


def tensor_core_conv_transpose(spec: ConvTransposeSpec, name: str | None = None,
                               copy: str | None = None) -> tirx.PrimFunc:
    """The conv as batched GEMMs (see the module doc; one per :func:`phase_gemms` entry, each
    its four blocks, named with the GEMM's :attr:`PhaseGemm.suffix`); signature ``(data,
    packed_weight, out)`` as :func:`~tvm_deconv.compute.phase_batched_conv_transpose` (same
    :func:`decomposed_pack` weight).  With the input form ``copy`` (``None``:
    :func:`input_copy`'s) "channels_last" a first block (the compute's ``pad`` block, here
    its own kernel: role "pad_x") copies the input zero-padded and channels last, and the
    GEMMs' input gathers read that copy unguarded."""
    plan = make_plan(spec)
    nd, sp = spec.ndim, spec.spatial_axes
    strides = [ax.stride for ax in plan.axes]
    tap_offsets, _ = plan.tap_offsets()
    cin = spec.in_per_group
    acc_dtype = "float32"
    with IRBuilder() as builder:
        with T.prim_func(s_tir=True):
            T.func_name(name or f"conv{nd}d_transpose_tensor_core")
            T.func_attr({"tirx.noalias": True, "op_pattern": OUT_ELEMWISE_FUSABLE})
            data = T.arg("data", T.buffer([_i64(d) for d in spec.data_shape], spec.dtype))
            weight = T.arg("weight", T.buffer([_i64(d) for d in decomposed_packed_shape(spec)],
                                              spec.dtype))
            out = T.arg("out", T.buffer([_i64(d) for d in spec.out_shape], spec.out_dtype))
            pads = {a: ax.input_pads() for a, ax in zip(sp, plan.axes)}
            copied = (copy or input_copy(spec)) == "channels_last"
            copy_layout = "N" + sp + "C"

            def guarded_read(in_idx, n, ic):
                # Outside the input: read the clamped (in-bounds) element and multiply by 0,
                # not if_then_else / Select.  Under such a condition TVM 0.27 simplified the
                # flattened address of a 3-d stride-(3,4,4) layer wrongly: it dropped the
                # phase offset (floormod(r, 4) + 1) // 4 of the padded axis, reading one
                # column too far left (rel. error 0.66, on LLVM and the GPU alike;
                # tests/test_cuda.py::test_tensor_core_compute_cpu has the layer).
                guards, clamped = [], dict(in_idx)
                for a, ax in zip(sp, plan.axes):
                    if pads[a][0]:
                        guards.append(in_idx[a] >= _i64(0))
                        clamped[a] = tirx.max(clamped[a], _i64(0))
                    if pads[a][1]:
                        guards.append(in_idx[a] < _i64(ax.in_size))
                        clamped[a] = tirx.min(clamped[a], _i64(ax.in_size - 1))
                x = data[tuple(_index(spec.data_layout, dict(clamped, N=n, C=ic)))]
                return x * tirx.all(*guards).astype(spec.dtype) if guards else x

            if copied:
                xp, _ = _padded_data_block(spec, plan, data, layout=copy_layout)

            for gemm in phase_gemms(spec):
                g, phase = gemm.shape, gemm.phase
                if phase is None:  # r runs over every phase: closed forms in r
                    qext = [ax.out_size // ax.stride for ax in plan.axes]
                    taps = [ax.max_taps for ax in plan.axes]
                else:
                    qext, taps = list(phase.extent), list(phase.num_taps)

                def attrs(role):  # the phase: -1s for all of them
                    T.sblock_attr({PHASE_ANNOTATION: gemm.phase_index(nd), TC_ANNOTATION: role})

                def phase_and_pixel(r, p):
                    # GEMM row (r, p) -> phase offsets per axis, batch index, phase-grid position
                    n, qs = _unflatten(p, [spec.batch, math.prod(qext)])
                    rs = (_unflatten(r, strides) if phase is None
                          else [_i64(i) for i in phase.index])
                    return rs, n, _unflatten(qs, qext)

                def input_index(rs, qs, js):
                    if phase is None:
                        return {a: ax.batched_input(ri, q, j)
                                for a, ax, ri, q, j in zip(sp, plan.axes, rs, qs, js)}
                    return {a: ap.input_index(q, j) for a, ap, q, j in zip(sp, phase.axes, qs, js)}

                def packed_tap(r, js):
                    # decomposed_pack's flat tap axis: the phases' taps end to end (for
                    # alike phases, the row-major (r.., j..) grid).
                    if phase is None:
                        return flat_index(_unflatten(r, strides) + js, strides + taps)
                    return _i64(tap_offsets[phase.index]) + flat_index(js, taps)

                # A ragged plan's stores each write an alias of the output (the same data):
                # for the schedule each is then the only writer of its buffer, so it can move
                # under its GEMM's thread blocks (reverse_compute_at).
                written = out if phase is None else IRBuilder.name(
                    "out" + gemm.suffix, T.decl_buffer(out.shape, spec.out_dtype, data=out.data))
                xg = T.sblock_alloc_buffer([_i64(g.phases), _i64(g.pixels), _i64(g.reduce)],
                                           spec.dtype)
                wg = T.sblock_alloc_buffer([_i64(g.phases), _i64(g.reduce), _i64(g.channels)],
                                           spec.dtype)
                acc = T.sblock_alloc_buffer([_i64(g.phases), _i64(g.pixels),
                                             _i64(g.channels)], acc_dtype)
                with T.grid(_i64(g.phases), _i64(g.pixels), _i64(g.reduce)) as loops:
                    with T.sblock("gather_x" + gemm.suffix):
                        r, p, k = T.axis.remap("SSS", loops, dtype="int64")
                        attrs("gather_x")
                        rs, n, qs = phase_and_pixel(r, p)
                        js = _unflatten(tirx.floordiv(k, _i64(cin)), taps)
                        ic = tirx.floormod(k, _i64(cin))
                        in_idx = input_index(rs, qs, js)
                        if copied:
                            shifted = {a: in_idx[a] + _i64(pads[a][0]) for a in sp}
                            x = xp[tuple(_index(copy_layout, dict(shifted, N=n, C=ic)))]
                        else:
                            x = guarded_read(in_idx, n, ic)
                        T.buffer_store(xg, x, [r, p, k])
                with T.grid(_i64(g.phases), _i64(g.reduce), _i64(g.channels)) as loops:
                    with T.sblock("gather_w" + gemm.suffix):
                        r, k, m = T.axis.remap("SSS", loops, dtype="int64")
                        attrs("gather_w")
                        js = _unflatten(tirx.floordiv(k, _i64(cin)), taps)
                        T.buffer_store(wg, weight[packed_tap(r, js), tirx.floormod(k, _i64(cin)),
                                                  m], [r, k, m])
                with T.grid(_i64(g.phases), _i64(g.pixels), _i64(g.channels),
                            _i64(g.reduce)) as loops:
                    with T.sblock("gemm" + gemm.suffix):
                        r, p, m, k = T.axis.remap("SSSR", loops, dtype="int64")
                        attrs("gemm")
                        with T.init():
                            T.buffer_store(acc, tirx.const(0, acc_dtype), [r, p, m])
                        T.buffer_store(acc, acc[r, p, m] + xg[r, p, k].astype(acc_dtype)
                                       * wg[r, k, m].astype(acc_dtype), [r, p, m])
                with T.grid(_i64(g.phases), _i64(g.pixels), _i64(g.channels)) as loops:
                    with T.sblock("store" + gemm.suffix):
                        r, p, m = T.axis.remap("SSS", loops, dtype="int64")
                        attrs("store")
                        rs, n, qs = phase_and_pixel(r, p)
                        out_idx = {a: q * _i64(ax.stride) + ri
                                   for a, ax, ri, q in zip(sp, plan.axes, rs, qs)}
                        T.buffer_store(written, acc[r, p, m].astype(spec.out_dtype),
                                       _index(spec.out_layout, dict(out_idx, N=n, C=m)))
    return builder.get()


@dataclass(frozen=True)
class TensorCoreTile:
    """Warps ``wp`` (pixels) x ``wo`` (channels), each with ``fp`` x ``fo`` fragments;
    ``fk`` fragments of K per shared-memory step."""

    wp: int
    wo: int
    fp: int
    fo: int
    fk: int

    @property
    def bm(self) -> int:
        return self.wp * self.fp * MMA

    @property
    def bn(self) -> int:
        return self.wo * self.fo * MMA

    @property
    def warps(self) -> int:
        return self.wp * self.wo

    def divides(self, g: GemmShape) -> bool:
        """Whether the tile divides ``g``: whole blocks of pixels and channels, whole K steps."""
        return g.pixels % self.bm == 0 and g.channels % self.bn == 0 and \
            g.reduce % (self.fk * MMA) == 0


def _split2(frags: int) -> tuple[int, int]:
    """(warps, fragments per warp) along one axis for ``frags`` 16-wide fragments."""
    warps = 2 if frags >= 2 else 1
    return warps, frags // warps


def choose_tile(g: GemmShape, num_sms: int = 132) -> TensorCoreTile:
    """The largest block tile dividing the GEMM (BN <= 128 channels, BM <= 128 pixels, but 64
    where BN is 128 and K is short), shrunk while the grid has fewer blocks than the chip has
    SMs (a 128-channel side first, then the larger side), and to BN <= 64 where its shared
    memory would not launch.

    Measured on the H200 (batch 64 fp16, one run, ``benchmarks/cuda_tile_ab.py``): 128 x 128
    ran pose 2048->256 1.42x, pose 256->256 1.42x and HiFi-GAN 1.06x faster than 128 x 64
    (K = 1024-8192); on U-Net (K = 512) it was 0.95x and 64 x 128 1.29x: with few K steps the
    fused store of the larger accumulator tile, and fewer blocks per SM, cost more."""
    bn = next(b for b in (8, 4, 2, 1) if (g.channels // MMA) % b == 0)
    bm_max = 4 if bn == 8 and g.reduce < LONG_REDUCE else 8
    bm = next(b for b in (8, 4, 2, 1) if b <= bm_max and (g.pixels // MMA) % b == 0)
    fk = 2 if (g.reduce // MMA) % 2 == 0 else 1
    while g.phases * (g.pixels // (bm * MMA)) * (g.channels // (bn * MMA)) < num_sms:
        if bn == 8:
            bn //= 2
        elif bm >= bn and bm > 1:
            bm //= 2
        elif bn > 1:
            bn //= 2
        else:
            break
    while bn > 4 and not _launches(_tile(bm, bn, fk)):
        bn //= 2
    return _tile(bm, bn, fk)


def _tile(bm: int, bn: int, fk: int) -> TensorCoreTile:
    (wp, fp), (wo, fo) = _split2(bm), _split2(bn)
    return TensorCoreTile(wp, wo, fp, fo, fk)


# K (taps x input channels) from which a 128-channel block takes 128 pixels rather than 64.
LONG_REDUCE = 1024


# Static + dynamic shared memory a block may use without opting in to more.
SHARED_LIMIT = 48 * 1024


def _staging_bytes(t: TensorCoreTile) -> int:
    """Static shared memory of a block: the float16 A / B staging rows (padded by 8)."""
    bk = t.fk * MMA
    return t.bm * (bk + 8) * 2 + bk * (t.bn + 8) * 2


# Static + dynamic shared memory of a block opted in to more (sm_80 / sm_90: 227 KiB).
OPT_IN_LIMIT = 227 * 1024


def _accumulator_stride(t: TensorCoreTile, stages: int = 1) -> int | None:
    """Row length (floats) of the float32 accumulator tile in dynamic shared memory beside
    ``stages`` staging buffers; ``None`` where the block would not launch.  ``bn + 4`` where
    static + dynamic fit in 48 KiB (the store reads its columns for NC.. outputs: 4-way
    instead of 32-way bank conflicts), else ``bn``; else rows lengthened (still 4 mod 32)
    until the dynamic part alone exceeds 48 KiB: TVM opts a kernel in to more dynamic shared
    memory only then, and on the H200 blocks over 48 KiB with a smaller dynamic part failed to
    launch (invalid value: 128 x 64 tiles with 64-wide K steps, double-buffered U-Net tiles
    at batch 64)."""
    static = stages * _staging_bytes(t)
    if static > SHARED_LIMIT:  # static shared memory: 48 KiB at most
        return None
    for stride in (t.bn + 4, t.bn):
        if static + t.bm * stride * 4 <= SHARED_LIMIT:
            return stride
    stride = max(t.bn + 4, SHARED_LIMIT // (4 * t.bm) + 1)
    stride += (4 - stride) % 32
    return stride if static + t.bm * stride * 4 <= OPT_IN_LIMIT else None


def _launches(t: TensorCoreTile, stages: int = 1) -> bool:
    """Whether a block of ``t`` (its staging ``stages`` times) launches
    (:func:`_accumulator_stride`)."""
    return _accumulator_stride(t, stages) is not None


def default_k_pipeline(t: TensorCoreTile, batch: int) -> str:
    """The K pipeline of calls without the input copy (:data:`K_PIPELINE` ``None``):
    "rotate" for tiles of 128 pixels x at least 64 channels, whose warps have 8+ fragments of
    MMAs to run while the next step's global loads are in flight, at batch 2 and up; else
    "off".  On the H100 at batch 64 (benchmarks/results/h100-tc-pipeline-ab-s22.json)
    "rotate" ran CycleGAN 256->128 (128 x 128) 1.12x, DCGAN 256->128 and CycleGAN 128->64
    (128 x 64) 1.12x / 1.10x faster than "off", U-Net (64 x 128) 0.96x and the 3-D U-Net k4
    (128 x 32) 0.98x; DCGAN 128->64 (128 x 64) 1.08x (h100-tc-exact-ab-s23.json).  At batch 1
    it lost on every call timed: CycleGAN 256->128 / 128->64 (128 x 64 tiles, 256 / 512
    blocks) 0.78x / 0.92x (h100-tc-exact-ab-s23.json), pose 2048->256 0.68x on the H200
    (h200-tc-variants-ab.json), where DCGAN 512->256 (64 x 64) at batch 64 lost too (0.49x)."""
    return "rotate" if t.bm == 128 and t.bn >= 64 and batch > 1 else "off"


def _stages(pipeline: str) -> int:
    return 2 if pipeline in ("double_buffer", "async") else 1


def _blocks(sch: s_tir.Schedule) -> tuple[str | None, list[dict]]:
    """Root block names: the input copy's ("pad_x"; ``None`` without it) and, per GEMM (by
    PHASE_ANNOTATION), its blocks by :data:`TC_ANNOTATION` role."""
    copy, gemms = None, {}
    for block in root_blocks(sch):
        annotations, name = sch.get(block).annotations, sch.get(block).name_hint
        if PADDED_INPUT_ANNOTATION in annotations:
            copy = name
        elif TC_ANNOTATION in annotations:
            phase = tuple(int(i) for i in annotations[PHASE_ANNOTATION])
            gemms.setdefault(phase, {})[str(annotations[TC_ANNOTATION])] = name
    return copy, list(gemms.values())


def is_tensor_core_func(sch: s_tir.Schedule) -> bool:
    return bool(_blocks(sch)[1])


def _read_buffer_index(sch, block, buffer) -> int:
    for i, region in enumerate(sch.get(block).reads):
        if region.source.same_as(buffer):
            return i
    raise ValueError(f"{buffer.name} is not read")


def _copy_loops(sch, block, at) -> list:
    """compute_at ``block`` (a staging copy) under ``at``; its own loops (those below ``at``)."""
    sch.compute_at(block, at, preserve_unit_loops=True)
    loops = sch.get_loops(block)
    depth = next(i for i, lp in enumerate(loops) if sch.get(lp).same_as(sch.get(at))) + 1
    return loops[depth:]


def _spread(sch, loops: list, warps: int, vector: int = 1) -> None:
    """Fuse ``loops`` (innermost fastest) and spread them over the block's warps x 32 lanes,
    each thread copying ``vector`` consecutive elements at once."""
    fused = sch.fuse(*loops)
    if vector > 1:
        _, ty, tx, vec = sch.split(fused, [None, warps, 32, vector])
        sch.vectorize(vec)
    else:
        _, ty, tx = sch.split(fused, [None, warps, 32])
    sch.bind(ty, "threadIdx.y")
    sch.bind(tx, "threadIdx.x")


def _thread_copy(sch, block, at, warps: int, order: tuple | None = None,
                 vector: int = 1) -> None:
    """compute_at ``block`` (a staging copy) under ``at`` and spread its loops over the
    block's warps x 32 lanes (``order``: the copy's loop order, innermost fastest), each
    thread copying ``vector`` consecutive elements at once."""
    inner = _copy_loops(sch, block, at)
    if order is not None:
        inner = [inner[i] for i in order]
        sch.reorder(*inner)
    _spread(sch, inner, warps, vector)


def _thread_copy_tiles(sch, block, at, warps: int) -> None:
    """compute_at the input gather under ``at``; each warp store covers 8 pixels x 4 K
    (:data:`X_GATHER` "tiles")."""
    r, p, k = _copy_loops(sch, block, at)
    po, pi = sch.split(p, [None, 8])
    ko, ki = sch.split(k, [None, 4])
    sch.reorder(r, ko, po, ki, pi)
    _spread(sch, [r, ko, po, ki, pi], warps)


def _schedule_input_copy(sch, block, threads: int = 256) -> None:
    """The "pad_x" copy as its own kernel (:data:`COPY_LANES`): "rows", a thread per VECTOR
    channels of one padded input position, lanes along the row (the NC.. input's loads
    coalesce); "channels", a thread per VECTOR positions of one channel's row, lanes along
    the channels (the stores coalesce).  Its stores stay scalar (unrolled): vector stores
    would let TVM retype the copy as a ``uint4`` buffer, whose loads the cp.async injection
    then rejects."""
    *outer, w, c = sch.get_loops(block)
    if COPY_LANES == "channels":
        wo, inner = sch.split(w, [None, VECTOR])
        sch.reorder(*outer, wo, c, inner)
        lanes = [wo, c]
    else:
        co, inner = sch.split(c, [None, VECTOR])
        sch.reorder(*outer, co, w, inner)
        lanes = [co, w]
    bx, tx = sch.split(sch.fuse(*outer, *lanes), [None, threads])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    sch.unroll(inner)


def schedule_tensor_core(sch: s_tir.Schedule, target: Target,
                         tile: TensorCoreTile | None = None, num_sms: int = 132,
                         pipeline: str | None = None, gather: str | None = None) -> None:
    """Schedule :func:`tensor_core_conv_transpose` (plus fused epilogues) for WMMA: each GEMM
    a kernel of its own (:func:`_schedule_gemm`), as is the input copy.  ``tile``,
    ``pipeline`` / ``gather``: every GEMM's block tile (``None``: :func:`choose_tile`'s),
    K loop and input gather variants (``None``: :data:`K_PIPELINE` / :data:`X_GATHER`); a
    pipeline whose shared memory would not launch raises ``ValueError`` where it is asked
    for, and falls back to "off" where it is the default."""
    # pylint: disable-next=import-outside-toplevel
    from .cuda import GPU, _schedule_rest

    wmma_intrin.register()
    copy, gemms = _blocks(sch)
    ours = {name for names in gemms for name in names.values()} | {copy} - {None}
    # Epilogues (bias, activations) into the store; what does not inline (several GEMMs'
    # stores write the output) runs elementwise.
    left = inline_epilogues(sch, [sch.get(b).name_hint for b in root_blocks(sch)
                                  if sch.get(b).name_hint not in ours])
    for names in gemms:
        _schedule_gemm(sch, names, tile, num_sms, pipeline,
                       X_GATHER if gather is None else gather, copied=copy is not None)
    if copy is not None:
        _schedule_input_copy(sch, sch.get_sblock(copy))
    _schedule_rest(sch, left, GPU)


def _schedule_gemm(sch: s_tir.Schedule, names: dict,
                   tile: TensorCoreTile | None, num_sms: int, pipeline: str | None,
                   gather: str, copied: bool) -> None:
    """One GEMM's blocks (``names``: by role) as one WMMA kernel (see the module doc)."""
    # pylint: disable-next=import-outside-toplevel
    from .cuda import MAX_GRID_YZ, phases_fastest

    gemm, store = sch.get_sblock(names["gemm"]), sch.get_sblock(names["store"])
    gx, gw = sch.get_sblock(names["gather_x"]), sch.get_sblock(names["gather_w"])
    ext = [int(iv.dom.extent) for iv in sch.get(gemm).iter_vars]
    g = GemmShape(ext[0], ext[1], ext[3], ext[2])
    t = tile or choose_tile(g, num_sms)
    if pipeline is None:  # the default pipeline where its staging launches, else none
        batch = int(sch.get(store).writes[0].source.shape[0])  # N leads every layout
        pipeline = COPY_PIPELINE if copied else K_PIPELINE or default_k_pipeline(t, batch)
        pipeline = pipeline if _launches(t, _stages(pipeline)) else "off"
    if not _launches(t, _stages(pipeline)):
        raise ValueError(f"{pipeline}: {_stages(pipeline)} x {_staging_bytes(t)} bytes of "
                         f"static shared memory would not launch")

    r, p, m, k = sch.get_loops(gemm)
    p0, p1, p2, p3 = sch.split(p, [None, t.wp, t.fp, MMA])
    m0, m1, m2, m3 = sch.split(m, [None, t.wo, t.fo, MMA])
    k0, k1, k2 = sch.split(k, [None, t.fk, MMA])
    sch.reorder(r, p0, m0, p1, m1, k0, k1, p2, m2, p3, m3, k2)
    bx = sch.fuse(p0, m0)
    warp = sch.fuse(p1, m1)
    fastest = PHASES_FASTEST
    if fastest is None:
        fastest = phases_fastest(sch.get(store).writes[0].source, sch.get(gw).reads[0].source)
    if fastest and int(sch.get(bx).extent) <= MAX_GRID_YZ:
        sch.bind(r, "blockIdx.x")
        sch.bind(bx, "blockIdx.y")
    else:
        sch.bind(r, "blockIdx.y")
        sch.bind(bx, "blockIdx.x")
    sch.bind(warp, "threadIdx.y")
    sch.annotate(bx, "pragma_auto_unroll_max_step", 64)
    sch.annotate(bx, "pragma_unroll_explicit", 1)

    # Accumulator fragments -> a shared tile (wmma store) -> the fused store writes it out.
    acc_frag = sch.cache_write(gemm, 0, "wmma.accumulator")
    sch.reverse_compute_at(acc_frag, warp, preserve_unit_loops=True)
    sch.set_scope(acc_frag, 0, "shared.dyn")  # not "shared": see wmma_intrin
    sch.reverse_compute_at(store, bx, preserve_unit_loops=True)
    channels_last = spec_channels_last(sch, store)
    loops = sch.get_loops(store)[-3:]
    # Coalesced global writes: pixels fastest for NC.. outputs, channels for N..C.
    order = (0, 1, 2) if channels_last else (0, 2, 1)
    sch.reorder(*[loops[i] for i in order])
    _spread(sch, [loops[i] for i in order], t.warps)

    # Input / weight gathers staged in shared memory per K step.
    for block in (gx, gw):
        sch.set_scope(block, 0, "shared")
        sch.storage_align(block, 0, axis=1, factor=32, offset=8)
    if copied:  # channels-last copy: 16-byte loads along K (= taps x channels)
        _thread_copy(sch, gx, k0, t.warps, vector=VECTOR)
    elif gather == "tiles":
        _thread_copy_tiles(sch, gx, k0, t.warps)
    else:
        _thread_copy(sch, gx, k0, t.warps, order=(0, 2, 1))  # pixels fastest (NC.. input rows)
    _thread_copy(sch, gw, k0, t.warps,                   # channels fastest (packed rows),
                 vector=next(v for v in (8, 4, 2, 1)     # 16-byte loads where they divide
                             if (t.bn * t.fk * MMA) % (t.warps * 32 * v) == 0))

    xbuf, wbuf = sch.get(gx).writes[0].source, sch.get(gw).writes[0].source
    # Fragments of A (pixels x K) and B (K x channels) per 16-wide K step.
    a_frag = sch.cache_read(gemm, _read_buffer_index(sch, gemm, xbuf), "wmma.matrix_a")
    b_frag = sch.cache_read(gemm, _read_buffer_index(sch, gemm, wbuf), "wmma.matrix_b")
    sch.compute_at(a_frag, k1, preserve_unit_loops=True)
    sch.compute_at(b_frag, k1, preserve_unit_loops=True)
    _, ap, ak = sch.get_loops(a_frag)[-3:]
    apo, api = sch.split(ap, [None, MMA])
    sch.tensorize(api, wmma_intrin.LOAD_A)
    _, bk, bm = sch.get_loops(b_frag)[-3:]
    bmo, bmi = sch.split(bm, [None, MMA])
    sch.reorder(bmo, bk, bmi)
    sch.tensorize(bk, wmma_intrin.LOAD_B)

    if pipeline != "off":  # k0's body: the two gathers (stage 0), the MMA loop (stage 1)
        sch.annotate(k0, "software_pipeline_stage", [0, 0, 1])
        sch.annotate(k0, "software_pipeline_order",
                     [1, 2, 0] if pipeline == "rotate" else [0, 1, 2])
        if pipeline == "async":
            sch.annotate(k0, "software_pipeline_async_stages", [0])
    init = sch.decompose_reduction(gemm, k0)
    sch.tensorize(sch.get_loops(init)[-2], wmma_intrin.FILL)
    sch.tensorize(p3, wmma_intrin.SYNC)

    _, cp, cm = sch.get_loops(acc_frag)[-3:]
    cpo, cpi = sch.split(cp, [None, MMA])
    cmo, cmi = sch.split(cm, [None, MMA])
    sch.reorder(cpo, cmo, cpi, cmi)
    sch.tensorize(cpi, wmma_intrin.STORE)
    # The shared tile's rows padded (after tensorize: that replaces the block and its
    # alignment annotation): an offset below a larger factor makes the row exactly that long.
    stride = _accumulator_stride(t, _stages(pipeline))
    if stride != t.bn:
        stored = sch.get_child_blocks(cmo)[0]
        sch.storage_align(stored, 0, axis=1, factor=2 * stride, offset=stride)


def spec_channels_last(sch, store) -> bool:
    """Whether the store writes an N..C output (its channel iterator indexes the last axis)."""
    block = sch.get(store)
    m_var = block.iter_vars[2].var
    index = block.body.indices[-1] if hasattr(block.body, "indices") else None
    return index is not None and index.same_as(m_var)
