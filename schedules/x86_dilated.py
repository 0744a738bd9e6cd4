"""The x86 / AArch64 default schedule of the untangled dilated conv (``x86.dilated``,
``arm_cpu.dilated``): packed weights, register tiles, padding taps skipped.

The phase plan (:func:`~tvm_deconv.plan.make_dilated_plan`) splits a conv with dilation ``d``
into dense phases: phase ``r`` reads row ``q*in_step + t + in_start`` of input phase
``in_phase`` with the ORIGINAL kernel and writes every ``num_phases``-th output element.  Per
phase a register-tiled GEMM, as :mod:`.x86` does for transposed convs:

* packed weight ``[G, Cog/(OBT*L), chunks, prod(k), chunk, OBT, L]`` (``L`` output channels
  per vector; one chunk's slice contiguous), FoldConstant packs constant weights once;
* a zero-padded channels-last copy of the data, padded only as far as the tiles read;
* register tile ``OBT`` channel vectors x a box of ``tq`` output elements: along each axis
  consecutive positions of one phase or, where phases are short, one position of consecutive
  phases of a run (consecutive output elements, which need the same taps; :func:`_tiles`
  picks by the MACs each shape multiplies).  The input channels are split into chunks whose
  weights (all output channels) stay in L2; the chunk loop runs outside the phases and the
  channel-tile loop innermost, so a chunk's weights serve every output tile and an input
  patch (L1) every channel tile.  Partial sums between chunks go to a dense scratch (vector
  loads/stores);
* padding taps are skipped: each tile loops only over the kernel taps whose input rows exist
  for some position of the tile (:func:`valid_taps`).  At DeepLab's rates most taps of the
  border phases read padding (d=18 on 33x33: 60%); tiles across phases multiply none of them;
* consecutive phases with the same extent and valid taps (a run, :func:`phase_runs`) share one
  loop nest, whose input-phase offset is linear in the phase: ASPP d=18 has 324 phases but 4
  runs (one nest per phase took minutes of LLVM time).

One parallel loop over (batch, group, part of the output tiles, part of the channel tiles) holds
everything; :func:`_parallel_split` picks the parts by the bytes each would stream.
:data:`~.x86.X86` or :data:`~.x86.NEON` (:class:`~.x86.VectorISA`) give the vector width and
the register budget, exactly as for the transposed conv.  Few output channels per group
(``2*Cog < L``, depthwise) decline: vectorising over channels would waste the lanes.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from dataclasses import dataclass
from typing import Optional

from tvm import s_tir, tirx
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as T
from tvm.target import Target

from tvm_deconv.compute import (INDEX_DTYPE, OUT_ELEMWISE_FUSABLE, PHASE_ANNOTATION,
                                 flat_index, pack_signature)
from tvm_deconv.dilated import DILATED_CONV, OP_ANNOTATION
from tvm_deconv.plan import DilatedAxisPhase, DilatedConvSpec, make_dilated_plan

from .common import CPU_TILE_SCOPE, store_where
from .x86 import (NEON, ROLE, TILE, X86, X86_AVX512, VectorISA, _i64, _index, _nest,
                  compute_args_and_padded_data, is_aarch64, lanes_of, schedule_x86,
                  supports_float32, vector_lanes)

L2_CHUNK_BYTES = 384 * 1024  # weights of one input-channel chunk, all output channels (L2)
MIN_PARALLEL = 8             # parallel iterations wanted before phases are split into groups
MIN_PHASE_POSITIONS = 16     # output positions per phase for a split by channels


def valid_taps(ap: DilatedAxisPhase, q_first, q_last, in_size: int, mx=max, mn=min):
    """``[t_lo, t_hi)``: the taps of ``ap`` whose input exists for some ``q`` in
    ``[q_first, q_last]`` (ints, or TIR expressions with ``mx``/``mn`` = ``tirx.max/min``).

    ``ap.input_index(q, t) = (q*in_step + t + in_start)*dilation + in_phase`` with
    ``0 <= in_phase < dilation`` lies in ``[0, in_size)`` iff the input-phase row
    ``q*in_step + t + in_start`` lies in ``[0, rows)``, ``rows = (in_size-1-in_phase)//d + 1``.
    """
    rows = (in_size - 1 - ap.in_phase) // ap.dilation + 1
    lo = mn(mx(-ap.in_start - q_last * ap.in_step, 0), ap.kernel)
    hi = mx(mn(rows - ap.in_start - q_first * ap.in_step, ap.kernel), lo)
    return lo, hi


@dataclass(frozen=True)
class PhaseRun:
    """Consecutive phases of one axis that share a loop nest: phase ``first.phase + i`` for
    ``i < count`` has ``first``'s extent, ``in_start`` and valid taps, and reads input phase
    ``first.in_phase + i*in_phase_step`` (checked against the plan's phases)."""

    first: DilatedAxisPhase
    count: int
    in_phase_step: int


def _rows(ap: DilatedAxisPhase, in_size: int) -> int:
    return (in_size - 1 - ap.in_phase) // ap.dilation + 1


def phase_runs(axis) -> tuple[PhaseRun, ...]:
    """The non-empty phases of a :class:`~tvm_deconv.plan.DilatedAxisPlan` as runs."""
    runs: list[list] = []
    for ap in axis.phases:
        if ap.extent == 0:
            continue
        if runs:
            first, members = runs[-1][0], runs[-1]
            step = members[1].in_phase - first.in_phase if len(members) > 1 else (
                ap.in_phase - first.in_phase)
            if (ap.phase == members[-1].phase + 1 and ap.extent == first.extent
                    and ap.in_start == first.in_start
                    and _rows(ap, axis.in_size) == _rows(first, axis.in_size)
                    and ap.in_phase - members[-1].in_phase == step):
                members.append(ap)
                continue
        runs.append([ap])
    return tuple(PhaseRun(m[0], len(m), m[1].in_phase - m[0].in_phase if len(m) > 1 else 0)
                 for m in runs)


@dataclass(frozen=True)
class DilatedLayout:
    """Every size the pack, the compute and the schedule agree on."""

    mode: str          # "oc" (what x86._pad_block reads: channels-last padded copy)
    lanes: int
    in_per_group: int
    obt: int           # channel vectors per register tile
    ob: int            # channel vectors (out_per_group padded to lanes)
    spans: tuple       # per spatial axis: tiles cover a run's phases (else a phase's positions)
    tq: tuple          # tile extent per spatial axis (phases or positions)
    lo: tuple          # zero padding of the data copy, per spatial axis
    hi: tuple
    chunk: int         # input channels per chunk
    parts: int         # each run's output tiles are split over this many parallel iterations
    oc_parts: int      # ... and its channel tiles over this many (dividing ob // obt)

    @property
    def tile(self) -> tuple:
        return (self.obt,) + self.tq

    @property
    def chunks(self) -> int:
        return -(-self.in_per_group // self.chunk)

    def packed_shape(self, spec: DilatedConvSpec) -> tuple:
        """``[G, OB/OBT, chunks, prod(k), chunk, OBT, L]``: one chunk's slice of a channel
        tile is contiguous (power-of-two strides between its taps thrash L2's sets)."""
        return (spec.groups, self.ob // self.obt, self.chunks, math.prod(spec.kernel), self.chunk,
                self.obt, self.lanes)


def _isa_lanes(isa: VectorISA, spec: DilatedConvSpec) -> int:
    """Output channels per vector: the ISA's width, halved down to 256 bits while most lanes
    would hold no channel (AVX-512 runs 4 to 7 channels per group on ymm vectors)."""
    if isa.bits is not None:
        return lanes_of(isa.bits, spec.dtype)
    lanes = vector_lanes(dtype=spec.dtype)
    while lanes > lanes_of(256, spec.dtype) and 2 * spec.out_per_group < lanes:
        lanes //= 2
    return lanes


def _tiles_of(runs, spans: bool, t: int):
    """The tiles of one axis: ``(run, q_first, q_last, q_read, r_read)``: the tile's real
    positions ``[q_first, q_last]`` (whose taps it multiplies) and the last position and run
    member it reads, padded ones included."""
    for run in runs:
        ext = run.first.extent
        if spans:
            for q in range(ext):
                yield run, q, q, q, -(-run.count // t) * t - 1
        else:
            for q0 in range(0, ext, t):
                yield run, q0, min(q0 + t, ext) - 1, q0 + t - 1, run.count - 1


def _axis_macs(ax, runs, spans: bool, t: int) -> tuple:
    """``(useful, performed)`` tap-position pairs of one axis with tiles of ``t`` along the
    runs' phases (``spans``) or along each phase's positions.  A tile multiplies every tap that
    some position of it needs (:func:`valid_taps`) at all its positions, padded ones included;
    summed per axis because the MACs of a box of phases are a product over the axes."""
    useful = sum(run.count * len(range(*valid_taps(run.first, q, q, ax.in_size)))
                 for run in runs for q in range(run.first.extent))
    performed = sum((r_read + 1) * (q_read - q_first + 1)
                    * len(range(*valid_taps(run.first, q_first, q_last, ax.in_size)))
                    for run, q_first, q_last, q_read, r_read in _tiles_of(runs, spans, t))
    return useful, performed


def _tiles(plan, runs_by_axis: list, budget: int) -> tuple:
    """``(spans, tq)``: per spatial axis, whether the tile covers consecutive phases of a run
    (consecutive output elements, one position of each phase) or consecutive positions of one
    phase, and the tile's extent: the box of at most ``budget`` positions that multiplies the
    fewest padding taps and padded positions, preferring many positions per tile (of the
    boxes within 2% of the best score, the largest).

    Spanning phases keeps every tap of a tile valid where phases hold a few positions each
    (ASPP d=18 on 33x33: 2 per phase, whose two positions need different taps, so a tile of
    both computed all 9 taps where 4 have input)."""
    nd = len(runs_by_axis)
    choices = []
    for runs in runs_by_axis:
        positions = max(r.first.extent for r in runs)
        phases = max(r.count for r in runs)
        choices.append([(False, t) for t in range(1, min(budget, positions) + 1)]
                       + [(True, t) for t in range(2, min(budget, phases) + 1)])
    scored, work = [], {}
    for combo in itertools.product(*choices):
        size = math.prod(t for _, t in combo)
        if size > budget:
            continue
        useful = performed = 1
        for a, (spans, t) in enumerate(combo):
            if (a, spans, t) not in work:
                work[a, spans, t] = _axis_macs(plan.axes[a], runs_by_axis[a], spans, t)
            useful *= work[a, spans, t][0]
            performed *= work[a, spans, t][1]
        # (tie-break: tiles along the last, contiguous axis)
        scored.append((useful / max(performed, 1) * size / (size + 2.0) + 1e-6 * combo[-1][1],
                       size, combo))
    # within 2% of the best, the larger tile: pix2pix's 512 -> 512 conv on 4x4 ran 1.45x
    # slower with 1x2 tiles than with 2x2 (as good on this score: half the rows' taps of a 2x2
    # tile read padding)
    best = max(score for score, _, _ in scored)
    _, _, combo = max((size, score, combo) for score, size, combo in scored
                      if score >= 0.98 * best)
    return tuple(s for s, _ in combo), tuple(t for _, t in combo)


def default_isa() -> VectorISA:
    """:data:`~.x86.X86_AVX512` where the target has AVX-512 (32 vector registers), else
    :data:`~.x86.X86`."""
    return X86_AVX512 if vector_lanes() == lanes_of(512, "float32") else X86


def dilated_layout(spec: DilatedConvSpec, isa: Optional[VectorISA] = None) -> DilatedLayout:
    isa = isa or default_isa()
    plan = make_dilated_plan(spec)
    lanes = _isa_lanes(isa, spec)
    ob = -(-spec.out_per_group // lanes)
    obt = isa.obt(ob)
    runs_by_axis = [phase_runs(ax) for ax in plan.axes]
    spans, tq = _tiles(plan, runs_by_axis, isa.cols(obt))
    # padding: exactly what the tiles read, over every tile of every phase
    lo, hi = [], []
    for ax, runs, along_phases, t in zip(plan.axes, runs_by_axis, spans, tq):
        low, high = 0, ax.in_size - 1
        for run, q_first, q_last, q_read, r_read in _tiles_of(runs, along_phases, t):
            t_lo, t_hi = valid_taps(run.first, q_first, q_last, ax.in_size)
            if t_hi > t_lo:
                low = min(low, run.first.input_index(q_first, t_lo))
                high = max(high, run.first.input_index(q_read, t_hi - 1)
                           + r_read * run.in_phase_step)
        lo.append(-low)
        hi.append(high - (ax.in_size - 1))
    base = spec.batch * spec.groups
    total_parts = -(-MIN_PARALLEL // base) if base < MIN_PARALLEL else 1
    parts, oc_parts = _parallel_split(spec, plan, total_parts, ob // obt)
    cig = spec.in_per_group
    per_channel = math.prod(spec.kernel) * ob // oc_parts * lanes * 4
    chunk = -(-cig // -(-cig * per_channel // L2_CHUNK_BYTES))
    return DilatedLayout("oc", lanes, cig, obt, ob, spans, tq, tuple(lo), tuple(hi), chunk,
                         parts, oc_parts)


def tile_macs(spec: DilatedConvSpec, lay: DilatedLayout) -> int:
    """Multiply-adds the register tiles of ``lay`` perform (padded positions and the padding
    taps a tile multiplies included; output channels counted unpadded)."""
    plan = make_dilated_plan(spec)
    per_axis = [_axis_macs(ax, phase_runs(ax), s, t)[1]
                for ax, s, t in zip(plan.axes, lay.spans, lay.tq)]
    return spec.batch * spec.out_channels * spec.in_per_group * math.prod(per_axis)


def _parallel_split(spec: DilatedConvSpec, plan, total: int, channel_tiles: int) -> tuple:
    """``(parts, oc_parts)``, ``parts * oc_parts == total``: the parallel iterations split the
    output positions (each iteration streams all the weights) or the channel tiles (each
    reads all the data), not both (mixed splits measured slowest on ASPP).  Channels when the
    weights outweigh the data and the phases are big enough that a channel share still reuses
    each input patch: pix2pix's encoder convs ran 1.2-4.5x faster split by channels (512 ->
    512 on 8x8: 5.0 -> 1.1 ms), ASPP d=6 (30 positions per phase) 1.2x; d=18 (3 per phase)
    1.15x slower, so it keeps the position split."""
    weight_bytes = spec.in_per_group * spec.out_per_group * math.prod(spec.kernel)
    data_bytes = spec.in_per_group * math.prod(spec.in_size)
    positions = math.prod(spec.out_size) / math.prod(len(ax.phases) for ax in plan.axes)
    if weight_bytes < data_bytes or positions < MIN_PHASE_POSITIONS:
        return total, 1
    oc_parts = max(o for o in range(1, total + 1) if total % o == 0 and channel_tiles % o == 0)
    return total // oc_parts, oc_parts


# ---------------------------------------------------------------------------------------------
# Pack: weight (any kernel layout) -> [G, OB, prod(k), Icg, L].


def dilated_pack(spec: DilatedConvSpec, isa: Optional[VectorISA] = None) -> tirx.PrimFunc:
    """PrimFunc ``(weight, packed_weight)``; FoldConstant runs it at compile time."""
    lay = dilated_layout(spec, isa)
    sp, cog, cig = spec.spatial_axes, spec.out_per_group, spec.in_per_group
    shape = lay.packed_shape(spec)
    extents = shape[:3] + tuple(spec.kernel) + shape[4:]
    with IRBuilder() as builder:
        with T.prim_func(s_tir=True):
            weight, packed = pack_signature(f"{(isa or X86).name}_dilated_pack_weight", spec,
                                            shape)
            with T.grid(*[_i64(e) for e in extents]) as loops:
                with T.sblock("pack_weight"):
                    it = T.axis.remap("S" * len(extents), loops, dtype=INDEX_DTYPE)
                    g, ot, c, ts, kc, vo, l = it[0], it[1], it[2], it[3:-3], it[-3], it[-2], it[-1]
                    oc = (ot * _i64(lay.obt) + vo) * _i64(lay.lanes) + l
                    ic = c * _i64(lay.chunk) + kc
                    kidx = dict(zip(sp, ts), I=tirx.min(ic, _i64(cig - 1)),
                                O=g * _i64(cog) + tirx.min(oc, _i64(cog - 1)))
                    val = weight[tuple(_index(spec.kernel_layout, kidx))]
                    valid = []
                    if lay.ob * lay.lanes != cog:
                        valid.append(oc < _i64(cog))
                    if lay.chunks * lay.chunk != cig:
                        valid.append(ic < _i64(cig))
                    if valid:
                        val = tirx.if_then_else(tirx.all(*valid), val, tirx.const(0, spec.dtype))
                    T.buffer_store(packed, val, [g, ot, c, flat_index(ts, spec.kernel), kc, vo, l])
    return builder.get()


# ---------------------------------------------------------------------------------------------
# Compute: (data, packed_weight, out), emitted scheduled.


def dilated_compute(spec: DilatedConvSpec, isa: Optional[VectorISA] = None) -> tirx.PrimFunc:
    plan, lay = make_dilated_plan(spec), dilated_layout(spec, isa)
    nd = spec.ndim
    runs = list(itertools.product(*(phase_runs(ax) for ax in plan.axes)))
    outer = [spec.batch, spec.groups, lay.parts, lay.oc_parts]
    with IRBuilder() as builder:
        with T.prim_func(s_tir=True):
            T.func_name(f"conv{nd}d_dilated_{(isa or X86).name}")
            T.func_attr({"tirx.noalias": True, "op_pattern": OUT_ELEMWISE_FUSABLE})
            _, packed, out, dpad = compute_args_and_padded_data(spec, lay,
                                                                lay.packed_shape(spec))
            # partial sums between chunks go to a dense scratch per run of phases (a
            # statement-level allocation: as a block allocation it would be compacted to one
            # tile inside the loops and lost between chunks)
            parts = [T.alloc_buffer([_i64(d) for d in _acc_shape(spec, lay, run)],
                                    spec.out_dtype) if lay.chunks > 1 else None
                     for run in runs]
            total = math.prod(outer)
            with (T.parallel(_i64(0), _i64(total)) if total > 1
                  else T.serial(_i64(total))) as fused:
                # the register tile: allocated inside the parallel loop, one per thread (a
                # root-level tile was shared by the threads and raced)
                acc = T.alloc_buffer([_i64(d) for d in lay.tile + (lay.lanes,)],
                                     spec.out_dtype, scope=CPU_TILE_SCOPE)
                coords, rest = [], fused
                for i, e in enumerate(outer):
                    inner = math.prod(outer[i + 1:])
                    coords.append(tirx.floordiv(rest, _i64(inner)) if e > 1 else _i64(0))
                    rest = tirx.floormod(rest, _i64(inner)) if inner > 1 else rest
                with T.serial(_i64(lay.chunks)) as chunk:
                    for run, partial in zip(runs, parts):
                        _run_nest(plan, lay, run, (acc, partial), coords, chunk, dpad, packed,
                                  out)
    return builder.get()


def _acc_shape(spec, lay: DilatedLayout, run) -> list:
    """[N, G, OB, *phases per axis, *positions per axis, L], the axis each tile runs along
    rounded up to the tile."""
    def up(e, t):
        return -(-e // t) * t
    return ([spec.batch, spec.groups, lay.ob]
            + [up(r.count, t) if s else r.count for r, s, t in zip(run, lay.spans, lay.tq)]
            + [r.first.extent if s else up(r.first.extent, t)
               for r, s, t in zip(run, lay.spans, lay.tq)] + [lay.lanes])


def _split(index, counts: list) -> list:
    """Row-major coordinates of ``index`` over ``counts``."""
    coords, rest = [], index
    for a, c in enumerate(counts):
        below = math.prod(counts[a + 1:])
        coords.append(_i64(0) if c == 1 else tirx.floordiv(rest, _i64(below)) if below > 1
                      else rest)
        rest = tirx.floormod(rest, _i64(below)) if below > 1 else rest
    return coords


def _run_nest(plan, lay: DilatedLayout, run, accs, coords, chunk, dpad, packed, out) -> None:
    """One run of phases (a box of phases, one run per axis) inside the parallel body: loop
    over this part's (phase, output tile) pairs (a contiguous block of them; tiles outer in
    1-d) and, innermost, over its channel tiles (the input patch stays in L1, the chunk's
    weights in L2); per tile zero (first chunk) or reload
    the accumulator, accumulate the chunk over the tile's valid taps, save the partial sums
    (or, after the last chunk, store to the phase's output positions)."""
    spec = plan.spec
    nd, sp = spec.ndim, spec.spatial_axes
    n, g, part, oc_part = coords
    acc, partial = accs
    firsts = [r.first for r in run]
    # per axis: what the tile runs along (the run's phases or the phase's positions) and the rest
    along = [r.count if s else r.first.extent for r, s in zip(run, lay.spans)]
    rest = [r.first.extent if s else r.count for r, s in zip(run, lay.spans)]
    tiles = [-(-e // t) for e, t in zip(along, lay.tq)]
    # 1-d tiles of positions: the run's phases innermost, so a part stores a tile's positions
    # of every phase together (phase r of position q goes to q*P + r: whole output lines at
    # once; phase by phase, each store dirtied a line the other phases filled later: WaveNet
    # 1.5-2.6x).  Tiles of phases already store whole lines.
    tiles_outer = nd == 1 and not lay.spans[0]
    counts = tiles + rest if tiles_outer else rest + tiles
    annot = {PHASE_ANNOTATION: [ap.phase for ap in firsts], TILE: list(lay.tile),
             OP_ANNOTATION: DILATED_CONV}
    cig, cog, lanes = spec.in_per_group, spec.out_per_group, lay.lanes
    sshape = _acc_shape(spec, lay, run)
    inner = ([(2, lay.obt, "unroll")] + [(3 + nd + a, t, "unroll") for a, t in enumerate(lay.tq)]
             + [(3 + 2 * nd, lanes, "vector")])
    total = math.prod(counts)
    per_part = -(-total // lay.parts)
    with contextlib.ExitStack() as stack:
        k = stack.enter_context(T.serial(_i64(per_part)))
        # each part a contiguous block of pairs: neighbouring tiles share input halos and
        # output lines (round-robin parts: pix2pix 64 -> 128 1.19x slower)
        pair = part * _i64(per_part) + k if lay.parts > 1 else k
        if per_part * lay.parts != total:
            stack.enter_context(T.If(pair < _i64(total)))
            stack.enter_context(T.Then())
        pc = _split(pair, counts)
        if tiles_outer:  # (back to phases first)
            pc = pc[nd:] + pc[:nd]
        per_oc_part = lay.ob // lay.obt // lay.oc_parts
        tile_o = stack.enter_context(T.serial(_i64(per_oc_part)))
        if lay.oc_parts > 1:
            tile_o = oc_part * _i64(per_oc_part) + tile_o
        other, t0 = pc[:nd], [i * _i64(t) for i, t in zip(pc[nd:], lay.tq)]

        def spatial(ivs):
            """Block iterators of the tile position ``ivs``: in the run's dense layout, in the
            register tile, and whether it is a real output."""
            alongs = [t + v for t, v in zip(t0, ivs[1:1 + nd])]
            rs = [a if s else o for a, o, s in zip(alongs, other, lay.spans)]
            qs = [o if s else a for a, o, s in zip(alongs, other, lay.spans)]
            cs = [n, g, tile_o * _i64(lay.obt) + ivs[0]] + rs + qs + [ivs[-1]]
            vs = [T.axis.spatial(_i64(e), c, dtype=INDEX_DTYPE) for e, c in zip(sshape, cs)]
            ls = tuple(T.axis.spatial(_i64(e), v, dtype=INDEX_DTYPE)
                       for e, v in zip(lay.tile + (lanes,), ivs))
            conds = [vs[(3 if s else 3 + nd) + a] < _i64(e)
                     for a, (e, t, s) in enumerate(zip(along, lay.tq, lay.spans)) if e % t]
            if lay.ob * lanes != cog:
                conds.append(vs[2] * _i64(lanes) + vs[-1] < _i64(cog))
            return vs, ls, conds

        def out_index(vs):
            # (phases and positions of padded tiles and lanes past Cog are clamped; never
            # stored)
            oidx = {}
            for i, (a, ap, e, t, s) in enumerate(zip(sp, firsts, along, lay.tq, lay.spans)):
                r, q = vs[3 + i], vs[3 + nd + i]
                if e % t:
                    r, q = (tirx.min(r, _i64(e - 1)), q) if s else (r, tirx.min(q, _i64(e - 1)))
                oidx[a] = q * _i64(ap.num_phases) + _i64(ap.phase) + r
            oidx.update(N=vs[0], C=vs[1] * _i64(cog) + tirx.min(
                vs[2] * _i64(lanes) + vs[-1], _i64(cog - 1)))
            return _index(spec.out_layout, oidx)

        # 1. accumulator tile: zero on the first chunk, else the partial sums of the output
        with _nest([(None, e, kind, 1) for _, e, kind in inner]) as ivs:
            with T.sblock("init_" + "_".join(str(ap.phase) for ap in firsts)):
                vs, ls, conds = spatial(ivs)
                T.sblock_attr(dict(annot, **{ROLE: "init"}))
                zero = tirx.const(0, spec.out_dtype)
                if lay.chunks == 1:
                    T.buffer_store(acc, zero, ls)
                else:
                    first = T.axis.opaque(_i64(lay.chunks), chunk, dtype=INDEX_DTYPE) == _i64(0)
                    T.buffer_store(acc, tirx.if_then_else(first, zero, partial[tuple(vs)]), ls)
        # 2. accumulate this chunk over the tile's valid taps (serial, padding taps skipped)
        frames = []
        for a, ap in enumerate(firsts):
            if lay.spans[a]:  # one position of each phase: exactly its taps
                q_first = q_last = other[a]
            else:
                q_first = t0[a]
                q_last = tirx.min(t0[a] + _i64(lay.tq[a] - 1), _i64(ap.extent - 1))
            t_lo, t_hi = valid_taps(ap, q_first, q_last, plan.axes[a].in_size, tirx.max,
                                    tirx.min)
            frames.append(T.serial(_expr(t_lo), _expr(t_hi)))
        c0 = chunk * _i64(lay.chunk)
        ic_extent = (_i64(lay.chunk) if cig % lay.chunk == 0
                     else tirx.min(_i64(lay.chunk), _i64(cig) - c0))
        frames.append(T.serial(_i64(0), ic_extent))
        # positions outer, channel vectors inner: each broadcast input element meets every
        # weight vector at once, so one broadcast is live (channel vectors outer kept all the
        # tile's broadcasts live and LLVM spilled accumulators; as in x86._conv_blocks)
        fma = inner[1:-1] + [inner[0], inner[-1]]
        with contextlib.ExitStack() as reduction:
            rivs = [reduction.enter_context(f) for f in frames]
            with _nest([(None, e, kind, 1) for _, e, kind in fma]) as fivs:
                ivs = _in_tile_order(inner, fma, fivs)
                with T.sblock("conv_" + "_".join(str(ap.phase) for ap in firsts)):
                    vs, ls, _ = spatial(ivs)
                    js = [T.axis.reduce(_i64(kk), t, dtype=INDEX_DTYPE)
                          for kk, t in zip(spec.kernel, rivs[:nd])]
                    ric = T.axis.reduce(_i64(cig), c0 + rivs[-1], dtype=INDEX_DTYPE)
                    chunk_var = T.axis.opaque(_i64(lay.chunks), chunk, dtype=INDEX_DTYPE)
                    T.sblock_attr(dict(annot, **{ROLE: "conv"}))
                    pos = [(q * _i64(ap.in_step) + j + _i64(ap.in_start)) * _i64(ap.dilation)
                           + _i64(ap.in_phase + lo) + r * _i64(run_a.in_phase_step)
                           for q, j, r, ap, run_a, lo in zip(vs[3 + nd:3 + 2 * nd], js,
                                                             vs[3:3 + nd], firsts, run, lay.lo)]
                    x = dpad[tuple([vs[0]] + pos + [vs[1] * _i64(cig) + ric])]
                    w = packed[vs[1], tirx.floordiv(vs[2], _i64(lay.obt)), chunk_var,
                               flat_index(js, spec.kernel), ric - chunk_var * _i64(lay.chunk),
                               tirx.floormod(vs[2], _i64(lay.obt)), vs[-1]]
                    T.buffer_store(acc, acc[ls] + x.astype(spec.out_dtype)
                                   * w.astype(spec.out_dtype), ls)
        # 3. partial sums to the scratch (dense, vector stores) until the last chunk
        if lay.chunks > 1:
            with T.If(chunk < _i64(lay.chunks - 1)):
                with T.Then():
                    with _nest([(None, e, kind, 1) for _, e, kind in inner]) as ivs:
                        with T.sblock("save_" + "_".join(str(ap.phase) for ap in firsts)):
                            vs, ls, _ = spatial(ivs)
                            T.sblock_attr(dict(annot, **{ROLE: "wb"}))
                            T.buffer_store(partial, acc[ls], vs)
        # 4. after the last chunk, the tile to its phase's output positions
        wb = [inner[0], inner[-1]] + inner[1:-1]  # channels outer: NC.. stores share lines
        with contextlib.ExitStack() as last:
            if lay.chunks > 1:
                last.enter_context(T.If(chunk == _i64(lay.chunks - 1)))
                last.enter_context(T.Then())
            with _nest([(None, e, "serial", 1) for _, e, _ in wb]) as wivs:
                ivs = _in_tile_order(inner, wb, wivs)
                with T.sblock("wb_" + "_".join(str(ap.phase) for ap in firsts)):
                    vs, ls, conds = spatial(ivs)
                    T.sblock_attr(dict(annot, **{ROLE: "wb"}))
                    oidx = out_index(vs)
                    T.reads(acc[ls])
                    T.writes(out[tuple(oidx)])
                    store_where(out, acc[ls], oidx, conds)


def _in_tile_order(inner: list, order: list, ivs: list) -> list:
    """Loop variables of a nest emitted in ``order`` (a permutation of ``inner``), listed in
    ``inner``'s order (channel vectors, positions, lanes)."""
    dims = [d for d, _, _ in inner]
    out = [None] * len(inner)
    for (d, _, _), v in zip(order, ivs):
        out[dims.index(d)] = v
    return out


def _expr(value):
    return _i64(value) if isinstance(value, int) else value


# ---------------------------------------------------------------------------------------------
# Schedule and predicates.


def schedule_dilated(sch: s_tir.Schedule, target: Target) -> None:
    """The phase nests come scheduled from :func:`dilated_compute`; the data copy and fused
    epilogues get :func:`~.x86.schedule_x86`'s treatment (same roles)."""
    schedule_x86(sch, target)


def _supports(spec: DilatedConvSpec, isa: VectorISA, name: str) -> Optional[str]:
    why = supports_float32(spec, name)
    if why is not None:
        return why
    lanes = _isa_lanes(isa, spec)
    if 2 * spec.out_per_group < lanes:
        return (f"out_channels/groups={spec.out_per_group} < {lanes}/2: vectorising over output "
                "channels would waste most lanes (depthwise)")
    return None


def supports_x86_dilated(spec: DilatedConvSpec, target: Target) -> Optional[str]:
    if "arm_cpu" in target.keys:
        return "arm_cpu targets get arm_cpu.dilated"
    if target.kind.name != "llvm":
        return f"target kind {target.kind.name} is not llvm"
    return _supports(spec, X86, "x86 dilated")


def supports_neon_dilated(spec: DilatedConvSpec, target: Target) -> Optional[str]:
    if target.kind.name != "llvm" or not is_aarch64(target):
        return "not an AArch64 llvm target (32-bit ARM has 16 NEON registers)"
    return _supports(spec, NEON, "NEON dilated")


def neon_dilated_pack(spec: DilatedConvSpec) -> tirx.PrimFunc:
    return dilated_pack(spec, NEON)


def neon_dilated_compute(spec: DilatedConvSpec) -> tirx.PrimFunc:
    return dilated_compute(spec, NEON)
