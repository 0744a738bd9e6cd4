"""x86: the interleaved kernel (``x86.interleaved``) with its phases fused into the
interleave's tasks (per-task accumulators, as shipped) against the dense path (each phase a
parallel pass into a whole-output-sized accumulator, then one interleave pass), per zoo layer,
built whole through ``tvm_deconv.build`` and timed alternately in one process.

    python benchmarks/x86_fused_interleave_ab.py \\
        dcgan_512_256_k4s2,dcgan_256_128_k4s2,pose_2048_256_k4s2,pose_256_256_k4s2 1 7 \\
        benchmarks/results/x86-znver5-fused-interleave-ab-b1.json
    python benchmarks/x86_fused_interleave_ab.py pose_256_256_k4s2 16 3 out.json 32,128
    python benchmarks/x86_fused_interleave_ab.py all 1 3 out.json "" x86.phase_tile
    python benchmarks/x86_fused_interleave_ab.py --pad \
        dcgan_512_256_k4s2,dcgan_256_128_k4s2,pose_2048_256_k4s2,pose_256_256_k4s2 1 7 \
        benchmarks/results/x86-znver5-task-pad-ab-b1.json

Arguments: layers (``all``: every zoo layer ``x86.interleaved`` takes), batch, rounds (each
round times every build once: median of 5 repeats of >= 50 ms), output JSON, and optionally
task accumulator budgets in KiB (``x86_interleaved.TASK_ACC_BYTES``; 64 as shipped): the fused
path also built with each, and implementations to decline (comma-separated: the layers they
take then go to ``x86.interleaved``).  The dense path is the kernel with a budget of 0 (no
patch fits).  With ``--pad`` it compares the fused path's padded input copies instead: made
by each task (``task_pad``: ``x86_interleaved.PAD_IN_TASKS``, as shipped) against one copy
per batch chunk made before the tasks (``chunk_pad``).
Every output is checked against the float64 reference first; ``fused_speedup`` (with
``--pad``: ``task_pad_speedup``) is the baseline's median time over the shipped one's;
``workspace_bytes`` is each build's ``x86_interleaved.workspace_bytes`` on the benchmark
target.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from unittest import mock

import tvm
from tvm import relax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import tvm_deconv  # noqa: E402
from tvm_deconv import strategy  # noqa: E402
from tvm_deconv.schedules import x86_interleaved  # noqa: E402
from tvm_deconv.testing import (conv_transpose_reference, random_inputs,  # noqa: E402
                                transposed_conv_module)
from x86_batch_order_ab import check_and_time  # noqa: E402
from x86_interleave_ab import interleaved_layers  # noqa: E402


def patched(knobs: dict):
    """``x86_interleaved``'s module constants ``knobs`` (name -> value) set."""
    stack = contextlib.ExitStack()
    for name, value in knobs.items():
        stack.enter_context(mock.patch.object(x86_interleaved, name, value))
    return stack


def variants(budgets_kib: list, pad: bool) -> dict:
    """Tag -> knobs of each build, the shipped one first and the baseline second: the fused
    path, the dense path (``TASK_ACC_BYTES`` 0) and the fused path under each of
    ``budgets_kib``; with ``pad``, the task copies and the chunk copy (``PAD_IN_TASKS``)."""
    if pad:
        return {"task_pad": {"PAD_IN_TASKS": True}, "chunk_pad": {"PAD_IN_TASKS": False}}
    tags = {"fused": {"TASK_ACC_BYTES": x86_interleaved.TASK_ACC_BYTES},
            "dense": {"TASK_ACC_BYTES": 0}}
    tags.update({f"fused_{kib}KiB": {"TASK_ACC_BYTES": kib << 10} for kib in budgets_kib})
    return tags


def main(layers: str, batch: int, rounds: int, out_path: str, budgets_kib: str = "",
         declined: str = "", pad: bool = False) -> int:
    builds = variants([int(k) for k in budgets_kib.split(",") if k], pad)
    with contextlib.ExitStack() as stack:
        for name in filter(None, declined.split(",")):
            stack.enter_context(strategy.declining(strategy.CONV_TRANSPOSE, name, "A/B"))
        results = run(layers, batch, rounds, builds)
    results["declined"] = declined
    Path(out_path).write_text(json.dumps(results, indent=1))
    return 0


def run(layers: str, batch: int, rounds: int, builds: dict) -> dict:
    """``{"target": ..., "results": {layer: ...}}`` of the builds ``builds`` names
    (:func:`variants`)."""
    target = tvm_deconv.resolve_target("llvm")
    results = {}
    for name, spec in interleaved_layers(layers, batch, target):
        data, weight = random_inputs(spec, seed=1)
        ref = conv_transpose_reference(data, weight, spec)
        arg, vms, workspace = tvm.runtime.tensor(data), {}, {}
        for tag, knobs in builds.items():
            with patched(knobs), target:
                ex = tvm_deconv.build(transposed_conv_module(spec, weight), target,
                                      tuning_logs=False)
                workspace[tag] = x86_interleaved.workspace_bytes(spec)
            vms[tag] = relax.VirtualMachine(ex, tvm.cpu())
        times, med, errors = check_and_time(vms, arg, ref, rounds)
        shipped, baseline = list(builds)[:2]
        speedup = med[baseline] / med[shipped]
        results[name] = {"batch": batch, "ms": times, "median_ms": med, "errors": errors,
                         f"{shipped}_speedup": speedup, "workspace_bytes": workspace}
        print(f"{name} N={batch}: " + ", ".join(f"{t} {m:.3f} ms" for t, m in med.items())
              + f"; {shipped} over {baseline} {speedup:.3f}x; workspace "
              + ", ".join(f"{t} {b / 1024:.1f} KiB" for t, b in workspace.items()), flush=True)
    return {"target": str(target), "results": results}


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--pad"]
    sys.exit(main(args[0], int(args[1]), int(args[2]), args[3], *args[4:6],
                  pad="--pad" in sys.argv))
