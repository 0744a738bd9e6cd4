"""Strategy registry: which implementation lowers a transposed conv for a target.

The Relax-era successor of Relay's ``OpStrategy``: implementations are registered per op with
the target keys they serve (``"cpu"``, ``"arm_cpu"``, ``"cuda"``, ``"gpu"``), a priority and a
predicate on the :class:`~tvm_deconv.plan.ConvTransposeSpec`.  :func:`select` returns the
highest-priority implementation whose keys and predicate accept the call, plus the reasons the
others declined (so a fallback to TVM's default can say why).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

from tvm import s_tir, tirx
from tvm.target import Target

from .plan import ConvTransposeSpec

logger = logging.getLogger("tvm_deconv")

CONV_TRANSPOSE = "conv_transpose"
DILATED_CONV = "dilated_conv"

Predicate = Callable[[ConvTransposeSpec, Target], Optional[str]]
"""Returns ``None`` when the implementation handles the call, else the reason it cannot."""
Schedule = Callable[[s_tir.Schedule, Target], None]
"""Schedules every decomposed-conv block (and fused epilogue) of a PrimFunc in place."""
Space = Callable[[s_tir.Schedule, Target], list]
"""A MetaSchedule design space: samples knobs on a copy (or copies) of the schedule and
returns them (``sch.sample_perfect_tile``, ``sample_categorical``: the successor of an
AutoTVM template)."""


@dataclass(frozen=True)
class Implementation:
    """One way to lower an op on some targets.

    ``compute`` builds the PrimFunc ``(data, weight, out)``; with ``pack`` set,
    ``pack(spec)`` is a PrimFunc ``(weight, packed_weight)`` run first (FoldConstant runs it at
    compile time when the weight is a constant) and ``compute``'s second argument is the
    packed weight.  ``schedule`` (applied after FuseOps/FuseTIR, so it sees fused epilogues)
    makes the compute fast; ``None`` leaves it to the target's stock scheduling (dlight on
    GPUs).  ``space_compute`` and ``space`` are the implementation's tuning design space
    (MetaSchedule's ``ours`` space): a compute taking the same packed weight, in a form TIR's
    schedule primitives accept, and the :data:`Space` sampling its schedules.  ``workspace``
    (called under the target) gives the bytes it needs beyond the weight and the output
    (packed-weight growth, padded copies, phase buffers); ``None``: none reported.
    With ``scheduled`` set, ``compute`` returns a finished kernel (thread-bound TIR, no
    blocks): it is neither scheduled nor fused with its neighbours, and ``kernel_target``
    (if set) maps the build target to the one it compiles for (``sm_90`` to ``sm_90a``).
    """

    name: str
    target_keys: tuple[str, ...]
    priority: int
    compute: Callable[[ConvTransposeSpec], tirx.PrimFunc]
    schedule: Optional[Schedule] = None
    pack: Optional[Callable[[ConvTransposeSpec], tirx.PrimFunc]] = None
    space_compute: Optional[Callable[[ConvTransposeSpec], tirx.PrimFunc]] = None
    space: Optional[Space] = None
    predicate: Predicate = field(default=lambda spec, target: None)
    workspace: Optional[Callable[[ConvTransposeSpec], int]] = None
    scheduled: bool = False
    kernel_target: Optional[Callable[[Target], Target]] = None

    def serves(self, target: Target) -> bool:
        """Whether ``target`` has one of this implementation's target keys."""
        return not self.target_keys or bool(set(self.target_keys) & set(target.keys))

    def applies_to(self, spec: ConvTransposeSpec, target: Target) -> Optional[str]:
        """``None`` if this implementation takes the call, else why not."""
        if not self.serves(target):
            return f"target keys {list(target.keys)} not in {list(self.target_keys)}"
        return self.predicate(spec, target)


@dataclass
class Selection:
    implementation: Optional[Implementation]
    declined: list[tuple[str, str]]

    def reason(self) -> str:
        if not self.declined:
            return "no implementation is registered"
        return "; ".join(f"{name}: {why}" for name, why in self.declined)


_REGISTRY: dict[str, list[Implementation]] = {}


def register(op: str, implementation: Implementation) -> Implementation:
    """Add (or replace, by name) an implementation of ``op``."""
    impls = [i for i in _REGISTRY.setdefault(op, []) if i.name != implementation.name]
    impls.append(implementation)
    impls.sort(key=lambda i: -i.priority)
    _REGISTRY[op] = impls
    return implementation


def implementations(op: str) -> list[Implementation]:
    _load_builtin()
    return list(_REGISTRY.get(op, []))


def get(name: str) -> Implementation:
    """The implementation registered under ``name`` (names are unique across ops)."""
    _load_builtin()
    for impls in _REGISTRY.values():
        for impl in impls:
            if impl.name == name:
                return impl
    raise KeyError(f"no implementation {name!r}; registered: "
                   f"{[i.name for impls in _REGISTRY.values() for i in impls]}")


@contextlib.contextmanager
def declining(op: str, name: str, why: str = "switched off") -> Iterator[None]:
    """Within the context, implementation ``name`` of ``op`` declines every call with ``why``
    (A/B runs and tests: the kernel a call gets without it)."""
    impl = get(name)
    register(op, dataclasses.replace(impl, predicate=lambda spec, target: why))
    try:
        yield
    finally:
        register(op, impl)


def select(op: str, spec: ConvTransposeSpec, target: Target) -> Selection:
    declined = []
    for impl in implementations(op):
        why = impl.applies_to(spec, target)
        if why is None:
            return Selection(impl, declined)
        declined.append((impl.name, why))
    return Selection(None, declined)


def _load_builtin() -> None:
    # The per-target schedule modules register themselves on import.
    from . import schedules  # noqa: F401  pylint: disable=import-outside-toplevel
