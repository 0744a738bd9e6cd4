"""The x86 kernel of transposed convs where every output reads one input (``x86.one_tap``).

With kernel == stride, no padding and no output padding (U-Net's k2 s2 up-convolutions),
phase ``r`` of every axis has one tap, kernel index ``r``, reading the input right below it:
``out[n, oc, y*s + ry, x*s + rx] = sum_ic data[n, ic, y, x] * w[ic, oc, ry, rx]``, a GEMM
per input pixel with no overlap and no padding.  So this kernel reads the channels-first
input as it is, vector lanes over ``L`` input columns, and writes the output directly:

* packed weight ``[Cout/OT, Cin, OT, P]`` (``P`` = prod(strides) phases, from
  :meth:`~tvm_deconv.plan.TransposedConvPlan.phases`): per input channel, a tile's ``OT x P``
  weights are adjacent, broadcast one at a time;
* register tile ``OT`` output channels x ``P`` phases x ``RH`` input rows x ``V`` vectors of
  ``L`` input columns (the flattened leading spatial axes are the rows): per input channel
  ``RH*V`` vector loads meet ``OT*P`` broadcasts in ``OT*P*RH*V`` FMAs;
* the write-back interleaves the ``s`` phases of the last axis: ``s`` accumulators of ``L``
  columns become ``s*L`` consecutive outputs (whole-vector stores, no scalar scatter, no
  interleave pass), with the fused epilogues inlined.

One parallel loop over (batch, output-channel group, chunk of input patches): a group's
weights (at most :data:`GROUP_WEIGHT_BYTES`) stay in L2 while its patches (``RH`` rows x
``V`` vectors) stream past.  Each patch's input, all channels, is first copied contiguous
into a per-task panel (in place, consecutive channels are a plane apart, and the tile's reads
of every channel share L1 sets: U-Net ran 0.83x ``x86.interleaved`` without the copy, 1.34x
with it); the group's channel tiles then reuse the panel from L2.  Workspace: one panel per
core and the packed weight's channel padding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from tvm import s_tir, tirx
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as T
from tvm.target import Target

from tvm_deconv.compute import INDEX_DTYPE, OUT_ELEMWISE_FUSABLE, PHASE_ANNOTATION, pack_signature
from tvm_deconv.plan import ConvTransposeSpec, make_plan

from .common import CPU_TILE_SCOPE, inline_epilogues, store_where
from .x86 import (ROLE, TILE, _i64, _index, _nest, _parallel_spatial, itemsize, supports_x86,
                  vector_lanes)
from .x86_dilated import _split

LANES = 16                 # AVX-512 float32: measured there only
ACCUMULATORS = 24          # accumulator registers of a tile (of 32)
GROUP_WEIGHT_BYTES = 256 << 10   # a parallel task's weights: an L2 share
MIN_TASKS = 8              # parallel tasks at least (and 2 per core of the current target)


@dataclass(frozen=True)
class OneTapLayout:
    """Every size the pack, the compute and the schedule agree on."""

    lanes: int        # L: input columns per vector
    ot: int           # output channels per tile
    phases: int       # P: prod(strides)
    rh: int           # input rows per tile
    v: int            # column vectors per tile (v * lanes divides the row)
    oc_tiles: int     # ceil(Cout / ot)
    group_tiles: int  # channel tiles per parallel task
    patch_chunks: int  # parallel chunks of the input patches

    @property
    def tile(self) -> tuple:
        return (self.ot, self.phases, self.rh, self.v, self.lanes)

    def packed_shape(self, spec: ConvTransposeSpec) -> tuple:
        return (self.oc_tiles, spec.in_channels, self.ot, self.phases)


def _rows(spec: ConvTransposeSpec) -> int:
    return math.prod(spec.in_size[:-1])


def _cores() -> int:
    """``num-cores`` of the current target (0: none given)."""
    target = Target.current(allow_none=True)
    return int(target.attrs.get("num-cores", 0) or 0) if target is not None else 0


def _min_tasks() -> int:
    return max(MIN_TASKS, 2 * _cores())


def one_tap_layout(spec: ConvTransposeSpec) -> OneTapLayout:
    """The tile with the fewest loads per FMA within :data:`ACCUMULATORS` (rows and column
    vectors dividing the input, so no read leaves it); channel groups within
    :data:`GROUP_WEIGHT_BYTES`; input patches split in chunks until there are :func:`_min_tasks`
    parallel tasks."""
    phases, rows = math.prod(spec.strides), _rows(spec)
    vectors = spec.in_size[-1] // LANES
    best = None
    for ot in range(1, ACCUMULATORS // phases + 1):
        for rh in (d for d in range(1, rows + 1) if rows % d == 0):
            for v in (d for d in range(1, vectors + 1) if vectors % d == 0):
                accs = ot * phases * rh * v
                if accs > ACCUMULATORS:
                    continue
                waste = -(-spec.out_channels // ot) * ot / spec.out_channels
                key = ((rh * v + ot * phases) / accs * waste, -accs)
                if best is None or key < best[0]:
                    best = (key, (ot, rh, v))
    ot, rh, v = best[1]
    oc_tiles = -(-spec.out_channels // ot)
    tile_bytes = spec.in_channels * ot * phases * itemsize(spec.dtype)
    group_tiles = max(d for d in range(1, oc_tiles + 1)
                      if oc_tiles % d == 0 and d * tile_bytes <= max(GROUP_WEIGHT_BYTES,
                                                                     tile_bytes))
    patches, patch_chunks = rows // rh * (vectors // v), 1
    tasks = spec.batch * (oc_tiles // group_tiles)
    while tasks * patch_chunks < _min_tasks() and patches % (2 * patch_chunks) == 0:
        patch_chunks *= 2
    return OneTapLayout(LANES, ot, phases, rh, v, oc_tiles, group_tiles, patch_chunks)


def one_tap_pack(spec: ConvTransposeSpec) -> tirx.PrimFunc:
    """PrimFunc ``(weight, packed_weight)``; FoldConstant runs it at compile time.  Channels
    past ``Cout`` (the last tile's padding) get zeros."""
    lay = one_tap_layout(spec)
    shape = lay.packed_shape(spec)
    taps = [phase.axes for phase in make_plan(spec).phases()]
    with IRBuilder() as builder:
        with T.prim_func(s_tir=True):
            weight, packed = pack_signature("x86_one_tap_pack_weight", spec, shape)
            with T.grid(*[_i64(e) for e in shape]) as loops:
                with T.sblock("pack_weight"):
                    tile_o, ic, o, p = T.axis.remap("SSSS", loops, dtype=INDEX_DTYPE)
                    oc = tile_o * _i64(lay.ot) + o
                    value = tirx.const(0, spec.dtype)
                    # phase p (row-major) reads kernel tap `tap_start` on every axis
                    for index, axes in enumerate(taps):
                        kidx = {a: _i64(ap.tap_start) for a, ap in zip(spec.spatial_axes, axes)}
                        kidx.update(I=ic, O=tirx.min(oc, _i64(spec.out_channels - 1)))
                        value = tirx.Select(p == _i64(index),
                                            weight[tuple(_index(spec.kernel_layout, kidx))],
                                            value)
                    if lay.oc_tiles * lay.ot != spec.out_channels:
                        value = tirx.Select(oc < _i64(spec.out_channels), value,
                                            tirx.const(0, spec.dtype))
                    T.buffer_store(packed, value, [tile_o, ic, o, p])
    return builder.get()


def one_tap_compute(spec: ConvTransposeSpec) -> tirx.PrimFunc:
    """PrimFunc ``(data, packed_weight, out)``, emitted scheduled (see the module doc)."""
    lay = one_tap_layout(spec)
    plan = make_plan(spec)
    nd, lanes, cin = spec.ndim, lay.lanes, spec.in_channels
    strides, rows = spec.strides, _rows(spec)
    assert [ap.phase for ap in plan.axes[-1].phases] == list(range(strides[-1]))
    col_tiles = spec.in_size[-1] // (lay.v * lanes)
    patches = rows // lay.rh * col_tiles      # input patches: RH rows x V vectors
    chunk_patches = patches // lay.patch_chunks
    outer = [spec.batch, lay.oc_tiles // lay.group_tiles, lay.patch_chunks]
    annot = {PHASE_ANNOTATION: [], TILE: list(lay.tile)}
    sx, lead = strides[-1], math.prod(strides[:-1])
    panel_shape = (cin, lay.rh, lay.v, lanes)
    with IRBuilder() as builder:
        with T.prim_func(s_tir=True):
            T.func_name(f"conv{nd}d_transpose_one_tap_x86")
            T.func_attr({"tirx.noalias": True, "op_pattern": OUT_ELEMWISE_FUSABLE})
            data = T.arg("data", T.buffer([_i64(d) for d in spec.data_shape], spec.dtype))
            packed = T.arg("packed_weight", T.buffer([_i64(d) for d in lay.packed_shape(spec)],
                                                     spec.dtype))
            out = T.arg("out", T.buffer([_i64(d) for d in spec.out_shape], spec.out_dtype))
            total = math.prod(outer)
            with (T.parallel(_i64(0), _i64(total)) if total > 1
                  else T.serial(_i64(total))) as fused:
                # per task: the register tile, its interleaved copy and the patch's input panel
                acc = T.alloc_buffer([_i64(e) for e in lay.tile], spec.out_dtype,
                                     scope=CPU_TILE_SCOPE)
                mixed = T.alloc_buffer([_i64(e) for e in (lay.ot, lead, lay.rh, lay.v,
                                                          sx * lanes)], spec.out_dtype,
                                       scope=CPU_TILE_SCOPE)
                panel = T.alloc_buffer([_i64(e) for e in panel_shape], spec.dtype)
                n, grp, chunk = _split(fused, outer)
                with T.serial(_i64(chunk_patches)) as patch:
                    patch_l = chunk * _i64(chunk_patches) + patch

                    def patch_iters():
                        return [T.axis.spatial(_i64(e), i, dtype=INDEX_DTYPE) for e, i in
                                zip((spec.batch, patches), (n, patch_l))]

                    def input_index(patch_b, rh, v):
                        """Input spatial indices of the patch's row ``rh``, vector ``v``
                        (the last axis: its first column)."""
                        row_tile, col_tile = _split(patch_b, [patches // col_tiles, col_tiles])
                        index = dict(zip(spec.spatial_axes[:-1], _split(
                            row_tile * _i64(lay.rh) + rh, list(spec.in_size[:-1]))))
                        index[spec.spatial_axes[-1]] = (col_tile * _i64(lay.v) + v) * _i64(lanes)
                        return index

                    # The row tile's input, all channels, copied contiguous: read in place,
                    # consecutive channels are a plane apart (4 KiB for 32 x 32), and
                    # the tile's reads of every channel fall into the same L1 sets.
                    copy = [(None, cin, "serial", 1), (None, lay.rh, "unroll", 1),
                            (None, lay.v, "unroll", 1), (None, lanes, "vector", 1)]
                    with _nest(copy) as loops:
                        with T.sblock("panel"):
                            bn, patch_b = patch_iters()
                            ic, rh, v, lane = [T.axis.spatial(_i64(e), i, dtype=INDEX_DTYPE)
                                               for e, i in zip(panel_shape, loops)]
                            T.sblock_attr({ROLE: "panel"})
                            in_idx = input_index(patch_b, rh, v)
                            in_idx[spec.spatial_axes[-1]] += lane
                            T.buffer_store(panel, data[tuple(_index(
                                spec.data_layout, dict(in_idx, N=bn, C=ic)))], [ic, rh, v, lane])
                    with T.serial(_i64(lay.group_tiles)) as tile_in_group:
                        tile_o_l = grp * _i64(lay.group_tiles) + tile_in_group
                        tile_loops = [(None, e, "unroll", 1) for e in lay.tile[:-1]] + [
                            (None, lanes, "vector", 1)]

                        def outer_iters():
                            """Block iterators (batch, patch, channel tile)."""
                            return patch_iters() + [T.axis.spatial(
                                _i64(lay.oc_tiles), tile_o_l, dtype=INDEX_DTYPE)]

                        def tile_iters(its):
                            return [T.axis.spatial(_i64(e), i, dtype=INDEX_DTYPE)
                                    for e, i in zip(lay.tile, its)]

                        with _nest(tile_loops) as its:
                            with T.sblock("init"):
                                outer_iters()
                                ls = tile_iters(its)
                                T.sblock_attr(dict(annot, **{ROLE: "init"}))
                                T.buffer_store(acc, tirx.const(0, spec.out_dtype), ls)
                        # input channel outer; per channel each broadcast weight (o, p) meets
                        # the tile's RH*V input vectors
                        fma = [(None, cin, "serial", 1)] + tile_loops
                        with _nest(fma) as (ic_l, *its):
                            with T.sblock("conv"):
                                _, _, tile_o = outer_iters()
                                ls = tile_iters(its)
                                ic = T.axis.reduce(_i64(cin), ic_l, dtype=INDEX_DTYPE)
                                T.sblock_attr(dict(annot, **{ROLE: "conv"}))
                                o, p, rh, v, lane = ls
                                x = panel[ic, rh, v, lane]
                                w = packed[tile_o, ic, o, p]
                                T.buffer_store(acc, acc[tuple(ls)] + x.astype(spec.out_dtype)
                                               * w.astype(spec.out_dtype), ls)
                        # per (o, leading phases, row, vector): the s accumulator vectors of
                        # the last axis's phases, interleaved into s*L consecutive outputs by
                        # LLVM's vector.interleave2 (shuffles; a vectorised loop over the
                        # outputs reading the accumulators made LLVM gather the lanes one at
                        # a time, and MetaSchedule's flop counter rejects TIR's Shuffle)
                        mix = [(None, e, "unroll", 1) for e in (lay.ot, lead, lay.rh, lay.v)]
                        with _nest(mix) as loops:
                            with T.sblock("interleave"):
                                outer_iters()
                                o, pl, rh, v = [
                                    T.axis.spatial(_i64(e), i, dtype=INDEX_DTYPE)
                                    for e, i in zip((lay.ot, lead, lay.rh, lay.v), loops)]
                                T.sblock_attr(dict(annot, **{ROLE: "interleave"}))
                                vectors = [tirx.BufferLoad(acc, [
                                    o, pl * _i64(sx) + _i64(rx), rh, v,
                                    tirx.Ramp(_i64(0), _i64(1), lanes)]) for rx in range(sx)]
                                T.reads(acc[o, pl * _i64(sx):pl * _i64(sx) + _i64(sx), rh, v,
                                            _i64(0):_i64(lanes)])
                                T.writes(mixed[o, pl, rh, v, _i64(0):_i64(sx * lanes)])
                                T.buffer_store(mixed, _interleave(vectors, spec.out_dtype, lanes),
                                               [o, pl, rh, v,
                                                tirx.Ramp(_i64(0), _i64(1), sx * lanes)])
                        # the write-back: whole vectors of consecutive outputs (fused epilogues
                        # inline here)
                        wb = [(None, e, "unroll", 1) for e in (lay.ot, lead, lay.rh, lay.v, sx)]
                        with _nest(wb + [(None, lanes, "vector", 1)]) as loops:
                            with T.sblock("wb"):
                                bn, patch_b, tile_o = outer_iters()
                                o, pl, rh, v, h, lane = [
                                    T.axis.spatial(_i64(e), i, dtype=INDEX_DTYPE)
                                    for e, i in zip((lay.ot, lead, lay.rh, lay.v, sx, lanes),
                                                    loops)]
                                T.sblock_attr(dict(annot, **{ROLE: "wb"}))
                                col = h * _i64(lanes) + lane
                                oc = tile_o * _i64(lay.ot) + o
                                in_idx = input_index(patch_b, rh, v)
                                out_idx = {a: in_idx[a] * _i64(s) + r for a, s, r in
                                           zip(spec.spatial_axes[:-1], strides[:-1],
                                               _split(pl, list(strides[:-1])))}
                                out_idx[spec.spatial_axes[-1]] = (
                                    in_idx[spec.spatial_axes[-1]] * _i64(sx) + col)
                                oidx = _index(spec.out_layout, dict(out_idx, N=bn, C=oc))
                                T.reads(mixed[o, pl, rh, v, col])
                                T.writes(out[tuple(oidx)])
                                store_where(out, mixed[o, pl, rh, v, col], oidx,
                                            [oc < _i64(spec.out_channels)]
                                            if lay.oc_tiles * lay.ot != spec.out_channels else [])
    return builder.get()


def _interleave(vectors: list, dtype: str, lanes: int):
    """Lane ``i`` of vector ``r`` at ``i*s + r``, for ``s`` (a power of two) vectors of
    ``lanes``: nested ``llvm.vector.interleave2`` calls (``interleave3`` aborted LLVM 22's
    x86 backend).  The evens interleaved, then the odds, then the two."""
    if len(vectors) == 1:
        return vectors[0]
    half = len(vectors) // 2
    evens = _interleave(vectors[0::2], dtype, lanes)
    odds = _interleave(vectors[1::2], dtype, lanes)
    return tirx.call_llvm_pure_intrin(f"{dtype}x{2 * half * lanes}", "llvm.vector.interleave2",
                                      evens, odds)


def schedule_one_tap(sch: s_tir.Schedule, target: Target) -> None:
    """The tile nest comes scheduled from :func:`one_tap_compute`; fused epilogues are
    inlined into the write-back where they inline, else run as parallel passes."""
    lanes = vector_lanes(target)
    names = [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))
             if sch.get(b).annotations.get(ROLE) is None]
    for name in inline_epilogues(sch, names):
        _parallel_spatial(sch, sch.get_sblock(name), lanes)


def workspace_bytes(spec: ConvTransposeSpec) -> int:
    """Extra memory: the packed weight's channel padding and, per task in flight (one per
    core of the current target), the input panel (the tiles live in registers)."""
    lay = one_tap_layout(spec)
    item = itemsize(spec.dtype)
    padding = math.prod(lay.packed_shape(spec)) - math.prod(spec.weight_shape)
    panel = spec.in_channels * lay.rh * lay.v * lay.lanes
    tasks = spec.batch * lay.oc_tiles // lay.group_tiles * lay.patch_chunks
    return (padding + panel * min(tasks, max(1, _cores()))) * item


def supports_x86_one_tap(spec: ConvTransposeSpec, target: Target) -> Optional[str]:
    why = supports_x86(spec, target)
    if why is not None:
        return why
    if vector_lanes(target) != LANES:
        return "one-tap kernel: AVX-512 targets only (measured there)"
    if not make_plan(spec).one_tap:
        return "outputs read more than one input (kernel != stride, padding or dilation)"
    if spec.groups != 1:
        return "grouped conv"
    if spec.data_layout[:2] != "NC" or spec.out_layout[:2] != "NC":
        return f"layouts {spec.data_layout}/{spec.out_layout}: channels-first only"
    if spec.strides[-1] & (spec.strides[-1] - 1):
        return (f"stride {spec.strides[-1]} on the last axis: the write-back interleaves "
                "powers of two")
    if spec.in_size[-1] % LANES:
        return f"input width {spec.in_size[-1]} is not a multiple of {LANES}"
    return None
