"""The AArch64 NEON default schedule (``arm_cpu.decomposed``): the x86 implementation with NEON
sizes.

The pack, the pre-scheduled compute and the schedule are :mod:`.x86`'s; only the
:class:`~.x86.VectorISA` differs: :data:`~.x86.NEON` has 128-bit vectors (4 float32 lanes) and
32 vector registers, so an ``oc``-mode register tile is up to 4 channel vectors x 5 output
columns (20 accumulators + 4 weight vectors + broadcasts; LLVM emits ``fmla v.4s`` by element)
and a ``w``-mode tile holds up to 8 accumulators (more spill: the unrolled taps keep input
rows live).  The layout does not depend on the current target (the ISA is fixed), so
cross-compiling and tuning from an x86 host build the same workload as a build on the board.

Untuned sizes: the emulated board (qemu) cannot rank schedules, so the tile sizes are chosen
from the register budget, not measured on hardware yet.
"""

from __future__ import annotations

from typing import Optional

from tvm import s_tir, tirx
from tvm.target import Target

from tvm_deconv.plan import ConvTransposeSpec

from .x86 import (NEON, VectorISA, is_aarch64, schedule_x86, supports_float32, workspace_bytes,
                  x86_compute, x86_pack)


def neon_pack(spec: ConvTransposeSpec, isa: VectorISA = NEON) -> tirx.PrimFunc:
    """PrimFunc ``(weight, packed_weight)`` in the NEON layout ``[G, ceil(Cog/4), taps, 4]``
    (or ``[G, taps, Cog]`` in ``w`` mode)."""
    return x86_pack(spec, isa=isa)


def neon_compute(spec: ConvTransposeSpec, isa: VectorISA = NEON) -> tirx.PrimFunc:
    """PrimFunc ``(data, packed_weight, out)``: register-tiled phase nests sized for NEON."""
    return x86_compute(spec, isa=isa)


def schedule_neon(sch: s_tir.Schedule, target: Target) -> None:
    """The phase nests come scheduled from :func:`neon_compute`; this parallelises and
    vectorises the data padding, tapless-phase zeroing and fused epilogues."""
    schedule_x86(sch, target)


def supports_neon(spec: ConvTransposeSpec, target: Target) -> Optional[str]:
    if target.kind.name != "llvm":
        return f"target kind {target.kind.name} is not llvm"
    if not is_aarch64(target):
        return (f"mtriple {target.attrs.get('mtriple', '')!r} is not AArch64 (32-bit ARM has "
                "16 NEON registers; it uses cpu.generic)")
    return supports_float32(spec, "NEON")


def neon_workspace_bytes(spec: ConvTransposeSpec) -> int:
    return workspace_bytes(spec, isa=NEON)
