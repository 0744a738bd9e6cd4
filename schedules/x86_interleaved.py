"""The untuned x86 kernel for strided transposed convs on AVX-512: dense phase GEMMs, then
one interleave pass.

IR in: :func:`~.x86_space.x86_space_compute`'s PrimFunc (the padded data copy, per phase with
taps a reduction into a *dense* accumulator ``acc_<phase>``, one ``interleave`` block writing
``out``), plus the epilogues FuseTIR put after it.  IR out: the phase blocks register-tiled
with fixed tiles (:func:`interleaved_tiles`, channel tiles outermost; where a channel tile's
weights overflow L2, input-channel chunks outside the spatial tiles), each tile written back
to its dense accumulator with whole-vector stores; the epilogues inlined into the interleave,
which runs as one parallel pass.  Big batches go through the copy, the phases and the
interleave a chunk of images at a time (:func:`batch_chunk`), with accumulators per chunk.

Why not :mod:`.x86`'s kernel, which writes each register tile straight to the strided output:
with 16-lane vectors, a tile of 2 x 16 channels writes 32 output planes at a stride of
``s`` elements, one scalar store per element (and LLVM's scatters for wider tiles).  On a
2-core Zen 5, built whole and timed side by side (``benchmarks/x86_interleave_ab.py``,
``benchmarks/results/x86-znver5-interleave-b{1,16}.json``), this kernel ran 1.04-1.53x
faster than that one on 10 of the 12 zoo layers it takes at batch 1 (FCN-8s 1.53x, CycleGAN
1.38-1.45x, HiFi-GAN 1.32x, pose 2048->256 1.19x, U-Net 1.14x) and 0.98x on the other two
(pose 256->256, 3-D U-Net k2); at batch 16 1.01-1.80x on 11 of 12, 0.97x on the 3-D U-Net k4.
It costs the dense accumulators: about one output's worth of workspace (:func:`workspace_bytes`).

It takes float32 convs in ``oc`` mode (at least 8 output channels per group) with a stride
above 1 on 16-lane (AVX-512) targets; few-channel (``w`` mode: FSRCNN, RGB heads) and
stride-1 convs, AVX2 and NEON keep :mod:`.x86`'s kernel (measured on AVX-512 only).
"""

from __future__ import annotations

import math
from typing import Optional

from tvm import s_tir, tirx
from tvm.target import Target

from tvm_deconv.compute import OUT_ELEMWISE_FUSABLE
from tvm_deconv.plan import ConvTransposeSpec, make_plan

from .common import inline_epilogues
from .x86 import (BATCH_CHUNK_BYTES, ROLE, X86, _best_tile, _parallel_spatial,
                  images_per_chunk, itemsize, padded_image_elements, supports_x86,
                  vector_lanes, x86_layout)
from .x86_space import (CHUNKED_ACC_BYTES, _acc_shape, _blocks, chunk_batch, chunked_acc_bytes,
                        input_chunks, schedule_blocks, space_layout, x86_space_compute)

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
    """Schedule an :func:`interleaved_compute` PrimFunc (with its fused epilogues)."""
    roots = sch.get_child_blocks(sch.get_sblock("root"))
    epilogues = [sch.get(b).name_hint for b in roots if ROLE not in sch.get(b).annotations]
    left = inline_epilogues(sch, epilogues)
    chunk_batch(sch, batch_chunk(sch))
    schedule_blocks(sch, "channels_outer", tile_rule=interleaved_tiles, target=target)
    for name in left:
        _parallel_spatial(sch, sch.get_sblock(name), vector_lanes(target))


def batch_chunk(sch: s_tir.Schedule) -> int:
    """Images per pass (:func:`~.x86_space.chunk_batch`): a batch whose padded input and phase
    accumulators outgrow :data:`~.x86.BATCH_CHUNK_BYTES` goes through the passes in chunks
    that fit it, unless its packed weight does not fit it either (each chunk re-reads it:
    pose 2048->256's 32 MiB).  At batch 16 on a 2-core Zen 5, the 8 zoo layers it chunks ran
    1.00-1.21x faster than whole-batch passes (FCN-8s 1.21x, 3-D U-Nets 1.16x / 1.12x, U-Net
    1.11x, CycleGAN 128->64 1.09x; ``benchmarks/x86_batch_chunks_ab.py``,
    ``results/x86-znver5-batch-chunks-b16.json``)."""
    roles = _blocks(sch)
    buffers = [sch.get(b).writes[0].source for b in roles.get("pad", []) + roles["conv"]]
    batch = int(buffers[0].shape[0])
    per_image = sum(math.prod(int(d) for d in buf.shape[1:]) * buf.dtype.itemsize
                    for buf in buffers)
    packed = sch.mod["main"].params[1]  # (data, packed weight, out); params are the buffers
    weight = math.prod(int(d) for d in packed.shape) * packed.dtype.itemsize
    if weight > BATCH_CHUNK_BYTES:
        return batch
    return images_per_chunk(batch, per_image, BATCH_CHUNK_BYTES)


def workspace_bytes(spec: ConvTransposeSpec) -> int:
    """Extra memory: packed weight minus the weight, and per chunk of images
    (:func:`batch_chunk`) the padded data copy and the dense phase accumulators."""
    lay, qext = space_layout(spec)
    phases = sum(1 for p in make_plan(spec).phases() if p.has_taps and not p.is_empty)
    images = batch_chunk(s_tir.Schedule(interleaved_compute(spec)))
    per_image = (padded_image_elements(spec, lay)
                 + phases * math.prod(_acc_shape(spec, lay, qext)) // spec.batch)
    elements = math.prod(lay.packed_shape) - math.prod(spec.weight_shape) + images * per_image
    return elements * itemsize(spec.dtype)
