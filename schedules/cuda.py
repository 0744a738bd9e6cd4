"""The CUDA default schedule of the decomposed transposed conv: correct and fast untuned.

In: a PrimFunc from :func:`tvm_deconv.compute.decomposed_conv_transpose`, possibly with
elementwise epilogue blocks fused after it (bias, activation).  Out: every root block bound
to GPU blocks/threads, so the PrimFunc can be marked scheduled.

Each ``phase_*`` block is an implicit GEMM: M = output channels, N = batch × the phase's
output pixels, K = taps × Cin/groups (taps outermost, so every K step reads one dense,
shifted input window and one weight slice).  Per phase:

* ``reindex`` the output write first: the block then writes a *dense* buffer indexed by
  (n, oc, q...), and a separate write-back block stores it to the strided positions
  ``o = r + q*s`` of the interleaved output.  The dense buffer becomes the thread's local
  accumulator.  (Never ``cache_write`` the strided output: its bounding box spans the other
  phases' positions and the write-back would overwrite them with garbage, silently.)
* thread block tile BM output channels × BN pixels (per-axis tiles of n, q1..qd), threads
  ``ty`` over channels and ``tx`` over pixels (adjacent threads → adjacent pixels), each
  thread VO × VW accumulators;
* input and weight tiles of BK input channels staged in shared memory per K step (skipped
  for grouped convs, whose channel window is not a constant-size box).

``zero_*`` blocks (tapless phases) are plain elementwise kernels.  Epilogues (bias,
activation) are NOT fused: :func:`cuda_compute` marks the PrimFunc opaque, so FuseOps leaves
bias/ReLU to their own elementwise kernel (scheduled by dlight).  Why: with an epilogue
fused after them, the phase blocks (several writers of one strided buffer that a later block
reads) make the root scope fail TVM's "stage pipeline" check, and then reindex / compute_at
(and dlight's own rules) refuse the PrimFunc.  Computing the epilogue inside a phase tile
would need per-phase copies of every epilogue block.  Cost: one extra pass over the output.
(:func:`schedule_cuda` still schedules any elementwise blocks it finds, for callers that
build the fused form themselves from an unfused-safe structure.)

Everything is plain FFMA in the compute dtype (no tensor cores, so never TF32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tvm import s_tir, tirx
from tvm.target import Target

from tvm_deconv.compute import decomposed_conv_transpose
from tvm_deconv.plan import ConvTransposeSpec

from .common import split_blocks

OP_PATTERN_OPAQUE = 8  # relax.OpPatternKind.kOpaque: FuseOps fuses nothing into it


def cuda_compute(spec: ConvTransposeSpec) -> tirx.PrimFunc:
    """The decomposed compute, marked opaque so that no epilogue is fused into it."""
    return decomposed_conv_transpose(spec).with_attr("op_pattern", OP_PATTERN_OPAQUE)


@dataclass(frozen=True)
class _Knobs:
    """Storage scopes and binding; the CPU test swaps them to run the same loop structure on
    LLVM (``bind=False``, global scratch buffers) and check its numerics without a GPU."""

    bind: bool = True
    shared: str = "shared"
    local: str = "local"


GPU = _Knobs()
CPU_EMULATION = _Knobs(bind=False, shared="global", local="global")


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


def _bk(ric: int) -> int:
    """Channels per K step: a divisor of Cin/groups (an imperfect split makes the staged
    input window's bounds unprovable, and its shared buffer balloons past the 48 KiB limit)."""
    return next(b for b in range(min(16, ric), 0, -1) if ric % b == 0)


def _choose_tiles(oc: int, spatial: list, ric: int, num_sms: int) -> _Tiles:
    """Thread-block tile of one phase: BM = ty*vo channels × BN = tx*vw pixels.

    Start from 256 threads with 4×4 accumulators each; while the grid is smaller than the
    chip (small layers, batch 1), halve the per-thread tile, then the threads (down to 64).
    """
    vo, vw, budget = 4, 4, 256

    def derive():
        vo_e = min(vo, oc)
        ty = min(16, -(-oc // vo_e), budget)
        tx_target = _pow2_floor(max(1, budget // ty))
        tiles = [1] * len(spatial)
        left = tx_target * vw
        for i in reversed(range(len(spatial))):
            tiles[i] = min(spatial[i], max(1, left))
            left //= tiles[i]
        vw_e = next(v for v in (4, 2, 1) if v <= vw and tiles[-1] % v == 0)
        grid = -(-oc // (vo_e * ty)) * math.prod(-(-e // t) for e, t in zip(spatial, tiles))
        return _Tiles(vo_e, ty, tiles, vw_e, _bk(ric)), grid

    tiles, grid = derive()
    while grid < num_sms:
        if vo > 1 or vw > 1:
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
    ivs = sch.get(block).iter_vars
    nd = (len(ivs) - 3) // 2
    extents = [int(iv.dom.extent) for iv in ivs]
    oc_ext, spatial, ric_ext = extents[1], [extents[0]] + extents[2:2 + nd], extents[2 + nd]
    n_var = ivs[0].var
    t = _choose_tiles(oc_ext, spatial, ric_ext, num_sms)

    # Dense per-phase output buffer (the accumulators) + a write-back to the strided output.
    # The write-back is not the only writer of the output (the other phases are), so it cannot
    # be moved (reverse_compute_at); it carries the tile loops and the phase block is moved
    # under them instead.
    sch.reindex(block, ("write", 0))
    writeback = sch.get_consumers(block)[0]
    sch.set_scope(block, 0, knobs.local)

    loops = sch.get_loops(writeback)
    n, oc, qs = loops[0], loops[1], loops[2:2 + nd]
    bo, ty, vo = sch.split(oc, [None, t.ty, t.vo])
    sp_loops = [n] + list(qs)
    b_loops, t_loops = [], []
    for i, (lp, tile) in enumerate(zip(sp_loops, t.tiles)):
        if i == len(sp_loops) - 1:
            b, tt, vw = sch.split(lp, [None, tile // t.vw, t.vw])
        else:
            b, tt = sch.split(lp, [None, tile])
        b_loops.append(b)
        t_loops.append(tt)
    sch.reorder(bo, *b_loops, ty, *t_loops, vo, vw)
    bx = sch.fuse(bo, *b_loops)
    tx = sch.fuse(*t_loops) if len(t_loops) > 1 else t_loops[0]
    _bind(sch, bx, "blockIdx.x", knobs)
    _bind(sch, ty, "threadIdx.y", knobs)
    _bind(sch, tx, "threadIdx.x", knobs)
    if knobs.bind:
        sch.annotate(bx, "pragma_auto_unroll_max_step", 256)
        sch.annotate(bx, "pragma_unroll_explicit", 1)

    sch.compute_at(block, tx, preserve_unit_loops=True)
    loops = sch.get_loops(block)
    inner = loops[len(loops) - len(ivs):]   # one loop per block iterator, in order
    sp_inner, ric, taps = inner[:2 + nd], inner[2 + nd], inner[3 + nd:]
    ko, ki = sch.split(ric, [None, t.bk])
    sch.reorder(*taps, ko, ki, *sp_inner)

    nthreads_x = (t.tiles[-1] // t.vw) * math.prod(t.tiles[:-1])
    if shared_cache:
        data_idx = _read_index(sch, block, n_var)
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


def _shared_fits(sch, phase_names, knobs, num_sms, target) -> bool:
    """Build the phases with shared staging on a copy; False if a kernel's static shared
    memory exceeds the target's per-block limit."""
    import re  # pylint: disable=import-outside-toplevel

    import tvm  # pylint: disable=import-outside-toplevel

    _, zeros, others = split_blocks(sch)
    rest = [sch.get(b).name_hint for b in zeros + others]
    trial = sch.copy()
    try:
        for name in phase_names:
            attempt = trial.copy()
            try:
                schedule_phase(attempt, name, knobs, shared_cache=True, num_sms=num_sms)
                shared = True
            except Exception:  # pylint: disable=broad-except
                shared = False
            schedule_phase(trial, name, knobs, shared_cache=shared, num_sms=num_sms)
        for name in rest:
            schedule_elementwise(trial, trial.get_sblock(name), knobs)
        func = trial.mod["main"].with_attr("global_symbol", "shared_probe")
        ex = tvm.compile(tvm.IRModule({"shared_probe": func}), target)
    except Exception:  # pylint: disable=broad-except
        return True  # decided per phase below
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


def schedule_cuda(sch: s_tir.Schedule, target: Target, knobs: _Knobs = GPU) -> None:
    """Schedule every root block of a decomposed-conv PrimFunc for CUDA."""
    phases, zeros, others = split_blocks(sch)
    phase_names = [sch.get(b).name_hint for b in phases]
    zero_names = [sch.get(b).name_hint for b in zeros]
    other_names = [sch.get(b).name_hint for b in others]
    num_sms = _num_sms(target)
    # Stage input/weight tiles in shared memory unless that fails (grouped convs: the input
    # window is no constant box) or TVM's region bound of the staged window comes out larger
    # than a block's shared memory (seen: the whole image plane): try on a copy first.
    shared = knobs.bind is False or _shared_fits(sch, phase_names, knobs, num_sms, target)
    for name in phase_names:
        use_shared = shared
        if use_shared:
            trial = sch.copy()
            try:
                schedule_phase(trial, name, knobs, shared_cache=True, num_sms=num_sms)
            except Exception:  # pylint: disable=broad-except
                use_shared = False
        schedule_phase(sch, name, knobs, shared_cache=use_shared, num_sms=num_sms)
    # Fold chains of elementwise epilogue blocks into the last one (one kernel, not several).
    for name in other_names[:-1]:
        trial = sch.copy()
        try:
            trial.compute_inline(trial.get_sblock(name))
        except Exception:  # pylint: disable=broad-except
            continue
        sch.compute_inline(sch.get_sblock(name))
    for name in zero_names + other_names:
        try:
            block = sch.get_sblock(name)
        except Exception:  # pylint: disable=broad-except
            continue  # inlined above
        schedule_elementwise(sch, block, knobs)
