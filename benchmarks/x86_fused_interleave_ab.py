"""x86: the interleaved kernel (``x86.interleaved``) with its phases fused into the
interleave's tasks (per-task accumulators, as shipped) against the dense path (each phase a
parallel pass into a whole-output-sized accumulator, then one interleave pass), per zoo layer,
built whole through ``tvm_deconv.build`` and timed alternately in one process.

    python benchmarks/x86_fused_interleave_ab.py \\
        dcgan_512_256_k4s2,dcgan_256_128_k4s2,pose_2048_256_k4s2,pose_256_256_k4s2 1 7 \\
        benchmarks/results/x86-znver5-fused-interleave-ab-b1.json
    python benchmarks/x86_fused_interleave_ab.py pose_256_256_k4s2 16 3 out.json 32,128
    python benchmarks/x86_fused_interleave_ab.py all 1 3 out.json "" x86.phase_tile

Arguments: layers (``all``: every zoo layer ``x86.interleaved`` takes), batch, rounds (each
round times every build once: median of 5 repeats of >= 50 ms), output JSON, and optionally
task accumulator budgets in KiB (``x86_interleaved.TASK_ACC_BYTES``; 64 as shipped): the fused
path also built with each, and implementations to decline (comma-separated: the layers they
take then go to ``x86.interleaved``).  The dense path is the kernel with a budget of 0 (no
patch fits).
Every output is checked against the float64 reference first; ``fused_speedup`` is the dense
path's median time over the fused one's; ``workspace_bytes`` is each build's
``x86_interleaved.workspace_bytes`` on the benchmark target.
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


def task_budget(nbytes: int):
    return mock.patch.object(x86_interleaved, "TASK_ACC_BYTES", nbytes)


def variants(budgets_kib: list) -> dict:
    """Tag -> ``TASK_ACC_BYTES`` of each build: the shipped fused path, the dense path, and
    the fused path under each of ``budgets_kib``."""
    tags = {"fused": x86_interleaved.TASK_ACC_BYTES, "dense": 0}
    tags.update({f"fused_{kib}KiB": kib << 10 for kib in budgets_kib})
    return tags


def main(layers: str, batch: int, rounds: int, out_path: str, budgets_kib: str = "",
         declined: str = "") -> int:
    budgets = variants([int(k) for k in budgets_kib.split(",") if k])
    with contextlib.ExitStack() as stack:
        for name in filter(None, declined.split(",")):
            stack.enter_context(strategy.declining(strategy.CONV_TRANSPOSE, name, "A/B"))
        results = run(layers, batch, rounds, budgets)
    results["declined"] = declined
    Path(out_path).write_text(json.dumps(results, indent=1))
    return 0


def run(layers: str, batch: int, rounds: int, budgets: dict) -> dict:
    """``{"target": ..., "results": {layer: ...}}`` of the builds ``budgets`` names."""
    target = tvm_deconv.resolve_target("llvm")
    results = {}
    for name, spec in interleaved_layers(layers, batch, target):
        data, weight = random_inputs(spec, seed=1)
        ref = conv_transpose_reference(data, weight, spec)
        arg, vms, workspace = tvm.runtime.tensor(data), {}, {}
        for tag, nbytes in budgets.items():
            with task_budget(nbytes), target:
                ex = tvm_deconv.build(transposed_conv_module(spec, weight), target,
                                      tuning_logs=False)
                workspace[tag] = x86_interleaved.workspace_bytes(spec)
            vms[tag] = relax.VirtualMachine(ex, tvm.cpu())
        times, med, errors = check_and_time(vms, arg, ref, rounds)
        speedup = med["dense"] / med["fused"]
        results[name] = {"batch": batch, "ms": times, "median_ms": med, "errors": errors,
                         "fused_speedup": speedup, "workspace_bytes": workspace}
        print(f"{name} N={batch}: " + ", ".join(f"{t} {m:.3f} ms" for t, m in med.items())
              + f"; fused over dense {speedup:.3f}x; workspace "
              + ", ".join(f"{t} {b / 1024:.1f} KiB" for t, b in workspace.items()), flush=True)
    return {"target": str(target), "results": results}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], *sys.argv[5:7]))
