"""The CUDA default schedule of the decomposed transposed conv: correct and fast untuned.

Two computes, both scheduled as implicit GEMMs (M = output channels, N = batch × output
pixels, K = taps × Cin/groups, taps outermost so every K step reads one dense, shifted input
window and one weight slice; thread-block tiles BM × BN, threads ``ty`` over channels and
``tx`` over pixels, each thread VO × VW float accumulators; BK input channels of input and
weight staged in shared memory per K step):

* **phase-batched** (:func:`~tvm_deconv.compute.phase_batched_conv_transpose`; k % s == 0 and
  s | out — DCGAN, pose, U-Net, FCN-8s, HiFi-GAN, FSRCNN x3, 3-D U-Net): ONE kernel for every
  phase, the phases on grid dimensions y/z.  Its ``store`` block is the only writer of the
  output, so the PrimFunc is a stage pipeline: fused epilogues (bias, activations) are
  reverse-inlined into the store and run inside the same kernel, and float16 convs
  accumulate in float32.  Where that kernel's tiles leave SMs idle (batch 1, long K), the
  FFMA kernel splits the input channels (:func:`split_k`): the slices are thread blocks,
  and a second kernel adds their float32 partial sums and runs the epilogues (float16 takes
  it over the tensor cores from :data:`~.cuda_tensorcore.SPLIT_K_OVER_TENSOR_CORES` slices).
* **per phase** (ragged phases: k % s != 0, e.g. CycleGAN k3 s2, FSRCNN x2 k9 s2): one
  ``phase_*`` block and kernel per phase.  ``reindex`` gives each a dense accumulator and a
  write-back to the strided positions ``o = r + q*s`` (never ``cache_write`` the strided
  output: its bounding box spans the other phases' positions and the write-back would
  overwrite them, silently).  :func:`cuda_compute` marks this PrimFunc opaque: with several
  writers of one buffer the root scope is no stage pipeline, so reindex / compute_at refuse
  a fused epilogue; bias/ReLU run as their own elementwise kernel.  float16 (float32
  accumulators) has it on the tensor cores only: a WMMA GEMM per phase
  (:mod:`.cuda_tensorcore`), likewise opaque.

Both read :func:`cuda_pack`'s weight (per phase and tap a ``[Cin, Cout]`` matrix: coalesced
weight tiles) and a zero-padded input whose ``pad`` block is inlined into the shared-memory
copy, so the bounds check runs once per staged element, not in the FMA loop (per-phase layers
with few output channels keep the plain weight and guarded reads: see
:data:`PACKED_MIN_OUT_CHANNELS`).  Shared-memory staging is skipped where TVM's bound of the
staged window exceeds a block's shared memory (probed by building a copy) or the window is no
constant box (grouped convs).  ``zero_*`` blocks (tapless phases) are plain elementwise
kernels.  Everything is plain FFMA in the accumulation dtype (never TF32), except float16
phase-batched convs whose GEMM sizes are multiples of 16: those run on the tensor cores
(:mod:`.cuda_tensorcore`: WMMA 16x16x16, float32 accumulators, epilogues still fused); the
others keep FFMA, with an INFO log line saying why.
:func:`schedule_cuda_space` is MetaSchedule's ``ours`` space over the start tile and unroll.

Layers with at most :data:`~.cuda_direct.DIRECT_MAX_OUT_CHANNELS` output channels per group
(FSRCNN's 56->1, DCGAN's 64->3) do not come here: ``cuda.direct`` (:mod:`.cuda_direct`,
higher priority) takes them, since a GEMM tile over a few output channels is mostly idle.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import tvm_ffi

from tvm import s_tir, tirx
from tvm.target import Target

from tvm_deconv.compute import (BATCHED_ANNOTATION, PADDED_INPUT_ANNOTATION,
                                 decomposed_conv_transpose, decomposed_pack,
                                 phase_batched_conv_transpose)
from tvm_deconv.plan import ConvTransposeSpec, make_plan

from . import cuda_tensorcore
from .common import inline_epilogues, root_blocks, split_blocks, supports_dtype

OP_PATTERN_OPAQUE = 8  # relax.OpPatternKind.kOpaque: FuseOps fuses nothing into it


# Per-phase layers at batch 1 with fewer output channels per group keep the plain weight and
# guarded input reads: on the H100, FSRCNN 56->1 at batch 1 ran 0.24 / 0.19 ms (x2 / x3) that
# way and 0.36 / 0.42 ms packed and padded, while CycleGAN ran 2-5x faster packed
# (benchmarks/cuda_forms_ab.py → benchmarks/results/h100-forms-ab.json).  At batch 64 FSRCNN
# ran equally in both forms and DCGAN 64->3 (per phase there) 0.086 ms packed, 0.134 plain.
PACKED_MIN_OUT_CHANNELS = 4


def cuda_compute(spec: ConvTransposeSpec) -> tirx.PrimFunc:
    """The phase-batched compute (one kernel, epilogues fused, reading :func:`cuda_pack`'s
    weight) where the plan allows it and its staged input window fits shared memory (float16:
    always, for float32 accumulation); otherwise the per-phase compute (packed weight and
    padded input unless it has few output channels), marked opaque so that no epilogue is
    fused into it.  float16 calls that :func:`~.cuda_tensorcore.tensor_core_reason` accepts
    get the same GEMMs in the tensor-core form (WMMA, float32 accumulators): one for a
    phase-batched plan, one per phase (opaque) for a ragged one."""
    if uses_phase_batched_kernel(spec):
        if uses_tensor_core_kernel(spec):
            return cuda_tensorcore.tensor_core_conv_transpose(spec)
        return phase_batched_conv_transpose(spec, split_k=split_k(spec))
    if uses_tensor_core_kernel(spec):  # ragged float16: a tensor-core GEMM per phase
        func = cuda_tensorcore.tensor_core_conv_transpose(spec)
    else:
        func = decomposed_conv_transpose(spec, packed_weight=_per_phase_packed(spec))
    return func.with_attr("op_pattern", OP_PATTERN_OPAQUE)


def cuda_pack(spec: ConvTransposeSpec) -> tirx.PrimFunc | None:
    """The weight packing of :func:`cuda_compute` (per phase and tap a ``[Cin, Cout]``
    matrix: a thread block's weight tile is whole rows of coalesced loads), run at compile
    time for constant weights; ``None`` where the compute reads the plain weight."""
    if uses_phase_batched_kernel(spec) or _per_phase_packed(spec):
        return decomposed_pack(spec)
    return None


def _per_phase_packed(spec: ConvTransposeSpec) -> bool:
    return spec.out_per_group >= PACKED_MIN_OUT_CHANNELS or spec.batch > 1


@functools.lru_cache(maxsize=256)
def uses_phase_batched_kernel(spec: ConvTransposeSpec) -> bool:
    """Whether :func:`cuda_compute` gives ``spec`` the one-kernel phase-batched compute."""
    if not make_plan(spec).phase_batched:
        return False
    return spec.out_dtype == "float16" or _batched_shared_fits(
        phase_batched_conv_transpose(spec))


def _batched_shared_fits(func: tirx.PrimFunc) -> bool:
    """TVM bounds the batched block's staged input window loosely for some plans (FSRCNN
    k9 s3: the whole 131x131 plane); those keep one kernel per phase, which stages fine."""
    from tvm_deconv.targets import resolve_target  # pylint: disable=import-outside-toplevel

    trial = s_tir.Schedule(func)
    try:
        schedule_batched(trial, _batched_blocks(trial), GPU, shared_cache=True)
    except Exception:  # pylint: disable=broad-except
        return False
    return _shared_within_limit(trial, resolve_target("cuda"))


def supports_cuda(spec: ConvTransposeSpec, target: Target) -> str | None:
    why = supports_dtype(spec, target)
    if why is None and spec.out_dtype == "float16" and not make_plan(spec).phase_batched:
        tensor_cores = cuda_tensorcore.tensor_core_reason(spec, target)
        if tensor_cores is not None:
            why = ("float16 accumulates in float32 only in the phase-batched kernel (dilation "
                   "1, k % s == 0, stride dividing the output) and, for ragged phases like "
                   f"these, on the tensor cores, which decline it: {tensor_cores}")
    return why


# (accumulator rows VO, columns VW, threads) before shrinking for small grids.  Measured on
# the H100 (batch 64, packed weights, padded input): 8x4 is the fastest of 8x4/4x4/8x8 on
# DCGAN, pose, U-Net, HiFi-GAN and the 3-D U-Net, by 1.1-2.3x; batch 1 is insensitive.
START_TILE = (8, 4, 256)
# The tuning space (MetaSchedule's ``ours`` on CUDA): these start tiles x the unroll steps.
TILE_CHOICES = ((8, 4, 256), (4, 4, 256), (8, 8, 256), (4, 8, 128), (8, 4, 128), (4, 4, 128))
UNROLL_STEPS = (0, 16, 64, 256, 1024)
MAX_GRID_YZ = 65535  # CUDA's limit on gridDim.y and gridDim.z
BK_CAP = 16  # input channels staged per K step, at most


@dataclass(frozen=True)
class _Knobs:
    """Storage scopes and binding; the CPU test swaps them to run the same loop structure on
    LLVM (``bind=False``, global scratch buffers) and check its numerics without a GPU.
    ``start_tile`` and ``unroll`` (the auto-unroll step; ``None``: left to the tuning space's
    sampled annotation) are the kernel's tunable knobs; ``halve_full_blocks``:
    :func:`_choose_tiles`'s 128-thread rule (off in the tuning space, whose designs are the
    start tiles as given).  ``phases_fastest``: the
    phase-batched kernel's grid order (``None``: :func:`phases_fastest`'s rule).
    ``threads_first``: where the grid is short of the chip, :func:`_choose_tiles` halves the
    threads before the per-thread tile; ``bk_cap``: input channels per K step, at most (A/B
    knobs)."""

    bind: bool = True
    shared: str = "shared"
    local: str = "local"
    start_tile: tuple = START_TILE
    unroll: int | None = 256
    phases_fastest: bool | None = None
    halve_full_blocks: bool = True
    threads_first: bool = False
    bk_cap: int = BK_CAP


GPU = _Knobs()
CPU_EMULATION = _Knobs(bind=False, shared="global", local="global")


def phases_fastest(output, weight) -> bool:
    """Grid order of a phase-batched kernel (FFMA and tensor cores alike): the phases on the
    fastest grid dimensions (blockIdx.x, y) where the ``output`` buffer outweighs the
    ``weight`` buffer, else on the slowest.

    Phases fastest, the blocks that write one output region's phases run together and their
    strided stores meet in L2 before it writes the lines back; phases slowest, the blocks
    of one phase run together and share its weight slice in L2.  On the H200 (one run each,
    ``benchmarks/cuda_tile_ab.py``, results/h200-tile-ab-{1,3}.json): at batch 64 FCN-8s (64
    phases, 270 MB of output) ran 2.19x faster with phases fastest in fp32 and 1.39x in
    fp16, HiFi-GAN 1.11x, U-Net 1.05-1.09x; pose 2048->256 at batch 1 (34 MB of weights,
    0.2 MB of output) ran 0.76x; the other layers moved less than 3%."""
    def nbytes(buf):
        return math.prod(int(d) for d in buf.shape) * tvm_ffi.dtype(buf.dtype).itemsize

    return nbytes(output) > nbytes(weight)


def _bind(sch, loop, thread: str, knobs: _Knobs) -> None:
    if knobs.bind:
        sch.bind(loop, thread)


def _pow2_floor(x: int) -> int:
    return 1 << (max(1, int(x)).bit_length() - 1)


@dataclass
class _Tiles:
    vo: int
    ty: int
    tiles: list          # per spatial axis (n, q1..qd): pixels of one thread block
    vw: int              # pixels per thread on the innermost axis
    bk: int


def _bk(ric: int, cap: int = BK_CAP) -> int:
    """Channels per K step: a divisor of Cin/groups (an imperfect split makes the staged
    input window's bounds unprovable, and its shared buffer balloons past the 48 KiB limit)."""
    return next(b for b in range(min(cap, ric), 0, -1) if ric % b == 0)


def _grid(oc: int, spatial: list, t: _Tiles) -> int:
    """Thread blocks of a GEMM tiled by ``t`` (whole axes, e.g. the phases, have tile 1)."""
    return -(-oc // (t.vo * t.ty)) * math.prod(-(-e // tile) for e, tile in zip(spatial, t.tiles))


def _choose_tiles(oc: int, spatial: list, ric: int, num_sms: int,
                  block_only: tuple = (), start_tile: tuple = START_TILE,
                  halve_full_blocks: bool = False, threads_first: bool = False,
                  bk_cap: int = BK_CAP) -> _Tiles:
    """Thread-block tile of one phase: BM = ty*vo channels × BN = tx*vw pixels.

    Start from ``start_tile`` (:data:`START_TILE`); while the grid is smaller than the chip
    (small layers, batch 1), halve the per-thread tile, then the threads (down to 64).
    ``halve_full_blocks``: where the start tile's 256-thread blocks already fill the chip
    (``num_sms`` > 0), blocks of 128 threads with the same per-thread tile instead (twice the
    blocks).  On the H200, fp32, side by side (``benchmarks/cuda_tile_ab.py --start-tiles``,
    results/h200-start-tile-zoo-b{1,64}.json), 11 of the 14 zoo calls this takes ran
    1.02-1.25x faster (CycleGAN 128->64 and FCN-8s at batch 64 1.25x / 1.19x, HiFi-GAN at
    batch 1 1.21x), the pose heads 0.87x (256->256, batch 1) and 0.98-0.99x (batch 64); where
    the 256-thread grid is short of the chip (batch-1 DCGAN and CycleGAN, DCGAN 64->3 at
    batch 64) 128 threads ran 0.91-1.16x, so those keep the shrinking below.
    """
    vo, vw, budget = start_tile

    def derive():
        vo_e = min(vo, oc)
        ty = min(16, -(-oc // vo_e), budget)
        tx_target = _pow2_floor(max(1, budget // ty))
        tiles = [1] * len(spatial)
        left = tx_target * vw
        for i in reversed(range(len(spatial))):
            if i in block_only:
                continue
            # A divisor: an imperfect split makes the staged input window's bound the whole
            # plane (seen: 230k floats of shared memory for FSRCNN's 3 phases per axis).
            tiles[i] = max(d for d in range(1, min(spatial[i], max(1, left)) + 1)
                           if spatial[i] % d == 0)
            left //= tiles[i]
        vw_e = next(v for v in (8, 4, 2, 1) if v <= vw and tiles[-1] % v == 0)
        chosen = _Tiles(vo_e, ty, tiles, vw_e, _bk(ric, bk_cap))
        return chosen, _grid(oc, spatial, chosen)

    tiles, grid = derive()
    if halve_full_blocks and num_sms and grid >= num_sms and budget == 256:
        budget //= 2
        return derive()[0]
    while grid < num_sms:
        if threads_first and budget > 64:
            budget //= 2
        elif vo > 1 or vw > 1:
            if vo >= vw:
                vo //= 2
            else:
                vw //= 2
        elif budget > 64:
            budget //= 2
        else:
            break
        tiles, grid = derive()
    return tiles


# Split-K: a slice of input channels per thread block keeps at least this many channels, and
# this many multiply-adds per output (channels x taps): the 3-D U-Net k2 (64 channels, 1 tap)
# ran 0.90x in 2 slices of 32, HiFi-GAN 1.41x in 8 of 64 channels x 2 taps (H200).
MIN_SPLIT_CHANNELS = 32
MIN_SPLIT_DEPTH = 128
# Measured on 32-512 output channels; layers with fewer (DCGAN 64->3) are not split.
MIN_SPLIT_OUT_CHANNELS = 16
# Input dtypes split-K serves (the partial sums are float32 either way).
SPLIT_K_DTYPES = ("float32", "float16")


def uses_tensor_core_kernel(spec: ConvTransposeSpec, slices: int | None = None) -> bool:
    """Whether ``spec`` runs on the tensor cores: float16 where
    :func:`~.cuda_tensorcore.tensor_core_reason` accepts it, given the ``slices``
    :func:`split_k` cuts a phase-batched plan (computed where not given; the tensor-core
    kernel has no split-K form).  Ragged plans have no float16 FFMA kernel to split."""
    if spec.dtype != "float16":
        return False
    if slices is None:
        slices = split_k(spec) if make_plan(spec).phase_batched else 1
    return cuda_tensorcore.uses_tensor_cores(spec, split_k_slices=slices)


def split_k(spec: ConvTransposeSpec, num_sms: int = 132) -> int:
    """Slices of the input channels (split-K) for the FFMA phase-batched kernel: where its
    start tile (:data:`START_TILE`) leaves fewer thread blocks than SMs (batch 1, few output
    pixels, long K: pose 2048->256 on 8x6 makes 8 blocks), the smallest power of two that
    fills the chip (each slice >= :data:`MIN_SPLIT_CHANNELS` channels and
    :data:`MIN_SPLIT_DEPTH` multiply-adds per output, dividing Cin); else 1.  Without it the
    tile shrank to fill the chip, down to one accumulator per thread, two shared-memory loads
    per FMA: on the H200 split-K ran pose 2048->256 at batch 1 4.9x faster (3.3x cuDNN fp32),
    DCGAN 512->256 4.4x, 1.1-2.0x the other batch-1 layers and DCGAN 512->256 at batch 64
    (``benchmarks/cuda_switch_ab.py split_k``).  The partial sums go through global memory
    once, summed by a second kernel that runs the fused epilogue."""
    if (spec.groups != 1 or spec.dtype not in SPLIT_K_DTYPES
            or spec.out_channels < MIN_SPLIT_OUT_CHANNELS):
        return 1
    plan = make_plan(spec)
    nd = spec.ndim
    spatial = ([spec.batch] + [ax.stride for ax in plan.axes]
               + [ax.out_size // ax.stride for ax in plan.axes])
    start = _choose_tiles(spec.out_channels, spatial, spec.in_channels, num_sms=0,  # unshrunk
                          block_only=tuple(range(1, 1 + nd)))
    taps = math.prod(ax.max_taps for ax in plan.axes)
    blocks, slices = _grid(spec.out_channels, spatial, start), 1
    while blocks * slices < num_sms and spec.in_channels % (2 * slices) == 0:
        channels = spec.in_channels // (2 * slices)
        if channels < MIN_SPLIT_CHANNELS or channels * taps < MIN_SPLIT_DEPTH:
            break
        slices *= 2
    return slices


def workspace_bytes(spec: ConvTransposeSpec) -> int:
    """Extra global memory of :func:`cuda_compute`: split-K's partial sums (the float32
    output once per input-channel slice), or the tensor-core kernel's channels-last input
    copy.  Otherwise the padded input is read through the shared-memory copies, the
    accumulators are registers, and the packed weight replaces the weight."""
    if not uses_phase_batched_kernel(spec):
        return cuda_tensorcore.input_copy_bytes(spec) if uses_tensor_core_kernel(spec) else 0
    slices = split_k(spec)
    if uses_tensor_core_kernel(spec, slices):
        return cuda_tensorcore.input_copy_bytes(spec)
    return 0 if slices == 1 else slices * math.prod(spec.out_shape) * 4


def _read_index(sch, block, var) -> int:
    """Index of the read region whose indices use block iterator ``var`` (data: n)."""
    for i, region in enumerate(sch.get(block).reads):
        for rng in region.region:
            if _uses(rng.min, var):
                return i
    raise ValueError("read region not found")


def _uses(expr, var) -> bool:
    return any(v.same_as(var) for v in tirx.analysis.undefined_vars(expr))


def _cooperative_fetch(sch, block, loop, nthreads_y: int, nthreads_x: int,
                       knobs: _Knobs) -> None:
    sch.compute_at(block, loop, preserve_unit_loops=True)
    # The copy block's own loops are the ones below `loop`.
    loops = sch.get_loops(block)
    at = sch.get(loop)
    depth = next(i for i, lp in enumerate(loops) if sch.get(lp).same_as(at)) + 1
    inner = loops[depth:]
    fused = sch.fuse(*inner) if len(inner) > 1 else inner[0]
    _, ty, tx = sch.split(fused, [None, nthreads_y, nthreads_x])
    _bind(sch, tx, "threadIdx.x", knobs)
    _bind(sch, ty, "threadIdx.y", knobs)


def schedule_phase(sch: s_tir.Schedule, name: str, knobs: _Knobs = GPU,
                   shared_cache: bool = True, num_sms: int = 132) -> None:
    """Schedule one ``phase_*`` reduction block as a tiled implicit GEMM."""
    block = sch.get_sblock(name)
    nd = (len(sch.get(block).iter_vars) - 3) // 2
    # Dense per-phase output buffer (the accumulators) + a write-back to the strided output.
    # The write-back is not the only writer of the output (the other phases are), so it cannot
    # be moved (reverse_compute_at); it carries the tile loops and the phase block is moved
    # under them instead.
    sch.reindex(block, ("write", 0))
    _schedule_gemm(sch, block, sch.get_consumers(block)[0], nd, knobs, shared_cache, num_sms)


def schedule_batched(sch: s_tir.Schedule, blocks: "_BatchedBlocks", knobs: _Knobs = GPU,
                     shared_cache: bool = True, num_sms: int = 132) -> None:
    """Schedule the all-phases block of :func:`~tvm_deconv.compute.phase_batched_conv_transpose`
    (pixel axes ``n, r1.., q1..``) with its ``store`` block as the write-back: one kernel for
    every phase, the phases spread over thread blocks.  The ``pad`` block, if any, is inlined
    into the shared-memory copy of the input (bounds checked once per staged element).
    Split-K (a ``partial`` block): the input-channel slices ``k`` (pixel axes ``n, k, r..,
    q..``) are thread blocks too, ``partial`` is the GEMM's write-back and ``store``, adding
    the slices up, an elementwise kernel of its own."""
    block = sch.get_sblock(blocks.conv)
    nd = (len(sch.get(sch.get_sblock(blocks.store)).iter_vars) - 2) // 2
    whole = nd + (blocks.partial is not None)   # axes after n that go to blockIdx only
    # Phases go to blockIdx only: with (q, r) pairs fused into one thread index, TVM
    # miscompiled the kernel (wrong outputs in the CPU emulation test).
    _schedule_gemm(sch, block, sch.get_sblock(blocks.partial or blocks.store), nd + whole,
                   knobs, shared_cache, num_sms, block_only=tuple(range(1, 1 + whole)))
    _inline_padded_input(sch, blocks.pad)
    if blocks.partial is not None:
        schedule_elementwise(sch, sch.get_sblock(blocks.store), knobs)


def _schedule_gemm(sch: s_tir.Schedule, block, writeback, npix: int, knobs: _Knobs,
                   shared_cache: bool, num_sms: int, block_only: tuple = ()) -> None:
    """Tile ``block`` (iterators ``n, oc, <npix pixel axes>, ric, taps...``, writing a dense
    buffer that ``writeback`` copies out) as an implicit GEMM: thread-block tiles of the
    write-back's loops, the block computed at each thread's tile with local accumulators."""
    ivs = sch.get(block).iter_vars
    extents = [int(iv.dom.extent) for iv in ivs]
    oc_ext, spatial, ric_ext = extents[1], [extents[0]] + extents[2:2 + npix], extents[2 + npix]
    n_var = ivs[0].var
    t = _choose_tiles(oc_ext, spatial, ric_ext, num_sms, block_only, knobs.start_tile,
                      knobs.halve_full_blocks, knobs.threads_first, knobs.bk_cap)
    sch.set_scope(block, 0, knobs.local)

    loops = sch.get_loops(writeback)
    n, oc, qs = loops[0], loops[1], loops[2:2 + npix]
    bo, ty, vo = sch.split(oc, [None, t.ty, t.vo])
    sp_loops = [n] + list(qs)
    by_loops = [lp for i, lp in enumerate(sp_loops) if i in block_only]
    b_loops, t_loops = [], []
    for i, (lp, tile) in enumerate(zip(sp_loops, t.tiles)):
        if i in block_only:
            continue
        if i == len(sp_loops) - 1:
            b, tt, vw = sch.split(lp, [None, tile // t.vw, t.vw])
        else:
            b, tt = sch.split(lp, [None, tile])
        b_loops.append(b)
        t_loops.append(tt)
    # Whole axes per thread block (the phases) get grid dimensions y and z of their own; a
    # third joins x.  (Fusing two phase axes into one index miscompiled: wrong outputs.)
    sch.reorder(*by_loops[:2], bo, *by_loops[2:], *b_loops, ty, *t_loops, vo, vw)
    bx = sch.fuse(bo, *by_loops[2:], *b_loops)
    tx = sch.fuse(*t_loops) if len(t_loops) > 1 else t_loops[0]
    phase_axes, tile_axis = ("blockIdx.y", "blockIdx.z"), "blockIdx.x"
    data_idx = _read_index(sch, block, n_var)
    fastest = knobs.phases_fastest
    if fastest is None:
        fastest = phases_fastest(sch.get(writeback).writes[0].source,
                                 sch.get(block).reads[1 - data_idx].source)
    if fastest and by_loops and int(sch.get(bx).extent) <= MAX_GRID_YZ:
        phase_axes = ("blockIdx.x", "blockIdx.y")
        tile_axis = "blockIdx.y" if len(by_loops) == 1 else "blockIdx.z"
    for loop, axis in zip(by_loops[:2], phase_axes):
        _bind(sch, loop, axis, knobs)
    _bind(sch, bx, tile_axis, knobs)
    _bind(sch, ty, "threadIdx.y", knobs)
    _bind(sch, tx, "threadIdx.x", knobs)
    if knobs.bind and knobs.unroll is not None:
        sch.annotate(bx, "pragma_auto_unroll_max_step", knobs.unroll)
        sch.annotate(bx, "pragma_unroll_explicit", 1)

    sch.compute_at(block, tx, preserve_unit_loops=True)
    loops = sch.get_loops(block)
    inner = loops[len(loops) - len(ivs):]   # one loop per block iterator, in order
    sp_inner, ric, taps = inner[:2 + npix], inner[2 + npix], inner[3 + npix:]
    ko, ki = sch.split(ric, [None, t.bk])
    sch.reorder(*taps, ko, ki, *sp_inner)

    nthreads_x = (t.tiles[-1] // t.vw) * math.prod(t.tiles[:-1])
    if shared_cache:
        wsh = sch.cache_read(block, 1 - data_idx, knobs.shared, consumer_blocks=[block])
        # cache_read of the weight renumbers nothing: the data is still read `data_idx`.
        dsh = sch.cache_read(block, data_idx, knobs.shared, consumer_blocks=[block])
        _cooperative_fetch(sch, wsh, ko, t.ty, nthreads_x, knobs)
        _cooperative_fetch(sch, dsh, ko, t.ty, nthreads_x, knobs)
    sch.decompose_reduction(block, taps[0] if taps else ko)


def schedule_elementwise(sch: s_tir.Schedule, block, knobs: _Knobs = GPU,
                         threads: int = 256) -> None:
    """Fuse a block's spatial loops and spread them over blocks × threads (serial rest)."""
    loops = sch.get_loops(block)
    ivs = sch.get(block).iter_vars
    spatial = [lp for lp, iv in zip(loops, ivs) if iv.iter_type == 0]
    if len(spatial) != len(loops) or not spatial:
        # Non-elementwise epilogue (rare): parallelise its leading spatial loops only.
        spatial = []
        for lp, iv in zip(loops, ivs):
            if iv.iter_type != 0:
                break
            spatial.append(lp)
        if not spatial:
            _bx, _tx = sch.split(sch.add_unit_loop(block), [None, 1])
            _bind(sch, _bx, "blockIdx.x", knobs)
            _bind(sch, _tx, "threadIdx.x", knobs)
            return
    fused = sch.fuse(*spatial) if len(spatial) > 1 else spatial[0]
    bx, tx = sch.split(fused, [None, threads])
    _bind(sch, bx, "blockIdx.x", knobs)
    _bind(sch, tx, "threadIdx.x", knobs)


def _num_sms(target: Target) -> int:
    arch = str(target.attrs.get("arch", "sm_90"))
    return {"sm_90": 132, "sm_89": 128, "sm_87": 16, "sm_86": 84, "sm_80": 108}.get(arch, 80)


def _shared_within_limit(trial: s_tir.Schedule, target: Target) -> bool:
    """Build a fully scheduled copy; False if a kernel's static shared memory exceeds the
    target's per-block limit (TVM's region bound of a staged window can come out as a whole
    image plane)."""
    import re  # pylint: disable=import-outside-toplevel

    import tvm  # pylint: disable=import-outside-toplevel

    try:
        func = trial.mod["main"].with_attr("global_symbol", "shared_probe")
        ex = tvm.compile(tvm.IRModule({"shared_probe": func}), target)
    except Exception:  # pylint: disable=broad-except
        # Where nvcc is installed, tvm.compile runs ptxas, which rejects too much shared
        # memory ("uses too much shared data"); without it only the source is generated.
        return False
    limit = int(target.attrs.get("max_shared_memory_per_block", 49152))

    def sources(mod):
        out = [mod.inspect_source()] if mod.kind == "cuda" else []
        for sub in mod.imports:
            out += sources(sub)
        return out

    sizes = {"float": 4, "half": 2, "double": 8}
    for src in sources(ex.mod):
        for kernel in src.split("__global__")[1:]:
            used = sum(int(n) * sizes.get(t, 8) for t, n in re.findall(
                r"__shared__[^;]*?(float|half|double)\s+\w+\[(\d+)\]", kernel))
            if used > limit:
                return False
    return True


def _schedule_rest(sch: s_tir.Schedule, names: list, knobs: _Knobs) -> None:
    """Elementwise blocks (zero phases, epilogues): chains folded into their last block, each
    remaining one an elementwise kernel."""
    for name in names[:-1]:
        trial = sch.copy()
        try:
            trial.compute_inline(trial.get_sblock(name))
        except Exception:  # pylint: disable=broad-except
            continue
        sch.compute_inline(sch.get_sblock(name))
    for name in names:
        try:
            block = sch.get_sblock(name)
        except Exception:  # pylint: disable=broad-except
            continue  # inlined above
        schedule_elementwise(sch, block, knobs)


@dataclass(frozen=True)
class _BatchedBlocks:
    conv: str
    store: str
    pad: str | None
    partial: str | None = None   # split-K's write-back of the partial sums


def _batched_blocks(sch: s_tir.Schedule) -> _BatchedBlocks | None:
    """The block names of a phase-batched PrimFunc, or None."""
    roles = {}
    for block in root_blocks(sch):
        role = sch.get(block).annotations.get(BATCHED_ANNOTATION)
        if role is not None:
            roles[str(role)] = sch.get(block).name_hint
    if "conv" not in roles:
        return None
    return _BatchedBlocks(roles["conv"], roles["store"], _padded_input_block(sch),
                          roles.get("partial"))


def _padded_input_block(sch: s_tir.Schedule) -> str | None:
    """Name of the zero-padded input copy (inlined into the shared-memory copies), if any."""
    for block in root_blocks(sch):
        if PADDED_INPUT_ANNOTATION in sch.get(block).annotations:
            return sch.get(block).name_hint
    return None


def _schedule_batched_func(sch: s_tir.Schedule, target: Target, knobs: _Knobs,
                           blocks: _BatchedBlocks) -> None:
    """One kernel for all phases; fused epilogues (bias, activations) are inlined into the
    store, so they run inside it too."""
    others = [sch.get(b).name_hint for b in root_blocks(sch) if sch.get(b).name_hint
              not in (blocks.conv, blocks.store, blocks.pad, blocks.partial)]
    left = inline_epilogues(sch, others)
    num_sms = _num_sms(target)
    use_shared = True
    trial = sch.copy()
    try:
        schedule_batched(trial, blocks, knobs, shared_cache=True, num_sms=num_sms)
        _schedule_rest(trial, left, knobs)
        use_shared = knobs.bind is False or _shared_within_limit(trial, target)
    except Exception:  # pylint: disable=broad-except
        use_shared = False
    schedule_batched(sch, blocks, knobs, shared_cache=use_shared, num_sms=num_sms)
    _schedule_rest(sch, left, knobs)


def schedule_cuda_space(sch: s_tir.Schedule, target: Target) -> list:
    """MetaSchedule's ``ours`` space on CUDA: one design per start tile of
    :data:`TILE_CHOICES` that schedules (small layers shrink several to the same kernel:
    kept once) or, for the tensor-core form, per (K pipeline, input gather) variant of
    :data:`~.cuda_tensorcore.TUNING_VARIANTS` that launches; each sampling the auto-unroll
    step of :data:`UNROLL_STEPS` (a root annotation that RewriteParallelVectorizeUnroll turns
    into pragmas; MutateUnroll mutates it)."""
    if cuda_tensorcore.is_tensor_core_func(sch):
        variants = [functools.partial(cuda_tensorcore.schedule_tensor_core, target=target,
                                      num_sms=_num_sms(target), pipeline=pipeline,
                                      gather=gather)
                    for pipeline, gather in cuda_tensorcore.TUNING_VARIANTS]
    else:
        variants = [functools.partial(schedule_cuda, target=target,
                                      knobs=dataclasses.replace(GPU, start_tile=tile,
                                                                unroll=None,
                                                                halve_full_blocks=False))
                    for tile in TILE_CHOICES]
    spaces, seen = [], set()
    for variant in variants:
        space = sch.copy()
        try:
            variant(space)
        except Exception:  # pylint: disable=broad-except
            continue
        key = tvm_ffi.structural_hash(space.mod)
        if key in seen:
            continue
        seen.add(key)
        space.annotate(space.get_sblock("root"), "meta_schedule.unroll_explicit",
                       space.sample_categorical(list(UNROLL_STEPS),
                                                [1.0 / len(UNROLL_STEPS)] * len(UNROLL_STEPS)))
        spaces.append(space)
    return spaces


def schedule_cuda(sch: s_tir.Schedule, target: Target, knobs: _Knobs = GPU) -> None:
    """Schedule every root block of a decomposed-conv PrimFunc for CUDA."""
    if cuda_tensorcore.is_tensor_core_func(sch):
        # WMMA has no CPU emulation: with knobs.bind False the compute stays unscheduled
        # (LLVM runs it as is; the tests check its numerics that way).
        if knobs.bind:
            cuda_tensorcore.schedule_tensor_core(sch, target, num_sms=_num_sms(target))
        return
    batched = _batched_blocks(sch)
    if batched is not None:
        _schedule_batched_func(sch, target, knobs, batched)
        return
    phases, zeros, others = split_blocks(sch)
    phase_names = [sch.get(b).name_hint for b in phases]
    pad = _padded_input_block(sch)
    rest = [sch.get(b).name_hint for b in zeros + others if sch.get(b).name_hint != pad]
    num_sms = _num_sms(target)
    # Stage input/weight tiles in shared memory unless that fails (grouped convs: the input
    # window is no constant box) or the staged window exceeds a block's shared memory: try on
    # a copy first.
    shared = knobs.bind is False
    if not shared:
        trial = sch.copy()
        try:
            for name in phase_names:
                attempt = trial.copy()
                try:
                    schedule_phase(attempt, name, knobs, shared_cache=True, num_sms=num_sms)
                    ok = True
                except Exception:  # pylint: disable=broad-except
                    ok = False
                schedule_phase(trial, name, knobs, shared_cache=ok, num_sms=num_sms)
            _inline_padded_input(trial, pad)
            _schedule_rest(trial, rest, knobs)
            shared = _shared_within_limit(trial, target)
        except Exception:  # pylint: disable=broad-except
            shared = True  # decided per phase below
    for name in phase_names:
        use_shared = shared
        if use_shared:
            trial = sch.copy()
            try:
                schedule_phase(trial, name, knobs, shared_cache=True, num_sms=num_sms)
            except Exception:  # pylint: disable=broad-except
                use_shared = False
        schedule_phase(sch, name, knobs, shared_cache=use_shared, num_sms=num_sms)
    _inline_padded_input(sch, pad)
    _schedule_rest(sch, rest, knobs)


def _inline_padded_input(sch: s_tir.Schedule, pad: str | None) -> None:
    """Inline the zero-padded input into its readers (the phases' shared-memory copies, or
    the phase blocks where those were not staged): the bounds check runs where it loads."""
    if pad is not None:
        sch.compute_inline(sch.get_sblock(pad))
