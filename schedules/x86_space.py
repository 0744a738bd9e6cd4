"""The x86 MetaSchedule design space (``ours``): the packed-weight phase GEMMs with sampled
register tiles.

:func:`x86_space_compute` is :mod:`.x86`'s computation in a form TIR's schedule primitives
accept everywhere: the same packed weight (:func:`~.x86.x86_pack`: its layout does not depend
on the register tile) and zero-padded data copy, then per phase with taps a plain reduction
block into a *dense* accumulator ``acc_<phase>`` (``oc`` mode ``[N, G, OB, Q..., L]``, ``w``
mode ``[N, G, Cog, Q...]``), and ONE ``interleave`` block, the only writer of ``out``, that
reads every phase's accumulator (tapless phases give zeros).  Every block is then the sole
writer of its buffer, so ``cache_write``, ``reverse_compute_at`` and ``decompose_reduction``
work (the pre-scheduled :func:`~.x86.x86_compute` exists because the interleaved output has
one writer per phase there).  All phases share one extent ``Q`` per axis (the largest phase
extent; ``w`` mode rounds the column axis up to the vector width), so the phase blocks share
their loop extents and one set of sampled tile sizes; ragged phases compute a few columns
the interleave never reads.

:func:`schedule_x86_space` is the design space, a handful of knobs so that ~64 trials
converge: the register tile (channel vectors or channels, rows, columns; perfect tiles of the
shared extents), MetaSchedule's auto-unroll step, and two design spaces for the order of the
parallel tile loops (:data:`ORDERS`: channel tiles outer: each weight slice reused by all
spatial tiles while hot; inner: each input patch read once for all channels; input chunks: the
input channels split in chunks outside the spatial tiles, so a chunk's weight slice stays in
L2 for every spatial tile, for weight slices too big for it).  Per phase: tile, reduction over
input channels outside the (unrolled) taps and the unrolled tile, lanes vectorised, the tile
accumulated in a ``local`` cache (registers) written back to the dense accumulator.
:mod:`.x86_interleaved` runs the same compute with fixed tiles as the untuned kernel for
strided many-channel convs on AVX-512.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional

from tvm import s_tir, tirx
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as T
from tvm.target import Target

from tvm_deconv.compute import INDEX_DTYPE, PHASE_ANNOTATION, flat_index
from tvm_deconv.plan import ConvTransposeSpec, make_plan

from .common import CPU_TILE_SCOPE, store_where
from .x86 import (ROLE, X86, VectorISA, X86Layout, _i64, _index,
                  compute_args_and_padded_data, schedule_pad, x86_layout)

INTERLEAVE = "interleave"
MODE = "tvm_deconv.x86.mode"            # phase blocks: "oc" or "w"
LANES = "tvm_deconv.x86.lanes"          # phase blocks: vector width
PHASE_LOOPS = "tvm_deconv.x86.phase_loops"  # interleave: positions of its phase (r) loops,
#                                             one per spatial axis, in axis order
# Largest sampled tile factors: oc mode (channel vectors, rows, columns), w mode (channels,
# rows, column vectors).  Accumulator tiles beyond ~12 vectors spill; the search learns that.
OC_MAX = (4, 4, 8)
W_MAX = (4, 8, 4)
UNROLL_STEPS = (0, 16, 64, 512)
ORDERS = ("channels_outer", "channels_inner", "input_chunks")
# Input-chunk order: sampled chunk sizes (those that split the input channels), and the
# largest accumulator a parallel task keeps across the chunks (it should stay in L1/L2).
INPUT_CHUNKS = (64, 128, 256, 512)
CHUNKED_ACC_BYTES = 64 << 10


def space_layout(spec: ConvTransposeSpec, isa: Optional[VectorISA] = None
                 ) -> tuple[X86Layout, tuple]:
    """(layout with the data padding of the shared phase extents, those extents ``Q``)."""
    plan, lay = make_plan(spec), x86_layout(spec, isa=isa)
    qext = [max(p.extent for p in ax.phases) for ax in plan.axes]
    if lay.mode == "w":
        qext[-1] = -(-qext[-1] // lay.lanes) * lay.lanes
    pads = [ax.input_pads(lambda _ap, q=q: q) for ax, q in zip(plan.axes, qext)]
    return (dataclasses.replace(lay, lo=tuple(lo for lo, _ in pads),
                                hi=tuple(hi for _, hi in pads)), tuple(qext))


def _acc_shape(spec, lay, qext) -> list:
    if lay.mode == "oc":
        return [spec.batch, lay.groups, lay.ob] + list(qext) + [lay.lanes]
    return [spec.batch, lay.groups, lay.out_per_group] + list(qext)


def x86_space_compute(spec: ConvTransposeSpec, isa: Optional[VectorISA] = None
                      ) -> tirx.PrimFunc:
    """PrimFunc ``(data, packed_weight, out)``, unscheduled; :func:`schedule_x86_space`
    samples its schedule."""
    plan = make_plan(spec)
    lay, qext = space_layout(spec, isa)
    nd = spec.ndim
    with IRBuilder() as builder:
        with T.prim_func(s_tir=True):
            T.func_name(f"conv{nd}d_transpose_{(isa or X86).name}_space")
            T.func_attr({"tirx.noalias": True})
            _, packed, out, dpad = compute_args_and_padded_data(spec, lay, lay.packed_shape)
            accs = {}
            for phase in plan.phases():
                if phase.has_taps and not phase.is_empty:
                    accs[phase.index] = T.sblock_alloc_buffer(
                        [_i64(d) for d in _acc_shape(spec, lay, qext)], spec.out_dtype)
                    _phase_block(spec, lay, qext, phase, dpad, packed, accs[phase.index])
            _interleave_block(spec, plan, lay, accs, out)
    return builder.get()


def _phase_block(spec, lay, qext, phase, dpad, packed, acc) -> None:
    """``acc[n, g, o, q..., (l)] += dpad[...] * packed[...]`` over input channels and taps."""
    nd = spec.ndim
    taps = phase.num_taps
    spatial = _acc_shape(spec, lay, qext)
    extents = spatial + [lay.in_per_group] + list(taps)
    kinds = "S" * len(spatial) + "R" * (1 + nd)
    with T.grid(*[_i64(e) for e in extents]) as loops:
        with T.sblock(phase.name):
            it = T.axis.remap(kinds, loops, dtype=INDEX_DTYPE)
            vs, ric, js = it[:len(spatial)], it[len(spatial)], it[len(spatial) + 1:]
            T.sblock_attr({PHASE_ANNOTATION: list(phase.index), ROLE: "conv", MODE: lay.mode,
                           LANES: lay.lanes})
            n, g, o, qs = vs[0], vs[1], vs[2], vs[3:3 + nd]
            ic = g * _i64(lay.in_per_group) + ric
            pos = [q + _i64(ap.in_start + lo) - j * _i64(ap.in_step)
                   for q, j, ap, lo in zip(qs, js, phase.axes, lay.lo)]
            tap = (_i64(lay.tap_offsets[phase.index]) + ric * _i64(math.prod(taps))
                   + flat_index(js, taps))
            if lay.mode == "oc":
                x = dpad[tuple([n] + pos + [ic])]
                w = packed[tuple(lay.packed_index(g, o, tap, vs[-1]))]
            else:
                x, w = dpad[tuple([n, ic] + pos)], packed[g, tap, o]
            with T.init():
                T.buffer_store(acc, tirx.const(0, spec.out_dtype), list(vs))
            T.buffer_store(acc, acc[tuple(vs)] + x.astype(spec.out_dtype)
                           * w.astype(spec.out_dtype), list(vs))


def _interleave_block(spec, plan, lay, accs, out) -> None:
    """``out[o = q*s + r] = acc_r[q]`` for every phase ``r`` (0 where ``r`` has no taps).

    Loops follow the output layout (``C`` split into group and channel, each spatial axis
    into ``q`` and phase ``r``), so stores are sequential."""
    nd = spec.ndim
    qmax = [max(p.extent for p in ax.phases) for ax in plan.axes]
    dims = []  # (name, extent) in loop order
    for letter in spec.out_layout:
        if letter == "N":
            dims.append(("n", spec.batch))
        elif letter == "C":
            dims += [("g", lay.groups), ("c", lay.out_per_group)]
        else:
            a = spec.spatial_axes.index(letter)
            dims += [(f"q{a}", qmax[a]), (f"r{a}", plan.axes[a].stride)]
    with T.grid(*[_i64(e) for _, e in dims]) as loops:
        with T.sblock(INTERLEAVE):
            it = dict(zip([d for d, _ in dims], T.axis.remap("S" * len(dims), loops,
                                                             dtype=INDEX_DTYPE)))
            names = [d for d, _ in dims]
            T.sblock_attr({PHASE_ANNOTATION: [], ROLE: INTERLEAVE, PHASE_LOOPS: [
                names.index(f"r{a}") for a in range(nd)]})
            n, g, c = it["n"], it["g"], it["c"]
            qs = [it[f"q{a}"] for a in range(nd)]
            rs = [it[f"r{a}"] for a in range(nd)]
            if lay.mode == "oc":
                aidx = [n, g, tirx.floordiv(c, _i64(lay.lanes))] + qs + [
                    tirx.floormod(c, _i64(lay.lanes))]
            else:
                aidx = [n, g, c] + qs
            val = tirx.const(0, spec.out_dtype)
            for index, acc in reversed(list(accs.items())):
                conds = [r == _i64(p) for r, p, ax in zip(rs, index, plan.axes) if ax.stride > 1]
                val = (tirx.if_then_else(tirx.all(*conds), acc[tuple(aidx)], val) if conds
                       else acc[tuple(aidx)])
            oidx = {letter: q * _i64(ax.stride) + r
                    for letter, q, r, ax in zip(spec.spatial_axes, qs, rs, plan.axes)}
            oidx.update(N=n, C=g * _i64(lay.out_per_group) + c)
            oidx = _index(spec.out_layout, oidx)
            guards = [o < _i64(ax.out_size) for o, ax, q in
                      zip([oidx[spec.out_layout.index(a)] for a in spec.spatial_axes],
                          plan.axes, qmax) if q * ax.stride > ax.out_size]
            store_where(out, val, oidx, guards)


# ---------------------------------------------------------------------------------------------
# The design space.


def _blocks(sch):
    roles = {}
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        role = sch.get(block).annotations.get(ROLE)
        roles.setdefault(None if role is None else str(role), []).append(block)
    return roles


def schedule_x86_space(sch: s_tir.Schedule, target: Target) -> list:
    """The design spaces (one per applicable loop order, :data:`ORDERS`) of an
    :func:`x86_space_compute` PrimFunc: sampled register tiles and unroll step."""
    phases = _blocks(sch).get("conv", [])
    spaces = []
    for order in ORDERS:
        if phases and _order_applies(sch, phases[0], order):
            space = sch.copy()
            schedule_blocks(space, order, target=target)
            spaces.append(space)
    return spaces or [sch]


def _order_applies(sch, block, order: str) -> bool:
    loops = _phase_loops(sch, block)
    if order == "channels_inner":
        return _extent(sch, loops.chan) > 1
    if order == "input_chunks":
        lanes = 1 if loops.vec is None else _extent(sch, loops.vec)
        chan = min(_extent(sch, loops.chan), (OC_MAX if loops.vec is not None else W_MAX)[0])
        return bool(input_chunks(_extent(sch, loops.ric))) and chunked_acc_bytes(
            chan * lanes, [_extent(sch, q) for q in loops.qs]) <= CHUNKED_ACC_BYTES
    return True


def input_chunks(in_channels: int) -> list:
    """The sampled input-channel chunk sizes for ``in_channels`` (those that split it)."""
    return [c for c in INPUT_CHUNKS if c < in_channels and in_channels % c == 0]


def chunked_acc_bytes(channels: int, qext) -> int:
    """Bytes of float32 accumulator one parallel task of the input-chunk order keeps: every
    spatial position (phase extents ``qext``) of its tile of ``channels`` channels, one image
    (the design space sizes it for its largest channel tile, :data:`OC_MAX` vectors)."""
    return channels * math.prod(qext) * 4


def schedule_blocks(sch: s_tir.Schedule, order: str,
                    tile_rule: Optional[Callable[[int, list, list], list]] = None,
                    target: Optional[Target] = None) -> None:
    """Schedule the phase, pad and interleave blocks, the phase loops in ``order`` (one of
    :data:`ORDERS`): tiles from ``tile_rule`` (the untuned :mod:`.x86_interleaved` kernel:
    ``(channel blocks, phase extents, reduction extents [input channels, taps...]) -> [[None,
    channel vectors], [None, rows] or None, [None, columns], input chunk or None]``; a chunk
    puts the loops in the input-chunk order), or, without one, sampled, with a sampled
    auto-unroll step.  ``target``'s ``num-cores`` sizes the input-chunk order's parallel
    loop."""
    blocks = _blocks(sch)
    cores = int((target.attrs.get("num-cores", 0) if target is not None else 0) or 1)
    tiles = None
    for block in blocks.get("conv", []):
        tiles = _schedule_phase(sch, block, order, tiles, tile_rule, cores)
    for block in blocks.get("pad", []):
        lanes = [int(sch.get(b).annotations[LANES]) for b in blocks.get("conv", [])]
        schedule_pad(sch, block, lanes[0] if lanes else 1)
    for block in blocks.get(INTERLEAVE, []):
        _schedule_interleave(sch, block)
    if tile_rule is not None:
        return
    # MetaSchedule's auto-unroll knob (RewriteParallelVectorizeUnroll turns it into pragmas;
    # MutateUnroll mutates it): how many of the taps (and input channels) get unrolled.
    sch.annotate(sch.get_sblock("root"), "meta_schedule.unroll_explicit", sch.sample_categorical(
        list(UNROLL_STEPS), [1.0 / len(UNROLL_STEPS)] * len(UNROLL_STEPS)))


def chunk_batch(sch: s_tir.Schedule, images: int) -> None:
    """Put every block under one loop over chunks of ``images`` images: the padded copy and
    the phases of a chunk run, then its interleave, so the chunk's padded input and phase
    accumulators (which TIR then allocates per chunk) stay in the last-level cache instead of
    streaming the whole batch's through memory between the passes."""
    blocks = _blocks(sch)
    (interleave,) = blocks[INTERLEAVE]
    batch = sch.get_loops(interleave)[0]  # the output layouts start with N
    if images >= _extent(sch, batch):
        return
    chunks, _ = sch.split(batch, [None, images])
    for block in blocks.get("conv", []) + blocks.get("pad", []):
        sch.compute_at(block, chunks, preserve_unit_loops=True)


@dataclasses.dataclass
class _PhaseLoops:
    n: object
    g: object
    chan: object
    qs: list
    vec: object       # oc mode: the lane loop; w mode: None (split from the columns)
    ric: object
    taps: list


def _phase_loops(sch, block) -> _PhaseLoops:
    iter_vars = sch.get(block).iter_vars
    nd = sum(1 for iv in iter_vars if iv.iter_type == 2) - 1  # reduce: ic and one tap per axis
    loops = sch.get_loops(block)[-len(iter_vars):]  # (not the loop over batch chunks)
    oc_mode = str(sch.get(block).annotations[MODE]) == "oc"
    return _PhaseLoops(loops[0], loops[1], loops[2], list(loops[3:3 + nd]),
                       loops[3 + nd] if oc_mode else None, loops[len(iter_vars) - 1 - nd],
                       list(loops[len(iter_vars) - nd:]))


def _extent(sch, loop) -> int:
    return int(sch.get(loop).extent)


def _schedule_phase(sch, block, order: str, tiles, tile_rule=None, cores: int = 1):
    """Tile one phase block; the first one samples the tile sizes (``tiles``; or takes them
    from ``tile_rule``), the others (same loop extents) reuse them."""
    lanes = int(sch.get(block).annotations[LANES])
    loops = _phase_loops(sch, block)
    n, g, chan, qs, ric, taps = loops.n, loops.g, loops.chan, loops.qs, loops.ric, loops.taps
    if loops.vec is not None:
        cols, vec = qs[-1], loops.vec
    else:
        cols, vec = sch.split(qs[-1], [None, lanes])
    rows = qs[-2] if len(qs) >= 2 else None
    maxes = OC_MAX if loops.vec is not None else W_MAX
    if tiles is None and tile_rule is not None:
        tiles = tile_rule(_extent(sch, chan), [_extent(sch, q) for q in qs],
                          [_extent(sch, ric)] + [_extent(sch, t) for t in taps])
    elif tiles is None:
        chunks = input_chunks(_extent(sch, ric)) if order == "input_chunks" else []
        tiles = [sch.sample_perfect_tile(chan, n=2, max_innermost_factor=maxes[0]),
                 sch.sample_perfect_tile(rows, n=2, max_innermost_factor=maxes[1])
                 if rows is not None else None,
                 sch.sample_perfect_tile(cols, n=2, max_innermost_factor=maxes[2]),
                 sch.sample_categorical(chunks, [1.0 / len(chunks)] * len(chunks))
                 if chunks else None]
    chan_o, chan_i = sch.split(chan, tiles[0])
    cols_o, cols_i = sch.split(cols, tiles[2])
    spatial_o, inner = [cols_o], [chan_i, cols_i]
    if rows is not None:
        rows_o, rows_i = sch.split(rows, tiles[1])
        spatial_o, inner = list(qs[:-2]) + [rows_o, cols_o], [chan_i, rows_i, cols_i]
    if tiles[3] is not None:
        # Input chunks outside the spatial tiles: a chunk's weight slice is read once per
        # task, not once per spatial tile.  Spatial tiles join the parallel loop only where
        # the channel tiles give under two tasks per core (each one re-reads the slice).
        outer, tasks = [n, g, chan_o], _extent(sch, n) * _extent(sch, g) * _extent(sch, chan_o)
        while tasks < 2 * cores and spatial_o:
            outer.append(spatial_o.pop(0))
            tasks *= _extent(sch, outer[-1])
        ric_o, ric_i = sch.split(ric, [None, tiles[3]])
        sch.reorder(*outer, ric_o, *spatial_o, ric_i, *taps, *inner, vec)
        ric = ric_o
    else:
        outer = [n, g] + (spatial_o + [chan_o] if order == "channels_inner"
                          else [chan_o] + spatial_o)
        sch.reorder(*outer, ric, *taps, *inner, vec)
    fused = sch.fuse(*outer)
    sch.parallel(fused)
    for loop in inner:
        sch.unroll(loop)
    sch.vectorize(vec)
    # The accumulator tile lives in registers (input-chunk order: the task's accumulators in
    # a buffer of at most CHUNKED_ACC_BYTES, each tile in registers over a chunk); the phase
    # buffer is dense, so writing back touches no other phase's elements.
    write_back = sch.cache_write(block, 0, CPU_TILE_SCOPE)
    sch.reverse_compute_at(write_back, fused, preserve_unit_loops=True)
    sch.vectorize(sch.get_loops(write_back)[-1])
    init = sch.decompose_reduction(block, ric)
    sch.vectorize(sch.get_loops(init)[-1])
    return tiles


def _schedule_interleave(sch, block) -> None:
    loops = sch.get_loops(block)[-len(sch.get(block).iter_vars):]  # (not the batch chunks)
    phase_loops = [int(i) for i in sch.get(block).annotations[PHASE_LOOPS]]
    lead = []
    for i, loop in enumerate(loops):
        if i in phase_loops or math.prod(int(sch.get(lp).extent) for lp in lead) >= 64:
            break
        lead.append(loop)
    for i in phase_loops:
        sch.unroll(loops[i])
    sch.parallel(sch.fuse(*lead) if len(lead) > 1 else lead[0])
