"""Target presets (installed as ``tvm_deconv.targets``).

``resolve_target`` accepts a :class:`tvm.target.Target`, a target dict (TVM 0.27 takes JSON
dicts, not command-line strings), or one of the preset names below.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Callable, Union

import tvm
from tvm.target import Target

TargetLike = Union[Target, dict, str]

# CUDA limits MetaSchedule needs in the target (else "missing attribute max_threads_per_block").
_CUDA_LIMITS = {"max_threads_per_block": 1024, "max_shared_memory_per_block": 49152,
                "thread_warp_size": 32, "registers_per_block": 65536}


@functools.lru_cache(maxsize=None)
def _host_mattr() -> tuple[str, ...]:
    try:
        host_features = tvm.get_global_func("tvm.codegen.llvm.GetHostCPUFeatures")()
        return missing_feature_mattr(tvm.target.codegen.llvm_get_system_cpu(),
                                     {str(k): bool(v) for k, v in host_features.items()})
    except Exception as err:  # pylint: disable=broad-except
        logging.getLogger("tvm_deconv").warning(
            "tvm_deconv: could not read this CPU's features (%s); the host target uses LLVM's "
            "CPU name %r as is (give a target dict with 'mattr' if kernels die of SIGILL)",
            err, tvm.target.codegen.llvm_get_system_cpu())
        return ()


def _host_cpu() -> dict:
    """The machine we run on: LLVM's name for this CPU, the features of that CPU model which
    this machine lacks switched off, and its core count."""
    target = {"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu(),
              "num-cores": os.cpu_count() or 1}
    mattr = _host_mattr()
    if mattr:
        target["mattr"] = list(mattr)
    return target


def missing_feature_mattr(mcpu: str, host_features: dict[str, bool]) -> tuple[str, ...]:
    """``-feature`` flags for what CPU model ``mcpu`` has and ``host_features`` says is off.

    LLVM names the CPU from its family and model, but a hypervisor can hide features (a Zen 4
    VM without AVX-512): code for the CPU name then dies of SIGILL. Switching ``avx512f`` off
    also switches off what depends on it, so only the roots of the missing set are listed.
    """
    named = tvm.target.codegen.llvm_get_cpu_features(Target({"kind": "llvm", "mcpu": mcpu}))
    missing = {f for f in named if not host_features.get(f, True)}
    mattr: list[str] = []

    def still_on(flags):
        target = Target({"kind": "llvm", "mcpu": mcpu, **({"mattr": flags} if flags else {})})
        return {f for f in missing if tvm.target.codegen.llvm_cpu_has_features(f, target)}

    left = still_on(mattr)
    while left:  # greedily the flag that switches off most of what is left
        best = max(sorted(left), key=lambda f: len(left - still_on(mattr + [f"-{f}"])))
        mattr.append(f"-{best}")
        left = still_on(mattr)
    return tuple(mattr)


def _aarch64(mcpu: str | None = None, cores: int | None = None, mattr=("+neon",)) -> dict:
    target = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": list(mattr)}
    if mcpu:
        target["mcpu"] = mcpu
    if cores:
        target["num-cores"] = cores
    return target


def _cuda(arch: str, host: dict | None = None) -> dict:
    target = {"kind": "cuda", "arch": arch, **_CUDA_LIMITS}
    if host is not None:
        target["host"] = host
    return target


PRESETS: dict[str, Callable[[], dict]] = {
    "llvm": _host_cpu,
    "host": _host_cpu,
    "x86-avx2": lambda: {"kind": "llvm", "mcpu": "haswell", "num-cores": os.cpu_count() or 1},
    "x86-avx512": lambda: {"kind": "llvm", "mcpu": "skylake-avx512",
                           "num-cores": os.cpu_count() or 1},
    "aarch64": lambda: _aarch64(),
    "cortex-a53": lambda: _aarch64("cortex-a53", 4),     # Raspberry Pi 3
    "cortex-a72": lambda: _aarch64("cortex-a72", 4),     # Raspberry Pi 4
    "cortex-a76": lambda: _aarch64("cortex-a76", 4, ("+neon", "+dotprod", "+fullfp16")),  # Pi 5
    "cuda": lambda: _cuda("sm_90"),
    "h100": lambda: _cuda("sm_90"),
    "jetson-orin": lambda: _cuda("sm_87", host=_aarch64("cortex-a78", 8)),
}


class TargetError(ValueError):
    """A target that is neither a Target, a target dict nor a preset name."""


def resolve_target(target: TargetLike) -> Target:
    """A :class:`tvm.target.Target` from a Target, a dict or a preset name."""
    if isinstance(target, Target):
        return target
    if isinstance(target, dict):
        return Target(target)
    if isinstance(target, str):
        key = target.strip().lower()
        if key in PRESETS:
            return Target(PRESETS[key]())
        raise TargetError(
            f"unknown target {target!r}: use a preset ({', '.join(sorted(PRESETS))}), a "
            "tvm.target.Target, or a target dict such as {'kind': 'llvm', 'mcpu': 'znver3'}")
    raise TargetError(f"target must be a tvm.target.Target, dict or preset name, not "
                    f"{type(target).__name__}")
