"""Threads of TVM's CPU runtime pool.

TVM's runtime sizes its thread pool once, on first use, from ``TVM_NUM_THREADS`` (or
``OMP_NUM_THREADS``), else from half the hardware threads on x86 (``MaxConcurrency`` in
``src/runtime/threading_backend.cc`` assumes every core has an SMT sibling).  Without SMT —
most VMs and containers, this 2-core machine among them — that leaves half the cores idle: every
parallel kernel, ours and TVM's default alike, ran on 1 of 2 cores while ONNX Runtime and
PyTorch used both.  Importing :mod:`tvm_deconv` sets ``TVM_NUM_THREADS`` to the physical cores
this process may run on, unless the user set either variable.
"""

from __future__ import annotations

import os
from typing import Optional

THREAD_VARIABLES = ("TVM_NUM_THREADS", "OMP_NUM_THREADS")


def physical_cores() -> int:
    """Physical cores available to this process (SMT siblings counted once)."""
    try:
        import psutil  # pylint: disable=import-outside-toplevel

        physical = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except ImportError:
        physical = os.cpu_count() or 1
    try:
        physical = min(physical, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        pass
    return max(1, physical)


def configure_runtime_threads() -> Optional[int]:
    """Set ``TVM_NUM_THREADS`` to :func:`physical_cores` unless the user set a thread
    variable; returns the count set, or ``None`` when the user's setting stands.  Takes effect
    only before TVM's runtime pool exists (its first parallel kernel), so it runs on import."""
    if any(v in os.environ for v in THREAD_VARIABLES):
        return None
    count = physical_cores()
    os.environ["TVM_NUM_THREADS"] = str(count)
    return count


def runtime_threads() -> int:
    """Threads of TVM's runtime pool (creates the pool if it does not exist yet)."""
    import tvm_ffi  # pylint: disable=import-outside-toplevel

    return int(tvm_ffi.get_global_func("runtime.NumThreads")())
