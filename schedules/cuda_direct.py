"""CUDA direct kernel for transposed convs with few output channels per group (FSRCNN 56->1,
DCGAN 64->3).

The implicit GEMMs of :mod:`.cuda` tile output channels x output pixels; with one output
channel (M = 1) most of their tile is idle (FSRCNN ran at 0.13-0.26x cuDNN fp32 that way).
This kernel is written directly in TIR (thread-bound loops, no schedule search) instead:

* a thread block owns one image (and group) and a ``BY x BX`` tile of the phase grid ``q``
  (the same ``q`` of every phase); its threads ``(ty, tx)`` each own ``vy x vx`` positions of
  ``q`` for **every** phase and every output channel of the group, i.e. a dense
  ``(s*vy) x (s*vx)`` patch of the output, in float registers (:func:`accumulate_dtype`);
* per K step of ``ck`` input channels the block stages the input window of its tile (the
  tile plus the halo every phase's taps reach, from :meth:`AxisPhase.input_span`; zero
  outside the input, so the bounds check runs once per staged element) and the ``ck``
  channels' packed weights (:func:`~tvm_deconv.compute.decomposed_pack`) in shared memory,
  through registers: each thread issues a round of its loads (up to
  :data:`STAGE_REGISTERS`) before storing them, so their latencies overlap; each phase's
  staged taps start 16-byte aligned (``DirectTile.vector_weights``), so nvcc reads a
  thread's weights four at a time;
* each thread copies its ``(vy + halo) x (vx + halo)`` input patch into registers once per
  channel and serves all phases from it: phase ``p``'s tap ``j`` reads patch row
  ``i + in_start - j*in_step - lo`` (the plan's offsets), so ragged phases (k9 s2: 5 and 4
  taps) run exactly their own taps and phases without taps store zeros;
* where the grid leaves the SMs few threads (batch 1), ``kz`` thread groups (``threadIdx.z``)
  share the block's positions and split each K step's channels; their accumulators are summed
  through shared memory before the store;
* optionally (``DirectTile.prefetch``, a tuning-space knob) each thread loads its share of the
  next K step into registers before this step's multiply-adds and stores it after them;
* the store writes each phase's positions ``o = r + q*s`` of the final output (guarded where
  a phase is shorter than the grid).

The tuning space (MetaSchedule's ``ours``): the kernel is written per tile, so its space is
one categorical knob over :func:`candidate_tiles` (thread tiles, block shapes, channel
groups, K-step depth, prefetch, aligned weights), sampled in :func:`schedule_direct_space`
and kept in the trace as an annotation of the ``direct`` block (the tile's numbers,
:func:`encode_tile`, not a list index, so a record never names another tile when the list
changes).  The workload stays the chosen tile's kernel with the spec attached
(:func:`direct_space_compute`); :func:`realize_tile` writes the annotated tile's kernel in
its place before every build of a candidate or record.  The cost model therefore sees the
same loop nest for every tile: the search is a random one over the list (37-62 tiles on the
zoo's direct layers).

IR in: a :class:`~tvm_deconv.plan.ConvTransposeSpec` (2-d, any layouts, groups, dilation,
output_padding; float32/float16/float64, float16 accumulating in float32).  IR out: an
already scheduled PrimFunc ``(data, packed_weight, out)`` whose one root block holds the
kernel, marked opaque (epilogues run as their own elementwise kernels, as for the per-phase
GEMMs) — :func:`schedule_cuda_direct` only checks that.  ``bind=False`` gives the same loop
nest with serial loops and global scratch buffers, which LLVM runs (CPU tests): every
emulated thread then stages the whole window for itself, which is redundant but exact.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass

from tvm import s_tir, tirx
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as T
from tvm.target import Target

from tvm_deconv.compute import (PHASE_ANNOTATION, _i64, _index, accumulate_dtype,
                                 decomposed_packed_shape, flat_index)
from tvm_deconv.plan import ConvTransposeSpec, make_plan

from .common import store_where, supports_dtype
from .cuda import OP_PATTERN_OPAQUE, _num_sms
from .x86 import itemsize

DIRECT_ANNOTATION = "tvm_deconv.cuda_direct"
TILE_ANNOTATION = "tvm_deconv.cuda_direct_tile"  # a tuning record's tile (encode_tile)
SPEC_ATTR = "tvm_deconv.cuda_direct_spec"        # the ours-space workload's spec, as JSON
# Output channels per group this kernel takes (each thread holds all of them).  Measured on
# the H200 (benchmarks/results/h200-fsrcnn-direct-threshold.json): a k9 s2 56->2 layer ran
# 1.47x / 0.76x cuDNN fp32 direct (batch 1 / 64) against 0.47x / 0.12x as implicit GEMM, and
# 56->4 1.12x / 0.73x against 0.48x / 0.10x.  DCGAN 64->3 (k4 s2) ran 3x slower direct there,
# on a 16-block grid; with blocks of 8 positions and 8 channel groups (choose_tile) it runs
# 0.0059 ms direct against 0.0117 ms in its phase-batched GEMM at batch 1 and 0.041 against
# 0.044 ms at batch 64 (H100, benchmarks/results/h100-direct-dcgan3-ab-s28.json).
DIRECT_MAX_OUT_CHANNELS = 4
# Accumulators per thread the tile chooser allows (phases x channels x vy x vx floats).
MAX_ACCUMULATORS = 72
# Unrolled multiply-adds per input channel of one thread (code size of the inner body).
MAX_UNROLLED_FMAS = 2048
SHARED_BYTES = 40 * 1024


@dataclass(frozen=True)
class DirectTile:
    """Per-thread positions ``vy x vx`` of the phase grid, threads ``ty x tx`` per block,
    ``ck`` input channels per K step, shared by ``kz`` groups of threads (``threadIdx.z``:
    each group the same positions, every ``kz``-th staged channel; summed through shared
    memory at the end); with ``prefetch``, each thread loads its share of the next K step's
    staging into registers before this step's multiply-adds and stores it to shared memory
    after them (one block barrier less exposed to the loads' latency per step); with
    ``vector_weights``, each phase's staged taps start on a 16-byte boundary
    (:func:`_tap_layout`), so nvcc reads a thread's weights four at a time (``ld.shared.v4``)."""

    vy: int
    vx: int
    ty: int
    tx: int
    ck: int
    kz: int = 1
    prefetch: bool = False  # load the next K step into registers during this one's FMAs
    vector_weights: bool = False  # phases' taps 16-byte aligned in shared memory (_tap_layout)

    @property
    def threads(self) -> int:
        return self.kz * self.ty * self.tx


@dataclass(frozen=True)
class _Geometry:
    """Per-axis extents the kernel derives from the plan (index 0: H, 1: W)."""

    grid: tuple      # q extent of the phase grid (the longest phase)
    lo: tuple        # lowest input offset (input index - q) any live tap reads
    hi: tuple        # highest
    live: tuple      # per axis: the phases with taps and outputs

    @property
    def halo(self) -> tuple:
        return tuple(h - l for l, h in zip(self.lo, self.hi))


def _geometry(spec: ConvTransposeSpec) -> _Geometry:
    plan = make_plan(spec)
    grid, lo, hi, live = [], [], [], []
    for ax in plan.axes:
        phases = [p for p in ax.phases if p.num_taps > 0 and p.extent > 0]
        spans = [p.input_span(1) for p in phases] or [(0, 0)]
        grid.append(max(p.extent for p in ax.phases))
        lo.append(min(s[0] for s in spans))
        hi.append(max(s[1] for s in spans))
        live.append(tuple(phases))
    return _Geometry(tuple(grid), tuple(lo), tuple(hi), tuple(live))


def _taps_per_channel(spec: ConvTransposeSpec) -> int:
    return make_plan(spec).tap_offsets()[1]


def _accumulators(spec: ConvTransposeSpec, tile: DirectTile) -> int:
    """Accumulators per thread: every live phase x channel of the group x position."""
    return len(_live_phases(spec)) * spec.out_per_group * tile.vy * tile.vx


def _live_phases(spec: ConvTransposeSpec) -> list:
    return [ph for ph in make_plan(spec).phases() if not ph.is_empty]


def _tap_layout(spec: ConvTransposeSpec, aligned: bool) -> tuple[dict, int]:
    """({phase index: first tap}, taps a channel) of the staged weights: the packed weight's
    (:meth:`~tvm_deconv.plan.TransposedConvPlan.tap_offsets`), or with ``aligned`` each
    phase's start rounded up to a multiple of ``4 / gcd(4, output channels)`` taps (16 bytes
    of float32; the gap is never read)."""
    return make_plan(spec).tap_offsets(4 // math.gcd(4, spec.out_per_group) if aligned else 1)


def _shared_bytes(spec: ConvTransposeSpec, tile: DirectTile) -> int:
    geo = _geometry(spec)
    window = (tile.ty * tile.vy + geo.halo[0]) * (tile.tx * tile.vx + geo.halo[1])
    taps = _tap_layout(spec, tile.vector_weights)[1]
    staged = tile.ck * (window + taps * spec.out_per_group)
    partials = tile.threads * _accumulators(spec, tile) if tile.kz > 1 else 0
    return (staged + partials) * itemsize(accumulate_dtype(spec))


# Positions per thread (vy, vx) and threads (ty, tx) before fitting.  Measured on the H100
# (benchmarks/results/h100-direct-rule-ab-s31.json): with 2x2 positions a thread (each staged
# weight feeds four multiply-adds) FSRCNN x2 / x3 at batch 64 ran 0.272 / 0.379 ms on 8x16
# threads against 0.367 / 0.461 with 1x2; at batch 1 (4x4 threads, 8 channel groups)
# 0.0107 / 0.0122 against 0.0200 / 0.0201 with 1x1 on 4x16 threads.
START_TILE = (2, 2, 8, 16)
# Where the grid leaves fewer than MIN_THREADS_PER_SM threads per SM (batch 1: latency-bound),
# up to MAX_CHANNEL_GROUPS thread groups split each K step's channels (DirectTile.kz).  On
# the H100 at batch 1, 4 groups ran FSRCNN x3 2.18x and x2 1.23x faster than 1 (0.025 /
# 0.022 ms), x2 in float16 0.064 -> 0.021 ms (benchmarks/results/h100-direct-kz-ab-s20.json,
# h100-direct-kz-x3-ab-s20.json); DCGAN 64->3 on 32 blocks of 2x4 positions ran 1.3x faster
# with 8 than with 4 (h100-direct-dcgan3-ab-s28.json).
MIN_THREADS_PER_SM = 256
MAX_CHANNEL_GROUPS = 8
# Thread positions (ty x tx) per block, at least: a short grid halves the threads down to it
# (the channel groups then multiply the threads).  DCGAN 64->3 at batch 1 ran 0.0059 ms on
# 2x4 positions x 8 groups, 0.0065 on 2x2, 0.0088-0.0092 on 16-32 (H100).
MIN_BLOCK_POSITIONS = 8


def choose_tile(spec: ConvTransposeSpec, num_sms: int = 132) -> DirectTile:
    """Start at :data:`START_TILE`; fit the grid (no tile much wider than the phase grid) and
    the accumulator budget; while the grid has fewer blocks than the chip has SMs (batch 1)
    halve the threads (ty first down to 64, then the larger of ty / tx down to
    :data:`MIN_BLOCK_POSITIONS`), then the per-thread tile; then channel groups ``kz`` up to
    :data:`MAX_CHANNEL_GROUPS` while the grid has fewer than :data:`MIN_THREADS_PER_SM`
    threads per SM; ``ck`` from :func:`with_channel_step`; 16-byte aligned weights where
    that changes the layout (it only removes shared loads)."""
    geo = _geometry(spec)
    vy, vx, ty, tx = START_TILE
    while tx > 1 and tx * vx >= 2 * geo.grid[1]:
        tx, ty = tx // 2, ty * 2
    while ty > 1 and ty * vy >= 2 * geo.grid[0]:
        ty //= 2
    while vx > 1 and vx >= 2 * geo.grid[1]:
        vx //= 2
    while vy > 1 and vy >= 2 * geo.grid[0]:
        vy //= 2

    def blocks():
        return _blocks(spec, geo, vy, vx, ty, tx)

    while (_accumulators(spec, DirectTile(vy, vx, ty, tx, 1)) > MAX_ACCUMULATORS
           and vy * vx > 1):
        vx, vy = (vx // 2, vy) if vx >= vy else (vx, vy // 2)
    while blocks() < num_sms:
        if ty * tx > 64:
            ty, tx = (ty // 2, tx) if ty >= 2 else (ty, tx // 2)
        elif ty * tx > MIN_BLOCK_POSITIONS:
            ty, tx = (ty // 2, tx) if ty >= tx else (ty, tx // 2)
        elif vy * vx > 1:
            vx, vy = (vx // 2, vy) if vx >= vy else (vx, vy // 2)
        else:
            break
    tile = with_channel_step(spec, vy, vx, ty, tx, _channel_groups(blocks() * ty * tx, num_sms))
    return dataclasses.replace(tile, vector_weights=_aligned_differs(spec))


def _aligned_differs(spec: ConvTransposeSpec) -> bool:
    """Whether 16-byte aligned weights change the staged layout (not where every phase's taps
    already start aligned, e.g. 4-tap phases)."""
    return _tap_layout(spec, True) != _tap_layout(spec, False)


def _blocks(spec: ConvTransposeSpec, geo: _Geometry, vy: int, vx: int, ty: int, tx: int) -> int:
    return (spec.batch * spec.groups * -(-geo.grid[0] // (ty * vy))
            * -(-geo.grid[1] // (tx * vx)))


def _channel_groups(positions: int, num_sms: int) -> int:
    """Thread groups ``kz`` for a grid of ``positions`` thread positions: doubled up to
    :data:`MAX_CHANNEL_GROUPS` while the grid has fewer than :data:`MIN_THREADS_PER_SM`
    threads per SM."""
    kz = 1
    while kz < MAX_CHANNEL_GROUPS and positions * kz < num_sms * MIN_THREADS_PER_SM:
        kz *= 2
    return kz


# Input channels per K step, at most (with_channel_step); the tuning space also offers up to
# DEEP_CHANNEL_STEP where the grid is short (fewer K steps, so fewer staging latencies
# and block barriers in a row).  Not all channels in one step: FSRCNN x2 at batch 1 staging
# its 56 channels at once (57-86 KB of dynamic shared memory) ran 0.0151-0.0168 ms against
# 0.0102 in 7 steps (H100, benchmarks/results/h100-direct-one-step-ab-s32.json): nothing
# overlaps that staging, and the kernel is bound by issue latency, not by the steps
# (h100-direct-ncu-s32.txt).
CHANNEL_STEP = 8
DEEP_CHANNEL_STEP = 32


def with_channel_step(spec: ConvTransposeSpec, vy: int, vx: int, ty: int, tx: int,
                      kz: int = 1, max_ck: int = CHANNEL_STEP) -> DirectTile:
    """The tile with ``ck``: the largest divisor of the input channels per group (at most
    ``max_ck``, a multiple of ``kz``) whose staged window, weights and partial sums fit
    :data:`SHARED_BYTES`; else fewer channel groups ``kz``, down to 1 (and ``ck`` 1)."""
    ipg = spec.in_per_group
    while True:
        for ck in range(min(max_ck, ipg), 0, -1):
            tile = DirectTile(vy, vx, ty, tx, ck, kz)
            if ipg % ck == 0 and ck % kz == 0 and _shared_bytes(spec, tile) <= SHARED_BYTES:
                return tile
        if kz == 1:
            return DirectTile(vy, vx, ty, tx, 1)
        kz //= 2


def _unrolled_fmas(spec: ConvTransposeSpec, tile: DirectTile) -> int:
    """Multiply-adds per input channel of one thread (all unrolled)."""
    return _taps_per_channel(spec) * spec.out_per_group * tile.vy * tile.vx


# The tuning space's per-thread positions (vy x vx) and block positions (ty x tx): register
# blocking from 1 to 8 positions (each staged weight feeds vy * vx multiply-adds), blocks from
# MIN_BLOCK_POSITIONS to 128 positions.
SPACE_THREAD_TILES = ((1, 1), (1, 2), (2, 2), (2, 4))
SPACE_BLOCK_SHAPES = ((2, 4), (4, 4), (4, 8), (4, 16), (8, 16))
MAX_THREADS_PER_BLOCK = 1024


def candidate_tiles(spec: ConvTransposeSpec, num_sms: int = 132) -> list[DirectTile]:
    """The tuning space: :func:`choose_tile`'s tile first, then each thread tile of
    :data:`SPACE_THREAD_TILES` on each block shape of :data:`SPACE_BLOCK_SHAPES` no wider
    than twice the phase grid, with the channel groups ``kz`` that fill the chip
    (:func:`_channel_groups`) and twice as many (fewer where the channels or shared memory do
    not divide among them: :func:`with_channel_step`); where ``kz > 1`` (a short grid,
    latency-bound) also the tile with ``prefetch`` and the tile with up to
    :data:`DEEP_CHANNEL_STEP` channels a K step, halving ``kz`` until more than
    :data:`CHANNEL_STEP` divide among the groups.  All with ``vector_weights`` where it
    changes the layout, as the rule's (it only removes shared loads).  Only tiles within the
    accumulator, unrolled-code, shared-memory and thread budgets, each once."""
    geo = _geometry(spec)
    tiles = [choose_tile(spec, num_sms)]
    aligned = _aligned_differs(spec)

    def add(tile: DirectTile) -> None:
        tile = dataclasses.replace(tile, vector_weights=aligned)
        if (tile not in tiles and tile.threads <= MAX_THREADS_PER_BLOCK
                and _accumulators(spec, tile) <= MAX_ACCUMULATORS
                and _unrolled_fmas(spec, tile) <= MAX_UNROLLED_FMAS
                and _shared_bytes(spec, tile) <= SHARED_BYTES):
            tiles.append(tile)

    for vy, vx in SPACE_THREAD_TILES:
        for ty, tx in SPACE_BLOCK_SHAPES:
            if ty * vy >= 2 * geo.grid[0] or tx * vx >= 2 * geo.grid[1]:
                continue
            kz = _channel_groups(_blocks(spec, geo, vy, vx, ty, tx) * ty * tx, num_sms)
            for groups in sorted({kz, min(2 * kz, MAX_CHANNEL_GROUPS)}):
                add(with_channel_step(spec, vy, vx, ty, tx, groups))
            if kz == 1:
                continue
            shallow = with_channel_step(spec, vy, vx, ty, tx, kz)
            if spec.in_per_group > shallow.ck:  # (prefetch needs a next K step)
                add(dataclasses.replace(shallow, prefetch=True))
            deep_kz = kz
            while deep_kz > 1:
                deep = with_channel_step(spec, vy, vx, ty, tx, deep_kz, DEEP_CHANNEL_STEP)
                if deep.ck > CHANNEL_STEP:
                    add(deep)
                    break
                deep_kz //= 2
    return tiles


# encode_tile's fields: (name, decimal digits, stored as log2) -- sample_categorical keeps
# int32 values, so the power-of-two fields go by their exponent.
_TILE_DIGITS = (("flags", 1, False), ("vy", 1, True), ("vx", 1, True), ("ty", 1, True),
                ("tx", 1, True), ("ck", 2, False), ("kz", 1, True))


def encode_tile(tile: DirectTile) -> int:
    """A tile as one integer of up to 8 decimal digits: ``flags`` (1 prefetch + 2
    vector_weights), then log2 of ``vy vx ty tx``, ``ck`` (2 digits) and log2 ``kz``: 1x2
    positions on 8x16 threads, 8 channels a step, 1 group, no flags is ``0_0_1_3_4_08_0``
    (so 134080)."""
    text = ""
    for name, digits, log2 in _TILE_DIGITS:
        value = (int(tile.prefetch) + 2 * int(tile.vector_weights) if name == "flags"
                 else getattr(tile, name))
        if log2:
            if value < 1 or value & (value - 1):
                raise ValueError(f"{tile}: {name} = {value} is not a power of two: it has no "
                                 "tile code")
            value = value.bit_length() - 1
        if value >= 10 ** digits or (name == "ck" and value < 1):
            raise ValueError(f"{tile}: {name} = {value} has no tile code")
        text += f"{value:0{digits}d}"
    return int(text)


def decode_tile(code: int) -> DirectTile:
    """The tile of :func:`encode_tile`'s ``code``; a ValueError naming the fix for any other
    number (a corrupt tuning record)."""
    text = f"{int(code):08d}"
    fields, at = {}, 0
    for name, digits, log2 in _TILE_DIGITS:
        value, at = int(text[at:at + digits]), at + digits
        fields[name] = 1 << value if log2 else value
    flags = fields.pop("flags")
    if len(text) != 8 or flags > 3 or fields["ck"] == 0:
        raise ValueError(f"{code} is not a direct-kernel tile code (8 digits at most, flags "
                         "0-3, ck > 0): the tuning record naming it is corrupt; delete its log "
                         "or tune again")
    return DirectTile(**fields, prefetch=bool(flags & 1), vector_weights=bool(flags & 2))


def tile_label(tile: DirectTile) -> str:
    """``vy x vx x ty x tx x kz x ck``, then ``p`` with ``prefetch`` and ``v`` with
    ``vector_weights``: ``1x2x8x16x1x8``, ``2x2x4x4x8x8pv``."""
    return (f"{tile.vy}x{tile.vx}x{tile.ty}x{tile.tx}x{tile.kz}x{tile.ck}"
            + ("p" if tile.prefetch else "") + ("v" if tile.vector_weights else ""))


def tile_of_label(spec: ConvTransposeSpec, label: str) -> DirectTile:
    """The tile of a label (A/B scripts' ``--tiles``): its numbers are
    :func:`with_channel_step`'s arguments ``vy x vx x ty x tx [x kz [x max ck]]``, so ``ck``
    may be left to it; then ``p`` turns on ``prefetch`` and ``v`` ``vector_weights``."""
    numbers = label.rstrip("pv")
    flags = label[len(numbers):]
    numbers = numbers.split("x")
    if (flags not in ("", "p", "v", "pv") or not 4 <= len(numbers) <= 6
            or not all(n.isdigit() and int(n) > 0 for n in numbers)):
        raise ValueError(f"tile {label!r}: expected vy x vx x ty x tx [x kz [x max ck]][p][v], "
                         "positive integers, e.g. 2x2x4x4x8 or 1x2x8x16x1x8pv")
    tile = with_channel_step(spec, *map(int, numbers))
    return dataclasses.replace(tile, prefetch="p" in flags, vector_weights="v" in flags)


def direct_space_compute(spec: ConvTransposeSpec) -> tirx.PrimFunc:
    """The tuning space's workload: :func:`cuda_direct_compute` with ``spec`` attached (the
    space and :func:`realize_tile` need it)."""
    fields = dataclasses.asdict(spec)
    return cuda_direct_compute(spec).with_attr(SPEC_ATTR, json.dumps(fields, sort_keys=True))


def _spec_of(func: tirx.PrimFunc) -> ConvTransposeSpec:
    fields = json.loads(str(func.attrs[SPEC_ATTR]))
    return ConvTransposeSpec(**{k: tuple(v) if isinstance(v, list) else v
                                for k, v in fields.items()})


def schedule_direct_space(sch: s_tir.Schedule, target: Target) -> list:
    """One design: a categorical sample over :func:`candidate_tiles`' codes, annotated on the
    ``direct`` block (IR in: :func:`direct_space_compute`'s PrimFunc; out: the same with the
    annotation)."""
    spec = _spec_of(sch.mod["main"])
    codes = [encode_tile(t) for t in candidate_tiles(spec, _num_sms(target))]
    choice = sch.sample_categorical(codes, [1.0 / len(codes)] * len(codes))
    sch.annotate(sch.get_sblock("direct"), TILE_ANNOTATION, choice)
    return [sch]


def realize_tile(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """``func`` itself, unless it is the tuning space's workload with a tile annotated: then
    the direct kernel of that tile, with ``func``'s attributes."""
    if func.attrs is None or SPEC_ATTR not in func.attrs:
        return func
    sch = s_tir.Schedule(func)
    code = sch.get(sch.get_sblock("direct")).annotations.get(TILE_ANNOTATION)
    if code is None:
        return func
    kernel = direct_conv_transpose(_spec_of(func), decode_tile(int(code)))
    for key, value in func.attrs.items():
        kernel = kernel.with_attr(key, value)
    return kernel


def supports_cuda_direct(spec: ConvTransposeSpec, target: Target) -> str | None:
    """Why-not string, or ``None`` when the direct kernel takes the call."""
    why = supports_dtype(spec, target)
    if why is not None:
        return why
    if spec.ndim != 2:
        return f"the direct kernel is 2-d only; this conv is {spec.ndim}-d"
    if spec.out_per_group > DIRECT_MAX_OUT_CHANNELS:
        return (f"{spec.out_per_group} output channels per group > {DIRECT_MAX_OUT_CHANNELS}: "
                "the implicit GEMM fills its channel tile")
    tile = choose_tile(spec)
    fmas = _unrolled_fmas(spec, tile)
    if fmas > MAX_UNROLLED_FMAS:
        return f"{fmas} unrolled multiply-adds per input channel > {MAX_UNROLLED_FMAS}"
    if _shared_bytes(spec, tile) > SHARED_BYTES:
        return "the staged input window of one channel exceeds shared memory"
    return None


def _loop(extent: int, thread: str | None, bind: bool):
    if thread is not None and bind:
        return T.thread_binding(_i64(extent), thread=thread)
    return T.serial(_i64(extent))


def direct_conv_transpose(spec: ConvTransposeSpec, tile: DirectTile | None = None,
                          bind: bool = True) -> tirx.PrimFunc:
    """The direct kernel's PrimFunc ``(data, packed_weight, out)`` (see the module doc)."""
    tile = tile or choose_tile(spec)
    plan = make_plan(spec)
    geo = _geometry(spec)
    packed_offsets, ntaps = plan.tap_offsets()
    offsets, staged_taps = _tap_layout(spec, tile.vector_weights)
    acc_dtype = accumulate_dtype(spec)
    shared, local = ("shared", "local") if bind else ("global", "global")
    vy, vx, ty_n, tx_n, ck, kz = tile.vy, tile.vx, tile.ty, tile.tx, tile.ck, tile.kz
    by_n = -(-geo.grid[0] // (ty_n * vy))
    bx_n = -(-geo.grid[1] // (tx_n * vx))
    win = (ty_n * vy + geo.halo[0], tx_n * vx + geo.halo[1])
    patch = (vy + geo.halo[0], vx + geo.halo[1])
    opg, ipg, groups = spec.out_per_group, spec.in_per_group, spec.groups
    phases = _live_phases(spec)
    nacc = _accumulators(spec, tile)
    nthreads = tile.threads
    sp = spec.spatial_axes
    zero = tirx.const(0, acc_dtype)

    def cooperative(total: int, body, first: int, count: int) -> None:
        """``body(e, f, t)``, unrolled, for thread ``t``'s (linear) elements ``e = (first +
        f) * threads + t < total`` of the block's ``total``, ``f`` in range(count)."""
        with T.unroll(_i64(count)) as f:
            with _loop(ty_n, "threadIdx.y", bind) as cty, \
                    _loop(tx_n, "threadIdx.x", bind) as ctx, \
                    _loop(kz, "threadIdx.z", bind) as ctz:
                t = (ctz * _i64(ty_n) + cty) * _i64(tx_n) + ctx
                e = (f + _i64(first)) * _i64(nthreads) + t
                if (first + count) * nthreads > total:
                    with T.If(e < _i64(total)):
                        with T.Then():
                            body(e, f, t)
                else:
                    body(e, f, t)

    with IRBuilder() as builder:
        with T.prim_func(s_tir=True):
            T.func_name(f"conv{spec.ndim}d_transpose_direct")
            T.func_attr({"tirx.noalias": True, "op_pattern": OP_PATTERN_OPAQUE})
            data = T.arg("data", T.buffer([_i64(d) for d in spec.data_shape], spec.dtype))
            weight = T.arg("weight", T.buffer([_i64(d) for d in decomposed_packed_shape(spec)],
                                              spec.dtype))
            out = T.arg("out", T.buffer([_i64(d) for d in spec.out_shape], spec.out_dtype))
            # An explicit root block over the kernel's block (s_tir takes a lone top-level
            # block for the root, and the pipeline tags the root's children).
            with T.sblock("root"), T.sblock("direct"):
                T.reads()
                T.writes()
                T.sblock_attr({PHASE_ANNOTATION: [-1, -1], DIRECT_ANNOTATION: 1})
                with _loop(spec.batch * groups, "blockIdx.z", bind) as bz, \
                        _loop(by_n, "blockIdx.y", bind) as by, \
                        _loop(bx_n, "blockIdx.x", bind) as bx, \
                        _loop(ty_n, "threadIdx.y", bind) as ty, \
                        _loop(tx_n, "threadIdx.x", bind) as tx:
                    # Allocated outside the threadIdx.z loop: on the CPU (serial loops) the
                    # last channel group then finds every group's partial sums in it.
                    partials = T.alloc_buffer([_i64(kz), _i64(nacc), _i64(ty_n * tx_n)],
                                              acc_dtype, scope=shared) if kz > 1 else None
                    with _loop(kz, "threadIdx.z", bind) as tz:
                        n = tirx.floordiv(bz, _i64(groups)) if groups > 1 else bz
                        g = tirx.floormod(bz, _i64(groups)) if groups > 1 else _i64(0)
                        q0 = (by * _i64(ty_n * vy), bx * _i64(tx_n * vx))
                        acc = T.alloc_buffer([_i64(nacc)], acc_dtype, scope=local)
                        xs = T.alloc_buffer([_i64(ck), _i64(win[0]), _i64(win[1])], acc_dtype,
                                            scope=shared)
                        ws = T.alloc_buffer([_i64(ck), _i64(staged_taps), _i64(opg)],
                                            acc_dtype, scope=shared)
                        xr = T.alloc_buffer([_i64(patch[0]), _i64(patch[1])], acc_dtype,
                                            scope=local)
                        with T.unroll(_i64(nacc)) as i:
                            T.buffer_store(acc, zero, [i])
                        def input_slot(e):
                            """Staged element ``e``'s index in ``xs``: (channel, wy, wx)."""
                            return [tirx.floordiv(e, _i64(win[0] * win[1])),
                                    tirx.floormod(tirx.floordiv(e, _i64(win[1])), _i64(win[0])),
                                    tirx.floormod(e, _i64(win[1]))]

                        def input_value(ko, e):
                            c, wy, wx = input_slot(e)
                            iy = q0[0] + _i64(geo.lo[0]) + wy
                            ix = q0[1] + _i64(geo.lo[1]) + wx
                            ic = g * _i64(ipg) + ko * _i64(ck) + c
                            src = data[tuple(_index(spec.data_layout, {
                                "N": n, "C": ic, sp[0]: iy, sp[1]: ix}))]
                            inside = tirx.all(iy >= _i64(0), iy < _i64(spec.in_size[0]),
                                              ix >= _i64(0), ix < _i64(spec.in_size[1]))
                            return tirx.if_then_else(inside, src.astype(acc_dtype), zero)

                        def packed_slot(e):
                            """Staged weight ``e``: (channel, packed tap, output)."""
                            return [tirx.floordiv(e, _i64(ntaps * opg)),
                                    tirx.floormod(tirx.floordiv(e, _i64(opg)), _i64(ntaps)),
                                    tirx.floormod(e, _i64(opg))]

                        def weight_slot(e):
                            c, t, o = packed_slot(e)
                            return [c, _staged_tap(t, packed_offsets, offsets), o]

                        def weight_value(ko, e):
                            c, t, o = packed_slot(e)
                            return weight[t, g * _i64(ipg) + ko * _i64(ck) + c, o].astype(
                                acc_dtype)

                        # (elements, value at K step ko, shared buffer, its index) per operand
                        operands = [(ck * win[0] * win[1], input_value, xs, input_slot),
                                    (ck * ntaps * opg, weight_value, ws, weight_slot)]
                        rounds = _stage_rounds([-(-total // nthreads) for total, *_ in operands],
                                               tile.prefetch)

                        def compute():
                            with T.serial(_i64(ck // kz)) as cg:
                                c = cg * _i64(kz) + tz if kz > 1 else cg
                                with T.unroll(_i64(patch[0])) as py, \
                                        T.unroll(_i64(patch[1])) as px:
                                    T.buffer_store(xr, xs[c, ty * _i64(vy) + py,
                                                          tx * _i64(vx) + px], [py, px])
                                _phase_fmas(phases, offsets, geo, tile, opg, acc, xr, ws, c)

                        # A thread's staging registers per operand: [loads of a round, 1] (on
                        # the CPU every emulated thread's, [loads, threads]).
                        held = [T.alloc_buffer(
                            [_i64(_round_loads(rounds, k)), _i64(1 if bind else nthreads)],
                            acc_dtype, scope=local) for k in range(len(operands))]

                        def held_slot(f, t):
                            return [f, _i64(0) if bind else t]

                        def fetch(ko, parts):
                            for k, first, count in parts:
                                total, value, _, _ = operands[k]
                                cooperative(total, lambda e, f, t, reg=held[k], value=value:
                                            T.buffer_store(reg, value(ko, e), held_slot(f, t)),
                                            first, count)

                        def commit(parts):
                            for k, first, count in parts:
                                total, _, buf, slot = operands[k]
                                cooperative(total, lambda e, f, t, reg=held[k], buf=buf,
                                            slot=slot: T.buffer_store(
                                                buf, reg[tuple(held_slot(f, t))], slot(e)),
                                            first, count)

                        steps = ipg // ck
                        if not tile.prefetch or steps == 1:
                            with T.serial(_i64(steps)) as ko:
                                for parts in rounds:
                                    fetch(ko, parts)
                                    commit(parts)
                                compute()
                        else:
                            (parts,) = rounds
                            fetch(_i64(0), parts)
                            commit(parts)
                            with T.serial(_i64(steps)) as ko:
                                with T.If(ko + _i64(1) < _i64(steps)):
                                    with T.Then():
                                        fetch(ko + _i64(1), parts)
                                compute()
                                with T.If(ko + _i64(1) < _i64(steps)):
                                    with T.Then():
                                        commit(parts)
                        if kz > 1:
                            _sum_channel_groups(acc, partials, tz, ty * _i64(tx_n) + tx, kz,
                                                nacc)
                            with T.If(tz == _i64(kz - 1)):
                                with T.Then():
                                    _store(spec, phases, geo, tile, acc, out, n, g, q0, ty, tx)
                        else:
                            _store(spec, phases, geo, tile, acc, out, n, g, q0, ty, tx)
    return builder.get()


# Global loads a thread issues into registers before their stores to shared memory, per
# round of a K step's staging: the loads of a round are in flight together instead of one
# load's latency per staged element.
STAGE_REGISTERS = 32


def _stage_rounds(loads: list, prefetch: bool) -> list:
    """A K step's staging as rounds of ``(operand, first, count)``: each thread loads the
    round's ``count`` elements of each operand (its ``first``-th on) into registers, then
    stores them to shared memory.  ``loads``: elements per thread of each operand.  With
    ``prefetch`` one round of everything (the next step waits in registers), else rounds of
    at most :data:`STAGE_REGISTERS` loads."""
    if prefetch:
        return [[(k, 0, n) for k, n in enumerate(loads)]]
    rounds, parts, room = [], [], STAGE_REGISTERS
    for k, n in enumerate(loads):
        first = 0
        while first < n:
            count = min(n - first, room)
            parts.append((k, first, count))
            first, room = first + count, room - count
            if room == 0:
                rounds.append(parts)
                parts, room = [], STAGE_REGISTERS
    return rounds + [parts] if parts else rounds


def _round_loads(rounds: list, operand: int) -> int:
    """Registers an operand's staging needs: its largest count in any round."""
    return max(count for parts in rounds for k, _, count in parts if k == operand)


def _staged_tap(t, packed_offsets: dict, offsets: dict):
    """Packed tap ``t``'s index in the staged layout: ``t`` plus its phase's shift, a sum of
    the gaps at the phase starts it has passed (none where the layouts agree).  Comparisons
    cast to integers keep the index bounded, so TVM narrows the kernel's indices to int32
    (a select does not)."""
    if offsets == packed_offsets:
        return t
    shift = _i64(0)
    gap = 0
    for phase in sorted(packed_offsets, key=packed_offsets.get):
        step = offsets[phase] - packed_offsets[phase] - gap
        if step:
            shift = shift + _i64(step) * (t >= _i64(packed_offsets[phase])).astype("int64")
        gap += step
    return t + shift


def _sum_channel_groups(acc, partials, tz, thread, kz: int, nacc: int) -> None:
    """Every channel group's ``acc`` into ``partials``; the last group's ``acc`` becomes
    their sum (TVM syncs the block between the writes and the reads of shared memory)."""
    with T.unroll(_i64(nacc)) as i:
        T.buffer_store(partials, acc[i], [tz, i, thread])
    with T.If(tz == _i64(kz - 1)):
        with T.Then():
            with T.unroll(_i64(nacc)) as i:
                T.buffer_store(acc, functools.reduce(
                    lambda a, b: a + b, [partials[z, i, thread] for z in range(kz)]), [i])


def _phase_fmas(phases, offsets, geo, tile, opg, acc, xr, ws, c) -> None:
    """acc += patch x sub-kernel for every phase with taps (its own taps only)."""
    vy, vx = tile.vy, tile.vx
    for pi, ph in enumerate(phases):
        if not ph.has_taps:
            continue
        ay, ax = ph.axes
        with T.unroll(_i64(ay.num_taps)) as jy, T.unroll(_i64(ax.num_taps)) as jx, \
                T.unroll(_i64(opg)) as o, T.unroll(_i64(vy)) as iy, T.unroll(_i64(vx)) as ix:
            ry = iy + _i64(ay.in_start - geo.lo[0]) - jy * _i64(ay.in_step)
            rx = ix + _i64(ax.in_start - geo.lo[1]) - jx * _i64(ax.in_step)
            t = _i64(offsets[ph.index]) + flat_index([jy, jx], ph.num_taps)
            a = ((_i64(pi * opg) + o) * _i64(vy) + iy) * _i64(vx) + ix
            T.buffer_store(acc, acc[a] + xr[ry, rx] * ws[c, t, o], [a])


def _store(spec, phases, geo, tile, acc, out, n, g, q0, ty, tx) -> None:
    """Each phase's accumulators into its strided positions ``o = r + q*s`` of ``out``."""
    vy, vx, opg = tile.vy, tile.vx, spec.out_per_group
    sp = spec.spatial_axes
    for pi, ph in enumerate(phases):
        ay, ax = ph.axes
        with T.unroll(_i64(opg)) as o, T.unroll(_i64(vy)) as iy, T.unroll(_i64(vx)) as ix:
            qy = q0[0] + ty * _i64(vy) + iy
            qx = q0[1] + tx * _i64(vx) + ix
            a = ((_i64(pi * opg) + o) * _i64(vy) + iy) * _i64(vx) + ix
            idx = _index(spec.out_layout, {"N": n, "C": g * _i64(opg) + o,
                                           sp[0]: qy * _i64(ay.stride) + _i64(ay.phase),
                                           sp[1]: qx * _i64(ax.stride) + _i64(ax.phase)})
            value = acc[a].astype(spec.out_dtype)
            guards = []
            if ay.extent < -(-geo.grid[0] // (tile.ty * vy)) * tile.ty * vy:
                guards.append(qy < _i64(ay.extent))
            if ax.extent < -(-geo.grid[1] // (tile.tx * vx)) * tile.tx * vx:
                guards.append(qx < _i64(ax.extent))
            store_where(out, value, idx, guards)


def cuda_direct_compute(spec: ConvTransposeSpec) -> tirx.PrimFunc:
    """The direct kernel with :func:`choose_tile`'s tile for the current target's SMs (the
    pipeline runs under ``with target``; H100/H200 without one)."""
    target = Target.current(allow_none=True)
    num_sms = _num_sms(target) if target is not None and target.kind.name == "cuda" else 132
    return direct_conv_transpose(spec, choose_tile(spec, num_sms))


def schedule_cuda_direct(sch: s_tir.Schedule, target: Target) -> None:
    """The kernel is scheduled by construction; only check it is the direct kernel's."""
    names = [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))]
    if "direct" not in names:
        raise ValueError(f"not a direct-kernel PrimFunc (root blocks {names})")
