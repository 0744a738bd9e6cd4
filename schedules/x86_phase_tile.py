"""The x86 kernel that computes every phase of an output patch in registers (``x86.phase_tile``).

Where every phase of every axis owns one output per input position (``out = s * in``, dilation
1, no phase without taps: DCGAN's k4 s2 p1, CycleGAN's k3 s2 p1 op1, U-Net's k2 s2, HiFi-GAN's
and FCN-8s' k16 s8 p4, FSRCNN's k9 s2 / s3), output ``q*s + r`` of phase ``r`` reads inputs
``q + offset`` (:class:`~tvm_deconv.plan.AxisPhase`'s ``input_offsets``, a few around 0).  So a
patch of input positions spans the same patch of every phase, and this kernel reads the
channels-first input as it is, vector lanes over ``L`` input columns, and writes the output
directly:

* packed weight ``[Cout/OT, Cin, T, OT]`` (``T``: every phase's taps end to end,
  :meth:`~tvm_deconv.plan.TransposedConvPlan.tap_offsets`): per input channel a tile's weights
  are adjacent, broadcast one at a time;
* register tile ``OT`` output channels x ``P`` phases x ``RH`` rows (of the last leading axis)
  x ``V`` vectors of ``L`` columns: per input channel each phase's taps shift the patch's input
  vectors by their offsets and meet ``OT`` broadcasts each (a width that is no multiple of
  ``L``, FCN-8s' 28, runs into zero columns of the panel: computed, not stored);
* the write-back interleaves the ``s`` phases of the last axis: ``s`` accumulators of ``L``
  columns become ``s*L`` consecutive outputs (shuffles for a power-of-two ``s``, two-source
  permutes for the others, e.g. FSRCNN x3's 3; whole-vector stores, no scalar scatter, no
  interleave pass), with the fused epilogues inlined.

One parallel loop over (batch, output-channel group, chunk of input patches): a group's
weights (at most :data:`GROUP_WEIGHT_BYTES`) stay in L2 while its patches stream past.  Each
patch's input, all channels and the halo its taps reach (zeros past the borders), is first
copied contiguous into a per-task panel (in place, consecutive channels are a plane apart,
and the tile's reads of every channel share L1 sets: U-Net ran 0.83x ``x86.interleaved``
without the copy, 1.34x with it); the group's channel tiles then reuse the panel from L2.
Workspace: one panel per core and the packed weight's channel padding.
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
ACCUMULATORS = 24          # accumulator registers of a tile (of 32) ...
# ... where phases have several taps: their shifted input vectors, reused across the tile's
# rows, want registers too.  FSRCNN x3 (9 phases of 9 taps, one output channel) with 24
# accumulators spilled 202 times per 216 FMAs and ran 0.66-0.73 ms; with 16 (12 used),
# 12-49 times per 108 FMAs, 0.43-0.46 ms.  Every other zoo layer's tile uses 16 either way.
MULTI_TAP_ACCUMULATORS = 16
GROUP_WEIGHT_BYTES = 256 << 10   # a parallel task's weights: an L2 share
# Widths that are no multiple of the lanes: the tile runs past the row into zero columns
# of the panel (computed, not stored), where the output row is whole vectors (FCN-8s: 28
# columns of 32, output 8 x 28 = 14 vectors) and this share of the lanes at least is real.
RAGGED_ROW_FILL = 0.75
MIN_TASKS = 8              # parallel tasks at least (and 2 per core of the current target)
# Accumulators a phase gets at least where its taps are several: below it, the phases go
# through the tile in runs (each its own pass over the input channels).  The 3-D U-Net k4
# (8 phases of 8 taps) ran 0.91x / 0.86x x86.interleaved at batch 1 / 16 in one run of 3
# accumulators a phase, 1.03x / 1.06x in two runs of 6 (benchmarks/x86_phase_tile_ab.py,
# results/x86-znver5-phase-tile-3d-k4-ab.json).
MIN_PHASE_ACCUMULATORS = 4


@dataclass(frozen=True)
class PhaseTileLayout:
    """Every size the pack, the compute and the schedule agree on."""

    lanes: int        # L: input columns per vector
    ot: int           # output channels per tile
    phases: int       # P: prod(strides)
    taps: int         # T: every phase's taps
    rh: int           # rows per tile (of the last leading axis; 1 for 1-d)
    v: int            # column vectors per tile (v divides the row's vectors)
    oc_tiles: int     # ceil(Cout / ot)
    group_tiles: int  # channel tiles per parallel task
    patch_chunks: int  # parallel chunks of the input patches
    halo: tuple       # per spatial axis (lowest, highest) input offset, 0 included
    phase_groups: int  # passes over the input channels, each for a run of leading phases

    @property
    def tile(self) -> tuple:
        """The register tile of one pass: ``OT x phases of a group x RH x V x L``."""
        return (self.ot, self.phases // self.phase_groups, self.rh, self.v, self.lanes)

    def packed_shape(self, spec: ConvTransposeSpec) -> tuple:
        return (self.oc_tiles, spec.in_channels, self.taps, self.ot)

    def patch_tile(self, spec: ConvTransposeSpec) -> tuple:
        """Input positions of a patch per spatial axis (leading axes: ``RH`` on the last,
        1 on the others)."""
        lead = [1] * (spec.ndim - 1)
        if lead:
            lead[-1] = self.rh
        return tuple(lead) + (self.v * self.lanes,)

    def panel_shape(self, spec: ConvTransposeSpec) -> tuple:
        """The panel: all input channels x the patch and its halo."""
        return (spec.in_channels,) + tuple(
            t + hi - lo for t, (lo, hi) in zip(self.patch_tile(spec), self.halo))


def _halo(spec: ConvTransposeSpec) -> tuple:
    """Per axis (lowest, highest) input offset the taps read, 0 included: with every phase on
    the input grid, the plan's :meth:`~tvm_deconv.plan.AxisPlan.input_pads` (zeros before,
    after)."""
    return tuple((-before, after) for before, after in
                 (a.input_pads() for a in make_plan(spec).axes))


def _cores() -> int:
    """``num-cores`` of the current target (0: none given)."""
    target = Target.current(allow_none=True)
    return int(target.attrs.get("num-cores", 0) or 0) if target is not None else 0


def _min_tasks() -> int:
    return max(MIN_TASKS, 2 * _cores())


def phase_tile_layout(spec: ConvTransposeSpec) -> PhaseTileLayout:
    """The tile with the fewest loads (input vectors and weight broadcasts) per FMA within
    :func:`_accumulators` (rows and column vectors dividing the input's, so no tile leaves it);
    channel groups within :data:`GROUP_WEIGHT_BYTES`; input patches split in chunks until
    there are :func:`_min_tasks` parallel tasks."""
    plan = make_plan(spec)
    phases, taps = plan.num_phases, plan.tap_offsets()[1]
    halo = _halo(spec)
    rows = spec.in_size[-2] if spec.ndim > 1 else 1
    vectors = _row_vectors(spec)
    groups = _phase_groups(spec, phases, taps)
    tap_share = taps // groups       # taps of a group (whole sub-kernels; exact when uniform)
    lead_halo = math.prod(hi - lo + 1 for lo, hi in halo[:-2]) if spec.ndim > 2 else 1
    x_shifts = halo[-1][1] - halo[-1][0] + 1
    y_halo = halo[-2][1] - halo[-2][0] if spec.ndim > 1 else 0
    best = None
    group_phases = phases // groups
    limit = _accumulators(phases, taps)
    for ot in range(1, limit // group_phases + 1):
        for rh in (d for d in range(1, rows + 1) if rows % d == 0):
            for v in (d for d in range(1, vectors + 1) if vectors % d == 0):
                accs = ot * group_phases * rh * v
                if accs > limit:
                    continue
                loads = lead_halo * (rh + y_halo) * v * x_shifts + ot * tap_share
                waste = -(-spec.out_channels // ot) * ot / spec.out_channels
                key = (loads / (ot * tap_share * rh * v) * waste, -accs)
                if best is None or key < best[0]:
                    best = (key, (ot, rh, v))
    ot, rh, v = best[1]
    oc_tiles = -(-spec.out_channels // ot)
    tile_bytes = spec.in_channels * ot * taps * itemsize(spec.dtype)
    group_tiles = max(d for d in range(1, oc_tiles + 1)
                      if oc_tiles % d == 0 and d * tile_bytes <= max(GROUP_WEIGHT_BYTES,
                                                                     tile_bytes))
    patches = math.prod(spec.in_size[:-1]) // rh * (vectors // v)
    patch_chunks = 1
    tasks = spec.batch * (oc_tiles // group_tiles)
    while tasks * patch_chunks < _min_tasks() and patches % (2 * patch_chunks) == 0:
        patch_chunks *= 2
    return PhaseTileLayout(LANES, ot, phases, taps, rh, v, oc_tiles, group_tiles, patch_chunks,
                           halo, groups)


def _row_vectors(spec: ConvTransposeSpec) -> int:
    """Vectors of :data:`LANES` columns a row of the patches spans: the width rounded up (the
    panel's columns past the width are zeros, their outputs not stored)."""
    return -(-spec.in_size[-1] // LANES)


def _patch_grid(spec: ConvTransposeSpec) -> tuple:
    """The input sizes the patches tile: the width rounded up to whole vectors."""
    return tuple(spec.in_size[:-1]) + (_row_vectors(spec) * LANES,)


def _phase_groups(spec: ConvTransposeSpec, phases: int, taps: int) -> Optional[int]:
    """Runs of leading phases (whole rows of the last axis's phases, which the write-back
    interleaves) the tile takes one pass over the input channels each: the fewest that fit
    :func:`_accumulators`, and where phases have several taps each, the fewest that leave each
    phase :data:`MIN_PHASE_ACCUMULATORS` (else the most there are).  ``None``: no run fits."""
    limit = _accumulators(phases, taps)
    lead = phases // spec.strides[-1]
    fits = [g for g in range(1, lead + 1) if lead % g == 0 and phases // g <= limit]
    if not fits or taps <= phases:
        return fits[0] if fits else None
    roomy = [g for g in fits if limit // (phases // g) >= MIN_PHASE_ACCUMULATORS]
    return roomy[0] if roomy else fits[-1]


def _accumulators(phases: int, taps: int) -> int:
    """Accumulator registers of a tile: :data:`ACCUMULATORS` where each phase has one tap,
    :data:`MULTI_TAP_ACCUMULATORS` where phases have several."""
    return ACCUMULATORS if taps == phases else MULTI_TAP_ACCUMULATORS


def phase_tile_pack(spec: ConvTransposeSpec) -> tirx.PrimFunc:
    """PrimFunc ``(weight, packed_weight)``; FoldConstant runs it at compile time.  Channels
    past ``Cout`` (the last tile's padding) get zeros."""
    lay = phase_tile_layout(spec)
    plan = make_plan(spec)
    offsets, _ = plan.tap_offsets()
    with IRBuilder() as builder:
        with T.prim_func(s_tir=True):
            weight, packed = pack_signature("x86_phase_tile_pack_weight", spec,
                                            lay.packed_shape(spec))
            for phase in plan.phases():
                # the phase's sub-kernel, row-major taps, at its offset on the flat tap axis
                shape = (lay.oc_tiles, spec.in_channels, *phase.num_taps, lay.ot)
                with T.grid(*[_i64(e) for e in shape]) as loops:
                    with T.sblock("pack_" + phase.name):
                        tile_o, ic, *js, o = T.axis.remap("S" * len(shape), loops,
                                                          dtype=INDEX_DTYPE)
                        oc = tile_o * _i64(lay.ot) + o
                        kidx = {a: _i64(ap.tap_start) + j * _i64(ap.tap_step)
                                for a, ap, j in zip(spec.spatial_axes, phase.axes, js)}
                        kidx.update(I=ic, O=tirx.min(oc, _i64(spec.out_channels - 1)))
                        value = weight[tuple(_index(spec.kernel_layout, kidx))]
                        if lay.oc_tiles * lay.ot != spec.out_channels:
                            value = tirx.Select(oc < _i64(spec.out_channels), value,
                                                tirx.const(0, spec.dtype))
                        T.buffer_store(packed, value, [tile_o, ic, _flat_tap(
                            offsets[phase.index], js, phase.num_taps), o])
    return builder.get()


def _flat_tap(offset: int, js: list, counts: tuple):
    """Index on the packed weight's tap axis of the phase's tap ``js`` (row-major)."""
    flat = _i64(0)
    for j, n in zip(js, counts):
        flat = flat * _i64(n) + j
    return _i64(offset) + flat


def phase_tile_compute(spec: ConvTransposeSpec) -> tirx.PrimFunc:
    """PrimFunc ``(data, packed_weight, out)``, emitted scheduled (see the module doc)."""
    lay = phase_tile_layout(spec)
    plan = make_plan(spec)
    offsets, _ = plan.tap_offsets()
    nd, lanes, cin, axes = spec.ndim, lay.lanes, spec.in_channels, spec.spatial_axes
    strides, tile = spec.strides, lay.patch_tile(spec)
    assert all([ap.phase for ap in a.phases] == list(range(a.stride)) for a in plan.axes)
    counts = [n // t for n, t in zip(_patch_grid(spec), tile)]   # patches per axis
    ragged = spec.in_size[-1] % lanes != 0   # the last vector of a row runs past the width
    patches = math.prod(counts)
    chunk_patches = patches // lay.patch_chunks
    outer = [spec.batch, lay.oc_tiles // lay.group_tiles, lay.patch_chunks]
    annot = {PHASE_ANNOTATION: [], TILE: list(lay.tile)}
    sx, lead = strides[-1], math.prod(strides[:-1])
    panel_shape = lay.panel_shape(spec)
    acc_shape = (lay.ot, lay.rh, lay.v, lanes)   # a phase's accumulators
    lows = [lo for lo, _ in lay.halo]
    with IRBuilder() as builder:
        with T.prim_func(s_tir=True):
            T.func_name(f"conv{nd}d_transpose_phase_tile_x86")
            T.func_attr({"tirx.noalias": True, "op_pattern": OUT_ELEMWISE_FUSABLE})
            data = T.arg("data", T.buffer([_i64(d) for d in spec.data_shape], spec.dtype))
            packed = T.arg("packed_weight", T.buffer([_i64(d) for d in lay.packed_shape(spec)],
                                                     spec.dtype))
            out = T.arg("out", T.buffer([_i64(d) for d in spec.out_shape], spec.out_dtype))
            permutes = _permute_indices(sx, lanes)
            if permutes:
                # the permutes' index vectors, filled once per call and loaded as vectors (TIR
                # has no vector constant, and MetaSchedule's analyses reject a Ramp or Shuffle
                # value)
                table = T.alloc_buffer([_i64(len(permutes) * lanes)], "int32")
                with T.sblock("permute_indices"):
                    T.reads()
                    T.writes(table[_i64(0):_i64(len(permutes) * lanes)])
                    T.sblock_attr({ROLE: "permute_indices"})
                    for i, value in enumerate(x for row in permutes for x in row):
                        T.buffer_store(table, tirx.const(value, "int32"), [_i64(i)])
            total = math.prod(outer)
            with (T.parallel(_i64(0), _i64(total)) if total > 1
                  else T.serial(_i64(total))) as fused:
                # per task: the register tile (a buffer per phase: each has one producer, so
                # the epilogues still reverse-inline), its interleaved copy and the patch's
                # input panel
                accs = [T.alloc_buffer([_i64(e) for e in acc_shape], spec.out_dtype,
                                       scope=CPU_TILE_SCOPE) for _ in range(lay.phases)]
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

                    def patch_origin(patch_b):
                        """The patch's first input position per spatial axis."""
                        return [c * _i64(t) for c, t in zip(_split(patch_b, counts), tile)]

                    def copy_block(name, window, cols, col_in, col_panel, vector):
                        """``panel[ic, window..., col_panel(c)] = data[.., col_in(c)]`` over
                        the leading window and ``cols`` columns; zeros past the borders."""
                        loops = ([(None, cin, "serial", 1)]
                                 + [(None, w, "unroll", 1) for w in window]
                                 + [(None, cols, "vector" if vector else "unroll", 1)])
                        with _nest(loops) as its:
                            with T.sblock(name):
                                bn, patch_b = patch_iters()
                                ic, *ws, c = [T.axis.spatial(_i64(e), i, dtype=INDEX_DTYPE)
                                              for e, i in zip([cin, *window, cols], its)]
                                T.sblock_attr({ROLE: "panel"})
                                origin = patch_origin(patch_b)
                                pos = [o + w + _i64(lo) for o, w, lo in zip(origin, ws, lows)]
                                pos.append(col_in(origin[-1], c))
                                # axes whose positions can leave the input: leading axes
                                # with a halo, and the last axis's halo columns
                                guarded = [lo < 0 or hi > 0 for lo, hi in lay.halo[:-1]]
                                guarded.append(not vector)
                                guards = [tirx.all(p >= _i64(0), p < _i64(size)) for p, size, g
                                          in zip(pos, spec.in_size, guarded) if g]
                                clamped = [tirx.max(tirx.min(p, _i64(size - 1)), _i64(0))
                                           if g else p
                                           for p, size, g in zip(pos, spec.in_size, guarded)]
                                value = data[tuple(_index(spec.data_layout, dict(
                                    zip(axes, clamped), N=bn, C=ic)))]
                                if guards:
                                    value = tirx.Select(tirx.all(*guards), value,
                                                        tirx.const(0, spec.dtype))
                                T.buffer_store(panel, value, [ic, *ws, col_panel(c)])

                    window = panel_shape[1:-1]
                    width = lay.v * lanes
                    lo_x, hi_x = lay.halo[-1]
                    # the patch's columns (vectors, guarded on the leading axes only; scalars,
                    # guarded, where rows end within a vector) ...
                    copy_block("panel", window, width, lambda x0, c: x0 + c,
                               lambda c: c - _i64(lo_x), vector=not ragged)
                    # ... and the halo columns left and right of them (scalars, guarded)
                    if lo_x < 0:
                        copy_block("panel_left", window, -lo_x,
                                   lambda x0, c: x0 + _i64(lo_x) + c, lambda c: c, vector=False)
                    if hi_x > 0:
                        copy_block("panel_right", window, hi_x,
                                   lambda x0, c: x0 + _i64(width) + c,
                                   lambda c: c + _i64(width - lo_x), vector=False)
                    with T.serial(_i64(lay.group_tiles)) as tile_in_group:
                        tile_o_l = grp * _i64(lay.group_tiles) + tile_in_group
                        tile_loops = [(None, e, "unroll", 1) for e in (lay.ot, lay.rh, lay.v)]
                        tile_loops.append((None, lanes, "vector", 1))

                        def outer_iters():
                            """Block iterators (batch, patch, channel tile)."""
                            return patch_iters() + [T.axis.spatial(
                                _i64(lay.oc_tiles), tile_o_l, dtype=INDEX_DTYPE)]

                        def spatial(extents, its):
                            return [T.axis.spatial(_i64(e), i, dtype=INDEX_DTYPE)
                                    for e, i in zip(extents, its)]

                        def init(phase, acc):
                            with _nest(tile_loops) as its:
                                with T.sblock("init_" + phase.name):
                                    outer_iters()
                                    ls = spatial(acc_shape, its)
                                    T.sblock_attr(dict(annot, **{ROLE: "init"}))
                                    T.buffer_store(acc, tirx.const(0, spec.out_dtype), ls)

                        def conv(phase, acc, ic_l):
                            """Per input channel, each of the phase's taps: broadcast weights
                            meet the patch's input vectors shifted by the tap's offsets."""
                            taps = [(None, n, "unroll", 1) for n in phase.num_taps]
                            with _nest(taps + tile_loops) as (*js_l, o_l, rh_l, v_l, ln_l):
                                with T.sblock("conv_" + phase.name):
                                    _, _, tile_o = outer_iters()
                                    ic = T.axis.reduce(_i64(cin), ic_l, dtype=INDEX_DTYPE)
                                    js = [T.axis.reduce(_i64(n), j, dtype=INDEX_DTYPE)
                                          for n, j in zip(phase.num_taps, js_l)]
                                    o, rh, v, lane = spatial(acc_shape, (o_l, rh_l, v_l, ln_l))
                                    T.sblock_attr(dict(annot, **{ROLE: "conv"}))
                                    # panel position: patch offset + tap offset - halo
                                    within = [_i64(0)] * (nd - 1) + [v * _i64(lanes) + lane]
                                    if nd > 1:
                                        within[-2] = rh
                                    at = [w + _i64(ap.in_start - lo) - j * _i64(ap.in_step)
                                          for w, ap, lo, j in zip(within, phase.axes, lows, js)]
                                    x = panel[tuple([ic] + at)]
                                    w = packed[tile_o, ic, _flat_tap(
                                        offsets[phase.index], js, phase.num_taps), o]
                                    ls = [o, rh, v, lane]
                                    T.buffer_store(acc, acc[tuple(ls)] + x.astype(spec.out_dtype)
                                                   * w.astype(spec.out_dtype), ls)

                        def interleave(pl):
                            """Per (o, row, vector): leading phase ``pl``'s ``s`` accumulator
                            vectors of the last axis's phases, interleaved into ``s*L``
                            consecutive outputs by :func:`_interleave` (a vectorised loop over
                            the outputs reading the accumulators made LLVM gather the lanes
                            one at a time, and MetaSchedule's flop counter rejects TIR's
                            Shuffle)."""
                            mix = [(None, e, "unroll", 1) for e in (lay.ot, lay.rh, lay.v)]
                            with _nest(mix) as loops:
                                with T.sblock(f"interleave_{pl}"):
                                    outer_iters()
                                    o, rh, v = spatial((lay.ot, lay.rh, lay.v), loops)
                                    T.sblock_attr(dict(annot, **{ROLE: "interleave"}))
                                    row = accs[pl * sx:(pl + 1) * sx]
                                    vectors = [tirx.BufferLoad(acc, [
                                        o, rh, v, tirx.Ramp(_i64(0), _i64(1), lanes)])
                                        for acc in row]
                                    reads = [acc[o, rh, v, _i64(0):_i64(lanes)] for acc in row]
                                    if permutes:
                                        reads.append(table[_i64(0):_i64(len(permutes) * lanes)])
                                    T.reads(*reads)
                                    T.writes(mixed[o, _i64(pl), rh, v, _i64(0):_i64(sx * lanes)])
                                    pieces = _interleave(vectors, spec.out_dtype, lanes,
                                                         table if permutes else None)
                                    piece_lanes = sx * lanes // len(pieces)
                                    for k, piece in enumerate(pieces):
                                        T.buffer_store(mixed, piece, [o, _i64(pl), rh, v, tirx.Ramp(
                                            _i64(k * piece_lanes), _i64(1), piece_lanes)])

                        # per group of leading phases: zero its accumulators, one pass over
                        # the input channels, its rows of phases interleaved into `mixed`
                        phases = list(plan.phases())
                        group_lead = lead // lay.phase_groups
                        for g in range(lay.phase_groups):
                            run = slice(g * group_lead * sx, (g + 1) * group_lead * sx)
                            for phase, acc in zip(phases[run], accs[run]):
                                init(phase, acc)
                            with T.serial(_i64(cin)) as ic_l:
                                for phase, acc in zip(phases[run], accs[run]):
                                    conv(phase, acc, ic_l)
                            for pl in range(g * group_lead, (g + 1) * group_lead):
                                interleave(pl)
                        # the write-back: whole vectors of consecutive outputs (fused epilogues
                        # inline here)
                        wb = [(None, e, "unroll", 1) for e in (lay.ot, lead, lay.rh, lay.v, sx)]
                        with _nest(wb + [(None, lanes, "vector", 1)]) as loops:
                            with T.sblock("wb"):
                                bn, patch_b, tile_o = outer_iters()
                                o, pl, rh, v, h, lane = spatial(
                                    (lay.ot, lead, lay.rh, lay.v, sx, lanes), loops)
                                T.sblock_attr(dict(annot, **{ROLE: "wb"}))
                                col = h * _i64(lanes) + lane
                                oc = tile_o * _i64(lay.ot) + o
                                q = patch_origin(patch_b)
                                if nd > 1:
                                    q[-2] = q[-2] + rh
                                q[-1] = q[-1] + v * _i64(lanes)
                                out_idx = {a: qa * _i64(s) + r for a, qa, s, r in
                                           zip(axes[:-1], q[:-1], strides[:-1],
                                               _split(pl, list(strides[:-1])))}
                                out_idx[axes[-1]] = q[-1] * _i64(sx) + col
                                oidx = _index(spec.out_layout, dict(out_idx, N=bn, C=oc))
                                T.reads(mixed[o, pl, rh, v, col])
                                T.writes(out[tuple(oidx)])
                                conds = ([oc < _i64(spec.out_channels)]
                                         if lay.oc_tiles * lay.ot != spec.out_channels else [])
                                if ragged:
                                    # whole vectors past the output row (its width a multiple
                                    # of the lanes): a condition without the lane
                                    conds.append(q[-1] * _i64(sx) + h * _i64(lanes)
                                                 < _i64(spec.out_size[-1]))
                                store_where(out, mixed[o, pl, rh, v, col], oidx, conds)
    return builder.get()


def _interleave(vectors: list, dtype: str, lanes: int, table=None) -> list:
    """Lane ``i`` of vector ``r`` at ``i*s + r``, for ``s`` vectors of ``lanes``, as the
    consecutive pieces of the ``s*lanes`` outputs: for a power-of-two ``s`` one vector of nested
    ``llvm.vector.interleave2`` calls (the evens interleaved, then the odds, then the two); else
    ``s`` vectors of ``lanes``, each from ``s - 1`` AVX-512 two-source permutes (``vpermi2ps``)
    whose index vectors ``table`` holds (:func:`_permute_indices`; ``interleave3`` aborted
    LLVM 22's x86 backend)."""
    s = len(vectors)
    if s & (s - 1) == 0:
        return [_interleave2_tree(vectors, dtype, lanes)]
    pieces, row = [], 0
    for order in _permute_orders(s, lanes):
        piece = vectors[order[0]]
        for r in order[1:]:
            index = tirx.BufferLoad(table, [tirx.Ramp(_i64(row * lanes), _i64(1), lanes)])
            piece = tirx.call_llvm_pure_intrin(f"{dtype}x{lanes}",
                                               "llvm.x86.avx512.vpermi2var.ps.512",
                                               piece, index, vectors[r])
            row += 1
        pieces.append(piece)
    return pieces


def _interleave2_tree(vectors: list, dtype: str, lanes: int):
    if len(vectors) == 1:
        return vectors[0]
    half = len(vectors) // 2
    evens = _interleave2_tree(vectors[0::2], dtype, lanes)
    odds = _interleave2_tree(vectors[1::2], dtype, lanes)
    return tirx.call_llvm_pure_intrin(f"{dtype}x{2 * half * lanes}", "llvm.vector.interleave2",
                                      evens, odds)


def _permute_orders(s: int, lanes: int) -> list:
    """Per output piece ``k`` (outputs ``k*lanes ..``), the phases its lanes come from, in lane
    order (``s`` <= ``lanes``: every phase)."""
    return [list(dict.fromkeys((k * lanes + j) % s for j in range(lanes))) for k in range(s)]


def _permute_indices(s: int, lanes: int) -> list:
    """The index vectors of the permutes that interleave ``s`` (no power of two) phase vectors,
    in :func:`_interleave`'s order: per piece, the first permute takes the first two phases'
    lanes (output ``p`` = element ``p // s`` of phase ``p % s``; indices ``lanes ..`` pick the
    second source), each further one keeps the lanes so far and takes one more phase's.
    Empty for a power of two."""
    if s & (s - 1) == 0:
        return []
    rows = []
    for k, order in enumerate(_permute_orders(s, lanes)):
        position = [k * lanes + j for j in range(lanes)]
        for step, r in enumerate(order[1:]):
            rows.append([p // s + lanes if p % s == r else (p // s if step == 0 else j)
                         for j, p in enumerate(position)])
    return rows


def schedule_phase_tile(sch: s_tir.Schedule, target: Target) -> None:
    """The tile nest comes scheduled from :func:`phase_tile_compute`; fused epilogues are
    inlined into the write-back where they inline, else run as parallel passes."""
    lanes = vector_lanes(target)
    names = [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))
             if sch.get(b).annotations.get(ROLE) is None]
    for name in inline_epilogues(sch, names):
        _parallel_spatial(sch, sch.get_sblock(name), lanes)


def workspace_bytes(spec: ConvTransposeSpec) -> int:
    """Extra memory: the packed weight's channel padding and, per task in flight (one per
    core of the current target), the input panel (the tiles live in registers)."""
    lay = phase_tile_layout(spec)
    item = itemsize(spec.dtype)
    padding = math.prod(lay.packed_shape(spec)) - math.prod(spec.weight_shape)
    tasks = spec.batch * lay.oc_tiles // lay.group_tiles * lay.patch_chunks
    return (padding + math.prod(lay.panel_shape(spec)) * min(tasks, max(1, _cores()))) * item


def supports_x86_phase_tile(spec: ConvTransposeSpec, target: Target) -> Optional[str]:
    why = supports_x86(spec, target)
    if why is not None:
        return why
    if vector_lanes(target) != LANES:
        return "phase-tile kernel: AVX-512 targets only (measured there)"
    if all(s == 1 for s in spec.strides):
        return "stride 1: no phases to interleave (x86.decomposed writes it contiguously)"
    plan = make_plan(spec)
    if not plan.phases_on_input_grid:
        return ("some phase owns no output per input position (output != stride x input, "
                "a phase without taps, or dilation)")
    taps = plan.tap_offsets()[1]
    if _phase_groups(spec, plan.num_phases, taps) is None:
        return (f"{plan.num_phases} phases: more than the tile's "
                f"{_accumulators(plan.num_phases, taps)} accumulator "
                "registers in every run of them")
    if spec.groups != 1:
        return "grouped conv"
    if spec.data_layout[:2] != "NC" or spec.out_layout[:2] != "NC":
        return f"layouts {spec.data_layout}/{spec.out_layout}: channels-first only"
    sx = spec.strides[-1]
    if sx & (sx - 1) and (LANES != 16 or sx > LANES):
        return (f"stride {sx} on the last axis: the write-back interleaves powers of two, "
                "and other strides up to 16 with AVX-512's 16-lane permutes")
    width = spec.in_size[-1]
    if width % LANES and (width * sx % LANES or width < RAGGED_ROW_FILL * _row_vectors(spec)
                          * LANES):
        return (f"input width {width}: not a multiple of {LANES}, and not one whose output "
                f"row ({sx} x {width}) is, with at least {RAGGED_ROW_FILL:.0%} of the row's "
                "vector lanes real")
    return None
