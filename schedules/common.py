"""Block lookup shared by the per-target schedules.

A PrimFunc reaching a schedule holds the decomposed conv's phase blocks (annotated
``tvm_deconv.phase`` by :mod:`tvm_deconv.compute`), possibly ``zero_*`` blocks of tapless
phases, and whatever FuseTIR fused after them (bias, activation, BatchNorm epilogues).
"""

from __future__ import annotations

import contextlib
from types import ModuleType

from tvm import s_tir, tirx
from tvm.script.ir_builder import tirx as T
from tvm.target import Target

from tvm_deconv.compute import PHASE_ANNOTATION
from tvm_deconv.plan import ConvTransposeSpec

# Storage scope of the CPU register tiles (accumulators allocated inside the parallel loop).
# TVM's LowerTVMBuiltin puts only "global" allocations under 1 KiB on the stack; any other
# scope ("local" included) becomes a TVMBackendAllocWorkspace/FreeWorkspace call pair per
# tile, which took 10-18% of the U-Net k2s2 phase GEMMs.
CPU_TILE_SCOPE = "global"


@contextlib.contextmanager
def module_switch(module: ModuleType, name: str, value):
    """Within the context, ``module.name`` is ``value`` (a schedule module's on/off switch,
    so benchmarks and tests time or check both paths in one process)."""
    before = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, before)


def store_where(buffer, value, index, conds: list) -> None:
    """Inside a PrimFunc being built: ``buffer[index] = value``, under ``if all(conds)`` when
    there are conditions (positions of padded tiles, lanes past the channels)."""
    if not conds:
        T.buffer_store(buffer, value, index)
        return
    with T.If(tirx.all(*conds)):
        with T.Then():
            T.buffer_store(buffer, value, index)


def root_blocks(sch: s_tir.Schedule) -> list:
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def is_decomposed_block(sch: s_tir.Schedule, block) -> bool:
    return PHASE_ANNOTATION in sch.get(block).annotations


def is_reduction_block(sch: s_tir.Schedule, block) -> bool:
    return any(iv.iter_type == 2 for iv in sch.get(block).iter_vars)  # 2 = CommReduce


def split_blocks(sch: s_tir.Schedule) -> tuple[list, list, list]:
    """(phase reduction blocks, tapless zero blocks, other blocks) at the root."""
    phases, zeros, others = [], [], []
    for block in root_blocks(sch):
        if not is_decomposed_block(sch, block):
            others.append(block)
        elif is_reduction_block(sch, block):
            phases.append(block)
        else:
            zeros.append(block)
    return phases, zeros, others


def inline_epilogues(sch: s_tir.Schedule, names: list) -> list:
    """Reverse-compute-inline each root block named in ``names`` (fused epilogues: bias,
    activations) into its producer where it inlines; returns the names that did not, which
    then run as their own (elementwise) loops."""
    left = []
    for name in names:
        trial = sch.copy()
        try:
            trial.reverse_compute_inline(trial.get_sblock(name))
        except Exception:  # pylint: disable=broad-except
            left.append(name)
            continue
        sch.reverse_compute_inline(sch.get_sblock(name))
    return left


def supports_dtype(spec: ConvTransposeSpec, target: Target) -> str | None:
    """Predicate shared by the built-in implementations."""
    if spec.dtype not in ("float32", "float16", "float64"):
        return f"dtype {spec.dtype} is not a float type the decomposed kernels support"
    if spec.out_dtype not in ("float32", "float16", "float64"):
        return f"out_dtype {spec.out_dtype} is not supported"
    return None
