"""The untuned x86 kernel for strided transposed convs on AVX-512: phase GEMMs and one
interleave, fused into the interleave's parallel tasks.

IR in: :func:`~.x86_space.x86_space_compute`'s PrimFunc (the padded data copy, per phase with
taps a reduction into an accumulator ``acc_<phase>`` shaped like the whole output's phase,
one ``interleave`` block writing ``out``), plus the epilogues FuseTIR put after it.  IR out:
the epilogues inlined into the interleave, whose loops become one parallel loop over tasks
(image, group, channel tiles, patch of rows: :func:`fuse_phases_into_interleave`); each task
first makes its padded input copy (the rows its patch reads, halo included:
:func:`_pad_in_task`), then per channel tile computes every phase's accumulator over its
patch with fixed register tiles (:func:`interleaved_tiles`, :func:`fused_tiles`;
input-channel chunks where a channel tile's weights overflow L2), each tile written back
with whole-vector stores, and interleaves the patch into ``out``.  TIR's allocation planning
then allocates the copy inside the task loop at the window's size and each accumulator
inside it at the patch's (all phases within :data:`TASK_ACC_BYTES`): the workspace holds
one task's copy and accumulators per core instead of the batch chunk's padded input and
output (:func:`workspace_bytes`).  Where no patch fits (:func:`task_patches`: wide rows, 1-d
convs whose column tile does not divide the extent, padded column tiles without a divisor
to take their place), the dense path: each phase a parallel pass into its whole-output
accumulator, then the interleave pass, after one padded copy of the input; big batches go
through the copy and the passes a chunk of images at a time (:func:`batch_chunk`).

The fused path against the dense one, built whole and timed side by side on a 2-core Zen 5
(``benchmarks/x86_fused_interleave_ab.py``, ``results/x86-znver5-fused-interleave-ab-b{1,16}
.json``), on the four zoo layers this kernel takes there (DCGAN 512->256 and 256->128, pose
2048->256 and 256->256): 1.01-1.07x at batch 1 and 1.00-1.04x at batch 16 (an earlier run:
1.00-1.06x / 0.98-1.05x; DCGAN 256->128 the most, 1.07x / 1.04x, its tiles 2 x 2 x 4
instead of padded 2 x 2 x 3).  Their accumulators took 64-768 KiB of workspace at batch 1
and 1-3 MiB at batch 16, now 8-48 KiB a task (16-96 KiB on 2 cores).

The padded input copy per task (:data:`PAD_IN_TASKS`) against one copy per batch chunk
made before the tasks, the same way (``x86_fused_interleave_ab.py --pad``, two runs:
``results/x86-znver5-task-pad-ab-b{1,16}.json`` and ``...-ab-run2-b{1,16}.json``): DCGAN
512->256 and 256->128 and pose 256->256 0.98-1.02x at batch 1 and 1.00-1.04x at batch 16;
pose 2048->256, whose weights stream, 0.97x and 0.95-0.99x (:data:`PAD_IN_TASKS`).  The
workspace beyond the packed weight, 90-705 KiB at batch 1 and 1.2-10.4 MiB at batch 16
before, is now 165-1350 KiB at either batch: a task's window is a whole image on both DCGANs
(patches of all rows), so at batch 1 the two cores' copies take up to twice the one copy of
before, while at batch 16 it drops 5.7-7.7x.

Why not :mod:`.x86`'s kernel, which writes each register tile straight to the strided output:
with 16-lane vectors, a tile of 2 x 16 channels writes 32 output planes at a stride of
``s`` elements, one scalar store per element (and LLVM's scatters for wider tiles).  On a
2-core Zen 5, built whole and timed side by side (``benchmarks/x86_interleave_ab.py``,
``benchmarks/results/x86-znver5-interleave-b{1,16}.json``), this kernel (its dense path then)
ran 1.04-1.53x faster than that one on 10 of the 12 zoo layers it takes at batch 1 (FCN-8s
1.53x, CycleGAN 1.38-1.45x, HiFi-GAN 1.32x, pose 2048->256 1.19x, U-Net 1.14x) and 0.98x on
the other two (pose 256->256, 3-D U-Net k2); at batch 16 1.01-1.80x on 11 of 12, 0.97x on
the 3-D U-Net k4.

It takes float32 convs in ``oc`` mode (at least 8 output channels per group) with a stride
above 1 on 16-lane (AVX-512) targets; few-channel (``w`` mode: FSRCNN, RGB heads) and
stride-1 convs, AVX2 and NEON keep :mod:`.x86`'s kernel (measured on AVX-512 only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from tvm import s_tir, tirx
from tvm.target import Target

from tvm_deconv.compute import OUT_ELEMWISE_FUSABLE
from tvm_deconv.plan import ConvTransposeSpec, make_plan

from .common import CPU_TILE_SCOPE, inline_epilogues
from .x86 import (BATCH_CHUNK_BYTES, ROLE, X86, _best_tile, _parallel_spatial, block_channels,
                  channels_last_stride, images_per_chunk, itemsize, padded_image_elements,
                  schedule_pad, supports_x86, vector_lanes, x86_layout)
from .x86_phase_tile import _cores
from .x86_space import (CHUNKED_ACC_BYTES, INTERLEAVE, PHASE_LOOPS, _acc_shape, _blocks,
                        _extent, _phase_loops, chunk_batch, chunked_acc_bytes, input_chunks,
                        schedule_blocks, space_layout, x86_space_compute)
from .x86_space import LANES as LANES_ATTR

# Accumulator vector registers of a tile (of AVX-512's 32): 2 channel vectors x 2 rows x 3
# columns (1-d: x 6 columns).  Tiles of 16 (2 x 2 x 4), built whole side by side at batch 1,
# ran within 3% on DCGAN 256->128, CycleGAN 256->128, pose 2048->256 and U-Net, and 1.09x /
# 1.47x slower on FCN-8s / the 3-D U-Net k2 (benchmarks/x86_interleave_ab.py ... 16,
# results/x86-znver5-interleave-acc16-b1.json).
ACCUMULATORS = 12
LANES = 16
FLOAT32_BYTES = 4
# Weight bytes of a channel tile's phase (input channels x taps x channel vectors) that stay
# in L2 (1 MiB a core on Zen 5) while the spatial tiles reuse them.  Over it, the input
# channels go in chunks: pose 2048->256 (a 1 MiB slice, in chunks of 512) ran 1.07x faster
# than unchunked at batch 1 (every one of 11 rounds) and 1.06x at 16; the other zoo layers
# (slices of at most 256 KiB) ran 0.98-1.06x slower chunked under a 32 KiB budget
# (benchmarks/x86_input_chunks_ab.py, results/x86-znver5-input-chunks-*.json).
WEIGHT_SLICE_BYTES = 256 << 10
# Largest accumulator (every phase) of a fused task (:func:`patch_sizes`).  Smaller patches
# re-read the channel tile's weights once more each: under 16 KiB pose 2048->256 (patches of
# 4 rows, not 8) ran 1.17x slower at batch 1; 32 and 128 KiB ran within 2% of 64 on the four
# zoo layers at batch 1 and 16 (x86_fused_interleave_ab.py ... 16,32,128,
# results/x86-znver5-fused-interleave-budgets-b{1,16}.json).
TASK_ACC_BYTES = 64 << 10
# Accumulator registers of a fused task's tile where :data:`ACCUMULATORS` would pad its
# columns (:func:`fused_tiles`): in the fused task loop LLVM keeps the padded tile's column
# guard inside the reduction loop and spills the tile to the stack (U-Net 512->256, 32
# columns in 2 x 2 x 3 tiles: 0.44x the dense path), while 2 x 2 x 4 tiles ran 1.05x.
FUSED_ACCUMULATORS = 16
# Packed weights over this do not stay in the last-level cache (32 MiB on the Zen 5, shared)
# while the images go by: fused tasks then put the channel tiles outside the batch, so a
# tile's weights (every phase) are read once for all images, not once per image.  At batch
# 16, pose 2048->256 (32 MiB) ran 1.03x / 1.02x the dense path so and 0.91x / 0.88x with the
# batch outermost; DCGAN 512->256 (8 MiB) 0.97-0.99x so and 0.97-1.01x with the batch
# outermost (two to three runs of 5-9 rounds each).
STREAMED_WEIGHT_BYTES = 16 << 20
# Fused tasks make their own padded input copy (:func:`_pad_in_task`: the rows their patch
# reads, halo included, every input channel of their group) instead of reading one copy of
# the batch chunk made before the tasks, so no buffer grows with the batch.  With one channel
# tile a task, each image was copied once per tile (4-9x the copying): unvectorised
# 0.85-0.99x the copy per chunk on the four zoo layers at batch 1 and 16; with the copy
# vectorised and channel tiles sharing a task's copy (:func:`tiles_per_task`) 0.98-1.04x on
# the three whose weights do not stream (x86_fused_interleave_ab.py --pad,
# results/x86-znver5-task-pad-ab*-b{1,16}.json).  Pose 2048->256, whose weights stream (one
# tile a task, each image copied 8 times), ran 0.95-0.99x at batch 16 (0.992x, 0.954x; four
# earlier runs 0.957-0.987x) and 0.97x at batch 1: that costs it about 2%, and saves 9 MiB of
# its 10.4 MiB padded batch copy at batch 16 (it keeps 1.3 MiB at any batch).  Only where the
# batch has more images than there are cores (:func:`copies_in_tasks`): else the tasks'
# copies at once (one image each at most) are no smaller than the batch's.
PAD_IN_TASKS = True


def supports_x86_interleaved(spec: ConvTransposeSpec, target: Target) -> Optional[str]:
    """``None`` where this kernel takes ``spec`` on ``target``, else why not."""
    why = supports_x86(spec, target)
    if why is not None:
        return why
    lanes = vector_lanes(target, spec.dtype)
    if lanes != LANES:
        return f"{lanes}-lane vectors (this kernel is measured on 16-lane AVX-512 only)"
    if all(s == 1 for s in spec.strides):
        return "stride 1: one phase, written contiguously by the x86.decomposed kernel"
    if x86_layout(spec, lanes).mode != "oc":
        return (f"{spec.out_per_group} output channels per group: the few-channel kernel of "
                "x86.decomposed")
    return None


def interleaved_compute(spec: ConvTransposeSpec) -> tirx.PrimFunc:
    """PrimFunc ``(data, packed_weight, out)`` (:func:`~.x86.x86_pack`'s weight); epilogues
    (bias, activations) fuse into it."""
    return x86_space_compute(spec).with_attr("op_pattern", OUT_ELEMWISE_FUSABLE)


def interleaved_tiles(channel_blocks: int, qext: list, reduction: list) -> list:
    """Fixed register tile ``[[None, channel vectors], [None, rows] or None, [None, columns],
    input chunk or None]`` for phase accumulators of ``channel_blocks`` channel vectors,
    per-phase extents ``qext`` (innermost last) and reduction extents ``reduction`` (input
    channels, taps per axis): 2 channel vectors where they divide, 2 rows where they divide,
    columns filling :data:`ACCUMULATORS` with few padded columns; input chunks where the
    channel tile's weight slice is over :data:`WEIGHT_SLICE_BYTES` (and the task's
    accumulators fit ``x86_space.CHUNKED_ACC_BYTES``): the largest chunk whose slice fits it,
    else the smallest chunk."""
    chan = X86.obt(channel_blocks)
    rows = None
    if len(qext) >= 2:
        rows = 2 if qext[-2] % 2 == 0 else 1
    cols = _best_tile(qext[-1], max(1, ACCUMULATORS // (chan * (rows or 1))))
    slice_per_channel = chan * LANES * math.prod(reduction[1:]) * FLOAT32_BYTES
    chunk = None
    if (slice_per_channel * reduction[0] > WEIGHT_SLICE_BYTES
            and chunked_acc_bytes(chan * LANES, qext) <= CHUNKED_ACC_BYTES):
        chunks = input_chunks(reduction[0])
        fits = [c for c in chunks if c * slice_per_channel <= WEIGHT_SLICE_BYTES]
        chunk = max(fits) if fits else min(chunks, default=None)
    return [[None, chan], [None, rows] if rows is not None else None, [None, cols], chunk]


def schedule_x86_interleaved(sch: s_tir.Schedule, target: Target) -> None:
    """Schedule an :func:`interleaved_compute` PrimFunc (with its fused epilogues): the phases
    fused into the interleave's tasks (:func:`fuse_phases_into_interleave`) where a task
    patch fits (:func:`task_patches`), else each phase a parallel pass of its own into a
    dense accumulator, then the interleave pass."""
    roots = sch.get_child_blocks(sch.get_sblock("root"))
    epilogues = [sch.get(b).name_hint for b in roots if ROLE not in sch.get(b).annotations]
    left = inline_epilogues(sch, epilogues)
    plan = task_plan(sch, int(target.attrs.get("num-cores", 0) or 1))
    chunk_batch(sch, plan.images)
    if plan.fused:
        fuse_phases_into_interleave(sch, plan.tiles, plan.rows, plan.streams, plan.per_task,
                                    plan.copies)
    else:
        schedule_blocks(sch, "channels_outer", tile_rule=interleaved_tiles, target=target)
    for name in left:
        _parallel_spatial(sch, sch.get_sblock(name), vector_lanes(target))


@dataclass(frozen=True)
class TaskPlan:
    """How :func:`schedule_x86_interleaved` runs a PrimFunc, and what :func:`workspace_bytes`
    counts: ``images`` per pass (:func:`batch_chunk` of the ``per_chunk`` roles), whether the
    weights ``streams`` and the tasks make their own padded ``copies``; fused (``tiles`` set:
    :func:`fused_tiles`), patches of ``rows`` first-axis positions, ``tasks`` (image, group,
    channel tile, patch) of one pass and ``per_task`` channel tiles sharing a task."""

    images: int
    per_chunk: tuple
    streams: bool
    copies: bool
    tiles: Optional[list] = None
    rows: int = 0
    tasks: int = 0
    per_task: int = 1

    @property
    def fused(self) -> bool:
        return self.tiles is not None


def task_plan(sch: s_tir.Schedule, cores: int) -> TaskPlan:
    """The :class:`TaskPlan` of an unscheduled :func:`interleaved_compute` PrimFunc on
    ``cores`` cores: fused where a task patch fits (:func:`task_patches`), else dense."""
    tiles, sizes = task_patches(sch)
    copies = copies_in_tasks(_batch(sch), cores)
    per_chunk = per_chunk_roles(bool(sizes), copies)
    images = batch_chunk(sch, per_chunk)
    streams = _weight_streams(sch)
    if not sizes:
        return TaskPlan(images, per_chunk, streams, copies)
    qext0 = _phase_extents(sch)[0][0]
    tasks = _tasks(sch, tiles) * images // _batch(sch)  # of one pass
    rows = patch_rows(sizes, qext0, tasks, cores)
    tasks = tasks * qext0 // rows
    per_task = tiles_per_task(_channel_tiles(sch, tiles), tasks, cores, streams, copies)
    return TaskPlan(images, per_chunk, streams, copies, tiles, rows, tasks, per_task)


def patch_sizes(tiles: list, qext, phases: int) -> list:
    """The patch sizes a fused task may cover (:func:`fuse_phases_into_interleave`), in
    positions along the first phase axis (rows in 2-d; every position of the other axes),
    for register tiles ``tiles`` (:func:`interleaved_tiles`), phase extents ``qext`` and
    ``phases`` phases with taps: the multiples of the tile along that axis that divide it
    and keep the task's accumulators within :data:`TASK_ACC_BYTES`, ascending (none: the
    dense path)."""
    # The tile's extent along that axis: columns in 1-d, rows in 2-d, 1 (depth) in 3-d.
    step = tiles[2][1] if len(qext) == 1 else tiles[1][1] if len(qext) == 2 else 1
    return [p for p in range(step, qext[0] + 1, step)
            if qext[0] % p == 0 and phases * task_acc_bytes(tiles, qext, p) <= TASK_ACC_BYTES]


def patch_rows(sizes: list, extent: int, tasks: int, cores: int) -> int:
    """Of :func:`patch_sizes` ``sizes`` (of a first phase axis of ``extent``), the largest
    that leaves at least two tasks per core with ``tasks`` (image, group, channel tile)
    tasks, else the smallest."""
    busy = [p for p in sizes if tasks * (extent // p) >= 2 * cores]
    return max(busy, default=sizes[0])


def task_acc_bytes(tiles: list, qext, rows: int) -> int:
    """Bytes of one phase's accumulator in a fused task: a channel tile of ``tiles``, a patch
    of ``rows`` positions along the first phase axis and every position of the others."""
    return tiles[0][1] * LANES * rows * math.prod(qext[1:]) * FLOAT32_BYTES


def task_patches(sch: s_tir.Schedule) -> tuple:
    """(:func:`fused_tiles` of the phase blocks, their :func:`patch_sizes`); ``(None, [])``
    where no phase has taps or no tile fits a fused task."""
    tiles = _fixed_tiles(sch)
    if tiles is None:
        return None, []
    qext, phases = _phase_extents(sch)
    tiles = fused_tiles(tiles, qext)
    return tiles, [] if tiles is None else patch_sizes(tiles, qext, phases)


def fused_tiles(tiles: list, qext) -> Optional[list]:
    """The register tile ``tiles`` (:func:`interleaved_tiles`) for fused tasks, whose tiles
    cover whole rows of ``qext[-1]`` columns: where its columns do not divide them (2-d,
    3-d), the widest divisor within :data:`FUSED_ACCUMULATORS`, if it is no narrower; else
    ``None``, the dense path."""
    cols = tiles[2][1]
    if len(qext) == 1 or qext[-1] % cols == 0:
        return tiles
    vectors = tiles[0][1] * tiles[1][1]
    wide = max(c for c in range(1, qext[-1] + 1)
               if qext[-1] % c == 0 and c * vectors <= FUSED_ACCUMULATORS)
    return tiles[:2] + [[None, wide]] + tiles[3:] if wide >= cols else None


def _fixed_tiles(sch: s_tir.Schedule) -> Optional[list]:
    """:func:`interleaved_tiles` for the phase blocks (``None`` where none has taps)."""
    phases = _blocks(sch).get("conv", [])
    if not phases:
        return None
    loops = _phase_loops(sch, phases[0])
    return interleaved_tiles(_extent(sch, loops.chan), [_extent(sch, q) for q in loops.qs],
                             [_extent(sch, loops.ric)] + [_extent(sch, t) for t in loops.taps])


def _phase_extents(sch: s_tir.Schedule) -> tuple:
    """(phase extents ``Q``, phases with taps) of the phase blocks."""
    phases = _blocks(sch)["conv"]
    return [_extent(sch, q) for q in _phase_loops(sch, phases[0]).qs], len(phases)


def _channel_tiles(sch: s_tir.Schedule, tiles: list) -> int:
    """Channel tiles of ``tiles``' channel vectors in a group."""
    return _extent(sch, _phase_loops(sch, _blocks(sch)["conv"][0]).chan) // tiles[0][1]


def _tasks(sch: s_tir.Schedule, tiles: list) -> int:
    """(image, group, channel tile) tasks of one pass (a batch chunk's images)."""
    loops = _phase_loops(sch, _blocks(sch)["conv"][0])
    return (_extent(sch, loops.n) * _extent(sch, loops.g)
            * _extent(sch, loops.chan) // tiles[0][1])


def _weight_streams(sch: s_tir.Schedule) -> bool:
    """Whether the packed weight outgrows :data:`STREAMED_WEIGHT_BYTES`."""
    packed = sch.mod["main"].params[1]  # (data, packed weight, out); params are the buffers
    return math.prod(int(d) for d in packed.shape) * packed.dtype.itemsize > STREAMED_WEIGHT_BYTES


def tiles_per_task(channel_tiles: int, tasks: int, cores: int, weight_streams: bool,
                   copies: bool = True) -> int:
    """Channel tiles (of ``channel_tiles`` per group) one fused task computes one after the
    other over its padded input copy (``copies``: :func:`copies_in_tasks`), where one tile a
    task would
    make ``tasks`` tasks on ``cores`` cores: the most that divide them and leave at least
    two tasks per core, so the copy is made once for them; one where the copy is made per
    batch chunk.  Built whole side by side on a 2-core
    Zen 5 (5 rounds), one tile a task (each image copied 8-9 times) ran 0.94x (DCGAN
    512->256, 8 tiles) and 0.99x (pose 256->256) the copy per chunk at batch 16 and 0.98x
    (pose 256->256) at batch 1; 8, 8 and 4 tiles a task 1.00x, 1.02x and 1.00x.  Pose
    2048->256 (streaming, 4 MiB of weights a tile) ran 0.98x with one tile a task, 0.97x
    with 2 and 0.91x with 4 at batch 16: where ``weight_streams``, one."""
    if not copies or weight_streams:
        return 1
    return max((k for k in range(1, channel_tiles + 1)
                if channel_tiles % k == 0 and tasks // k >= 2 * cores), default=1)


def fuse_phases_into_interleave(sch: s_tir.Schedule, tiles: list, rows: int,
                                channels_outside_batch: bool, per_task: int,
                                copies: bool) -> None:
    """IR in: the phase blocks, the pad block and the interleave at the root (or under the
    batch-chunk loop), unscheduled.  IR out: the interleave's loops as one parallel loop over
    tasks (:func:`_task_loop`: image, group, ``per_task`` channel tiles of ``tiles``' channel
    vectors, patch of ``rows`` positions of the first phase axis; channel tiles outermost
    where ``channels_outside_batch``, else images); in each task, where ``copies``
    (:func:`copies_in_tasks`), first the task's padded input copy (:func:`_pad_in_task`; else
    the copy stays one pass before the tasks), then per channel tile every phase block over
    the tile's region of its accumulator (:func:`_tile_phase_in_task`) and the tile's
    interleave.  TIR then allocates
    each accumulator inside the channel-tile loop at that region's size, and the copy inside
    the task loop at its window's."""
    blocks = _blocks(sch)
    lanes = int(sch.get(blocks["conv"][0]).annotations[LANES_ATTR])
    task, tile = _task_loop(sch, blocks[INTERLEAVE][0], tiles[0][1] * lanes, rows,
                            channels_outside_batch, per_task)
    for block in blocks["conv"]:
        sch.compute_at(block, tile, preserve_unit_loops=True)
        _tile_phase_in_task(sch, block, tiles)
    for block in blocks.get("pad", []):
        if copies:
            _pad_in_task(sch, block, task, lanes)
        else:
            schedule_pad(sch, block, lanes)


def _pad_in_task(sch: s_tir.Schedule, pad, task, lanes: int) -> None:
    """IR in: the channels-last pad block at the root (or under the batch-chunk loop), the
    phase blocks that read it under the parallel task loop ``task``.  IR out: the pad block
    under ``task`` before the phases, over the region of the copy the task's phases read (the
    rows of its patch and their halo, every column, its group's input channels), channels
    blocked by ``lanes`` as in :func:`~.x86.schedule_pad` and the ``lanes`` vectorised (from
    channels-first data, a gather from as many planes); TIR then allocates the copy inside
    the task loop at that region's size.  Unvectorised, copies made once per channel tile
    ran pose 2048->256 at 0.85x the copy per chunk at batch 16, vectorised 0.98x.  A region
    whose pixels are a multiple of 1 KiB apart gets one extra cache line per pixel
    (``storage_align``), as :func:`~.x86.channels_last_stride` gives the whole copy:
    compaction would drop it."""
    sch.compute_at(pad, task, preserve_unit_loops=True)
    loops = sch.get_loops(pad)[-len(sch.get(pad).iter_vars):]
    channels = _extent(sch, loops[-1])
    dtype = sch.get(pad).writes[0].source.dtype
    item = dtype.itemsize
    if channels_last_stride(channels, str(dtype)) != channels:
        sch.storage_align(pad, 0, len(loops) - 2, 1024 // item, 64 // item)
    if channels % lanes == 0 and channels > lanes:
        block_channels(sch, loops, lanes)
        sch.vectorize(sch.get_loops(pad)[-1])


def _task_loop(sch: s_tir.Schedule, interleave, channels: int, rows: int,
               channels_outside_batch: bool, per_task: int):
    """IR in: the interleave's loops in output-layout order (image, group, channel, and per
    spatial axis its ``q`` loop then its phase ``r`` loop).  IR out: one parallel loop over
    (image, group, ``per_task`` tiles of ``channels`` channels, patch of ``rows`` of the
    first axis's ``q``), in that order or with the image after the channel tiles; in it a
    loop over the task's ``per_task`` channel tiles, then the rest in their order, phase
    loops unrolled.  Returns (the parallel loop, the channel-tile loop)."""
    loops = sch.get_loops(interleave)[-len(sch.get(interleave).iter_vars):]
    phase_loops = [int(i) for i in sch.get(interleave).annotations[PHASE_LOOPS]]
    q0 = phase_loops[0] - 1  # the first phase axis's q loop (each q loop precedes its r)
    n, g, c = [i for i in range(len(loops)) if i not in phase_loops and i + 1 not in phase_loops]
    c_o, c_t, c_i = sch.split(loops[c], [None, per_task, channels])
    q_o, q_i = sch.split(loops[q0], [None, rows])
    inner = [c_t] + [c_i if i == c else q_i if i == q0 else lp
                     for i, lp in enumerate(loops) if i not in (n, g)]
    outer = ([loops[g], c_o, loops[n], q_o] if channels_outside_batch
             else [loops[n], loops[g], c_o, q_o])
    sch.reorder(*outer, *inner)
    for i in phase_loops:
        sch.unroll(loops[i])
    task = sch.fuse(*outer)
    sch.parallel(task)  # before the phases' decompose_reduction (init and update write them)
    return task, c_t


def _tile_phase_in_task(sch: s_tir.Schedule, block, tiles: list) -> None:
    """IR in: a phase block under a fused task loop, one loop per block variable over the
    task's region.  IR out: the region in register tiles of ``tiles`` (reduction over input
    channels, or chunks of them, outside the unrolled taps and tile, lanes vectorised), each
    tile accumulated in a ``CPU_TILE_SCOPE`` cache written back to the task's accumulator (in
    input chunks: the task's region cached, as in :func:`~.x86_space.schedule_blocks`)."""
    loops = _phase_loops(sch, block)
    qs, ric = loops.qs, loops.ric
    cols_o, cols_i = sch.split(qs[-1], [None, tiles[2][1]])
    spatial_o, inner = [cols_o], [loops.chan, cols_i]
    if len(qs) >= 2:
        rows_o, rows_i = sch.split(qs[-2], [None, tiles[1][1]])
        spatial_o, inner = list(qs[:-2]) + [rows_o, cols_o], [loops.chan, rows_i, cols_i]
    if tiles[3] is not None:
        ric, ric_i = sch.split(ric, [None, tiles[3]])
        sch.reorder(loops.n, loops.g, ric, *spatial_o, ric_i, *loops.taps, *inner, loops.vec)
        cached = loops.g
    else:
        sch.reorder(loops.n, loops.g, *spatial_o, ric, *loops.taps, *inner, loops.vec)
        cached = spatial_o[-1]
    for loop in inner:
        sch.unroll(loop)
    sch.vectorize(loops.vec)
    write_back = sch.cache_write(block, 0, CPU_TILE_SCOPE)
    sch.reverse_compute_at(write_back, cached, preserve_unit_loops=True)
    sch.vectorize(sch.get_loops(write_back)[-1])
    init = sch.decompose_reduction(block, ric)
    sch.vectorize(sch.get_loops(init)[-1])


def copies_in_tasks(batch: int, cores: int) -> bool:
    """Whether fused tasks make their own padded input copies (:data:`PAD_IN_TASKS`): where
    the ``batch`` has more images than there are ``cores``."""
    return PAD_IN_TASKS and batch > cores


def per_chunk_roles(fused: bool, copies: bool) -> tuple:
    """Roles of the blocks whose buffers are made once per batch chunk: on the dense path the
    padded copy and the phase accumulators, on the ``fused`` one the padded copy unless the
    tasks make their own (``copies``: :func:`copies_in_tasks`; then none: nothing for
    :func:`batch_chunk` to split)."""
    if not fused:
        return ("pad", "conv")
    return () if copies else ("pad",)


def batch_chunk(sch: s_tir.Schedule, per_chunk: tuple) -> int:
    """Images per pass (:func:`~.x86_space.chunk_batch`): a batch whose buffers made once per
    chunk (those of the blocks of roles ``per_chunk``, :func:`per_chunk_roles`) outgrow
    :data:`~.x86.BATCH_CHUNK_BYTES` goes through the passes in chunks that fit it, unless its
    packed weight does not fit it either (each chunk re-reads it: pose 2048->256's 32 MiB).
    At batch 16 on a 2-core Zen 5, the 8 zoo layers it chunked (dense path) ran 1.00-1.21x
    faster than whole-batch passes (FCN-8s 1.21x, 3-D U-Nets 1.16x / 1.12x, U-Net 1.11x,
    CycleGAN 128->64 1.09x; ``benchmarks/x86_batch_chunks_ab.py``,
    ``results/x86-znver5-batch-chunks-b16.json``)."""
    roles = _blocks(sch)
    writers = [b for role in per_chunk for b in roles.get(role, [])]
    buffers = [sch.get(b).writes[0].source for b in writers]
    batch = _batch(sch)
    per_image = sum(math.prod(int(d) for d in buf.shape[1:]) * buf.dtype.itemsize
                    for buf in buffers)
    packed = sch.mod["main"].params[1]  # (data, packed weight, out); params are the buffers
    weight = math.prod(int(d) for d in packed.shape) * packed.dtype.itemsize
    if weight > BATCH_CHUNK_BYTES:
        return batch
    return images_per_chunk(batch, per_image, BATCH_CHUNK_BYTES)


def _batch(sch: s_tir.Schedule) -> int:
    """Images of the interleave (N leads the output), the whole batch before chunking."""
    return int(sch.get(sch.get_loops(_blocks(sch)[INTERLEAVE][0])[0]).extent)


def workspace_bytes(spec: ConvTransposeSpec) -> int:
    """Extra memory: packed weight minus the weight, per chunk of images (:func:`batch_chunk`)
    the buffers made once per chunk (:func:`per_chunk_roles`), and fused into the
    interleave's tasks, one task's buffers per core of the current target: every phase's
    accumulator over a channel tile of the task's patch (in input chunks also the tile cache
    of one phase over it), where :func:`copies_in_tasks` the task's padded input copy
    (:func:`task_pad_bytes`)."""
    lay, qext = space_layout(spec)
    sch = s_tir.Schedule(interleaved_compute(spec))
    cores = max(1, _cores())
    plan = task_plan(sch, cores)
    item = itemsize(spec.dtype)
    chunk = (plan.images * padded_image_elements(spec, lay) * item if "pad" in plan.per_chunk
             else 0)
    if plan.fused:
        qext, phases = _phase_extents(sch)
        tiles, rows = plan.tiles, plan.rows
        task = (phases + (tiles[3] is not None)) * task_acc_bytes(tiles, qext, rows)
        task += task_pad_bytes(spec, qext, rows) if plan.copies else 0
        per_core = task * min(plan.tasks // plan.per_task, cores)
    else:
        phases = len(_blocks(sch).get("conv", []))
        chunk += (plan.images * phases * math.prod(_acc_shape(spec, lay, qext)) // spec.batch
                  * item)
        per_core = 0
    return (math.prod(lay.packed_shape) - math.prod(spec.weight_shape)) * item + chunk + per_core


def task_pad_bytes(spec: ConvTransposeSpec, qext, rows: int) -> int:
    """Bytes of a fused task's padded input copy (:func:`_pad_in_task`) for phase extents
    ``qext`` and a patch of ``rows`` positions of the first axis: the input window the phases
    read for it along that axis (:meth:`~tvm_deconv.plan.AxisPlan.input_window`), for every
    position of the others along the rest, one group's channels at the channels-last
    stride."""
    axes = make_plan(spec).axes
    windows = [ax.input_window(q) for ax, q in zip(axes, [rows] + list(qext[1:]))]
    channels = channels_last_stride(spec.in_per_group, spec.dtype)
    return math.prod(windows) * channels * itemsize(spec.dtype)
