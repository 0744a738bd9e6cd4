"""The x86 kernel of stride-1 1-d convs into channels-first outputs (``x86.conv1d_positions``):
vector lanes over output positions.

A 1-d conv with dilation ``d`` computes output ``t`` from inputs ``t + j*d - pad``: ``L``
consecutive outputs read ``L`` consecutive inputs at every tap ``j``.  Those ``L`` outputs are
consecutive phases of the untangled conv (``d >= L``: one position of ``L`` phases; smaller
``d``: a few positions of each), all with the same taps: the tile that spans a run's phases
(:mod:`.x86_dilated`) taken to a whole vector.  So, unlike the channel-vector tiles of
:mod:`.x86_dilated`, this needs no channels-last copy of the data and no scalar write-back
into the ``NCW`` output (WaveNet's convs are short GEMMs, ``K = Cin*k``, where both cost):

* packed weight ``[G, Cog/OT, Icg, k, OT]``: a tile's ``OT`` output channels of one (input
  channel, tap) adjacent, broadcast one at a time;
* a zero-padded channels-first copy of the data (the tiles read it with vector loads, no
  bounds checks; taps reading the padding multiply its zeros, at most ``(k-1)*d`` positions);
* register tile ``OT`` output channels x ``V`` vectors of ``L`` positions within an ISA's
  :attr:`~.x86.VectorISA.accumulators`, the shape with the fewest loads per FMA (AVX-512:
  4 x 6, AVX2: 4 x 3 for WaveNet); per (input channel, tap) each broadcast weight meets the
  ``V`` input vectors; whole vectors are stored to the output.

One parallel loop over (batch, group, position tile, channel tile), channel tiles innermost so
a tile's input window (L1) serves every output channel.  Strided convs (inputs of consecutive
outputs ``s`` apart) and channels-last outputs keep :mod:`.x86_dilated`.
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
from tvm_deconv.dilated import DILATED_CONV, OP_ANNOTATION
from tvm_deconv.plan import DilatedConvSpec

from .common import CPU_TILE_SCOPE, store_where
from .x86 import (ROLE, TILE, VectorISA, _i64, _index, _nest, compute_args_and_padded_data,
                  lanes_of, schedule_x86, supports_float32, vector_lanes)
from .x86_dilated import _split, default_isa

MAX_TILE_CHANNELS = 8  # output channels per tile: broadcasts per loaded input vector


@dataclass(frozen=True)
class PositionsLayout:
    """Every size the pack, the compute and the schedule agree on."""

    mode: str        # "w": what x86._pad_block reads (channels-first padded copy)
    lanes: int       # L: output positions per vector
    ot: int          # output channels per tile
    v: int           # position vectors per tile
    lo: tuple        # zero padding of the data copy (1-d)
    hi: tuple

    @property
    def tile(self) -> tuple:
        return (self.ot, self.v, self.lanes)

    @property
    def positions(self) -> int:
        return self.v * self.lanes

    def packed_shape(self, spec: DilatedConvSpec) -> tuple:
        return (spec.groups, spec.out_per_group // self.ot, spec.in_per_group, spec.kernel[0],
                self.ot)


def positions_layout(spec: DilatedConvSpec, isa: Optional[VectorISA] = None) -> PositionsLayout:
    isa = isa or default_isa()
    lanes = (lanes_of(isa.bits, spec.dtype) if isa.bits is not None
             else vector_lanes(dtype=spec.dtype))
    budget = isa.accumulators
    cog, out_len = spec.out_per_group, spec.out_size[0]
    vectors = -(-out_len // lanes)

    def loads_per_fma(ot: int) -> tuple:
        # per (input channel, tap): v input vectors + ot broadcasts for ot*v FMAs
        v = max(1, min(budget // ot, vectors))
        return ((ot + v) / (ot * v), -ot * v, v)

    ot = min((o for o in range(1, min(cog, MAX_TILE_CHANNELS, budget) + 1) if cog % o == 0),
             key=loads_per_fma)
    v = loads_per_fma(ot)[2]
    padded = -(-out_len // (v * lanes)) * v * lanes
    # the copy holds every input position a tile reads: t + j*d for t < padded, j < k
    span = padded + (spec.kernel[0] - 1) * spec.dilation[0]
    lo = spec.pad_before[0]
    hi = max(0, span - lo - spec.in_size[0])
    return PositionsLayout("w", lanes, ot, v, (lo,), (hi,))


def positions_pack(spec: DilatedConvSpec, isa: Optional[VectorISA] = None) -> tirx.PrimFunc:
    """PrimFunc ``(weight, packed_weight)``; FoldConstant runs it at compile time."""
    lay = positions_layout(spec, isa)
    shape = lay.packed_shape(spec)
    axis = spec.spatial_axes[0]
    with IRBuilder() as builder:
        with T.prim_func(s_tir=True):
            weight, packed = pack_signature("x86_positions_pack_weight", spec, shape)
            with T.grid(*[_i64(e) for e in shape]) as loops:
                with T.sblock("pack_weight"):
                    g, tile_o, ic, j, o = T.axis.remap("SSSSS", loops, dtype=INDEX_DTYPE)
                    oc = g * _i64(spec.out_per_group) + tile_o * _i64(lay.ot) + o
                    kidx = {axis: j, "I": ic, "O": oc}
                    T.buffer_store(packed, weight[tuple(_index(spec.kernel_layout, kidx))],
                                   [g, tile_o, ic, j, o])
    return builder.get()


def positions_compute(spec: DilatedConvSpec, isa: Optional[VectorISA] = None) -> tirx.PrimFunc:
    """PrimFunc ``(data, packed_weight, out)``, emitted scheduled."""
    lay = positions_layout(spec, isa)
    cig, cog, lanes = spec.in_per_group, spec.out_per_group, lay.lanes
    k, d = spec.kernel[0], spec.dilation[0]
    out_len = spec.out_size[0]
    pos_tiles = -(-out_len // lay.positions)
    oc_tiles = cog // lay.ot
    outer = [spec.batch, spec.groups, pos_tiles, oc_tiles]
    annot = {PHASE_ANNOTATION: [], TILE: list(lay.tile), OP_ANNOTATION: DILATED_CONV}
    with IRBuilder() as builder:
        with T.prim_func(s_tir=True):
            T.func_name("conv1d_positions_x86")
            T.func_attr({"tirx.noalias": True, "op_pattern": OUT_ELEMWISE_FUSABLE})
            _, packed, out, dpad = compute_args_and_padded_data(spec, lay,
                                                                lay.packed_shape(spec))
            total = math.prod(outer)
            with (T.parallel(_i64(0), _i64(total)) if total > 1
                  else T.serial(_i64(total))) as fused:
                # the register tile, one per thread (allocated inside the parallel loop)
                acc = T.alloc_buffer([_i64(e) for e in lay.tile], spec.out_dtype,
                                     scope=CPU_TILE_SCOPE)
                n, g, tile_t, tile_o = _split(fused, outer)
                t0 = tile_t * _i64(lay.positions)
                tile_loops = [(None, lay.ot, "unroll", 1), (None, lay.v, "unroll", 1),
                              (None, lanes, "vector", 1)]

                def iters(o, v, lane):
                    """Block iterators: (batch, group, channel tile), the tile position
                    (channel, vector, lane) and the output position."""
                    outs = [T.axis.spatial(_i64(e), i, dtype=INDEX_DTYPE)
                            for e, i in zip(outer[:2] + [oc_tiles], (n, g, tile_o))]
                    ls = [T.axis.spatial(_i64(e), i, dtype=INDEX_DTYPE)
                          for e, i in zip(lay.tile, (o, v, lane))]
                    t = T.axis.spatial(_i64(pos_tiles * lay.positions),
                                       t0 + v * _i64(lanes) + lane, dtype=INDEX_DTYPE)
                    return outs, ls, t

                with _nest(tile_loops) as (o, v, lane):
                    with T.sblock("init"):
                        _, ls, _ = iters(o, v, lane)
                        T.sblock_attr(dict(annot, **{ROLE: "init"}))
                        T.buffer_store(acc, tirx.const(0, spec.out_dtype), ls)
                # channels outer, positions inner: each broadcast weight meets the tile's V
                # input vectors at once, so one broadcast is live beside them (positions
                # outer kept all OT broadcasts live: 24 accumulators + 8 + 3 spilled)
                fma = [(None, cig, "serial", 1), (None, k, "unroll", 1),
                       (None, lay.ot, "unroll", 1), (None, lay.v, "unroll", 1),
                       (None, lanes, "vector", 1)]
                with _nest(fma) as (ric_l, j_l, o, v, lane):
                    with T.sblock("conv"):
                        (bn, bg, bo), ls, t = iters(o, v, lane)
                        ric = T.axis.reduce(_i64(cig), ric_l, dtype=INDEX_DTYPE)
                        j = T.axis.reduce(_i64(k), j_l, dtype=INDEX_DTYPE)
                        T.sblock_attr(dict(annot, **{ROLE: "conv"}))
                        x = dpad[bn, bg * _i64(cig) + ric, t + j * _i64(d)]
                        w = packed[bg, bo, ric, j, ls[0]]
                        T.buffer_store(acc, acc[tuple(ls)] + x.astype(spec.out_dtype)
                                       * w.astype(spec.out_dtype), ls)
                with _nest(tile_loops) as (o, v, lane):
                    with T.sblock("wb"):
                        (bn, bg, bo), ls, t = iters(o, v, lane)
                        T.sblock_attr(dict(annot, **{ROLE: "wb"}))
                        oc = bg * _i64(cog) + bo * _i64(lay.ot) + ls[0]
                        oidx = _index(spec.out_layout, {"N": bn, "C": oc,
                                                        spec.spatial_axes[0]: t})
                        conds = [t < _i64(out_len)] if pos_tiles * lay.positions != out_len else []
                        T.reads(acc[tuple(ls)])
                        T.writes(out[tuple(oidx)])
                        store_where(out, acc[tuple(ls)], oidx, conds)
    return builder.get()


def schedule_positions(sch: s_tir.Schedule, target: Target) -> None:
    """The tile nest comes scheduled from :func:`positions_compute`; the data copy and fused
    epilogues get :func:`~.x86.schedule_x86`'s treatment (same roles)."""
    schedule_x86(sch, target)


def supports_x86_positions(spec: DilatedConvSpec, target: Target) -> Optional[str]:
    if "arm_cpu" in target.keys:
        return "arm_cpu targets get arm_cpu.dilated"
    if target.kind.name != "llvm":
        return f"target kind {target.kind.name} is not llvm"
    if spec.ndim != 1:
        return f"{spec.ndim}-d: position vectors are for 1-d convs"
    if spec.strides[0] != 1:
        return f"stride {spec.strides[0]}: consecutive outputs read inputs that far apart"
    if spec.out_layout.index("C") > spec.out_layout.index(spec.spatial_axes[0]):
        return f"out_layout {spec.out_layout}: output positions are not contiguous"
    return supports_float32(spec, "x86 positions")
