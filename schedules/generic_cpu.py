"""The plain CPU schedule: thread-parallel phases, nothing target specific.

In: a PrimFunc from :func:`tvm_deconv.compute.decomposed_conv_transpose`, possibly with fused
elementwise epilogue blocks.  Out: each root block's outer data-parallel loops fused and bound
to the thread pool, sub-kernel tap loops unrolled.  Correct for any plan; the per-target
schedules start from it and go further.
"""

from __future__ import annotations

from tvm import s_tir
from tvm.target import Target

from .common import root_blocks, is_reduction_block


def _parallel_outer(sch: s_tir.Schedule, block, max_fused: int = 2) -> None:
    loops = sch.get_loops(block)
    spatial = [lp for lp, iv in zip(loops, sch.get(block).iter_vars) if iv.iter_type == 0]
    outer = spatial[:max_fused]
    if outer:
        sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])


def schedule_generic_cpu(sch: s_tir.Schedule, target: Target) -> None:
    for block in root_blocks(sch):
        iter_vars = sch.get(block).iter_vars
        loops = sch.get_loops(block)
        if len(loops) != len(iter_vars):
            continue  # already transformed by someone else: leave it
        if is_reduction_block(sch, block):
            # Taps are the trailing reduction loops after the channel reduction.
            reduce_loops = [lp for lp, iv in zip(loops, iter_vars) if iv.iter_type == 2]
            for tap_loop in reduce_loops[1:]:
                sch.unroll(tap_loop)
        _parallel_outer(sch, block)
