"""x86: the interleaved kernel (``x86.interleaved``) with its input-channel chunks as shipped
against the same kernel with other weight-slice budgets
(``x86_interleaved.WEIGHT_SLICE_BYTES``), per zoo layer, built whole through
``tvm_deconv.build`` and timed alternately in one process.

    python benchmarks/x86_input_chunks_ab.py pose_2048_256_k4s2 1 5 out.json
    python benchmarks/x86_input_chunks_ab.py all 1 3 out.json 32768

Arguments: layers (``all``: every zoo layer ``x86.interleaved`` takes), batch, rounds (each
round times every build once: median of 5 repeats of >= 50 ms), output JSON, and optionally
a second budget in bytes (small budgets chunk the input channels of layers the shipped one
leaves whole).  Always built: ``unchunked`` (no budget: the channel-tile-outer order).  Every
output is checked against the float64 reference first; ``speedup_over`` is each variant's
median time over the shipped one's.
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
from tvm_deconv.schedules import x86_interleaved  # noqa: E402
from tvm_deconv.testing import (conv_transpose_reference, random_inputs,  # noqa: E402
                                transposed_conv_module)
from x86_batch_order_ab import check_and_time  # noqa: E402
from x86_interleave_ab import interleaved_layers  # noqa: E402


def weight_slice_budget(budget: int):
    return mock.patch.object(x86_interleaved, "WEIGHT_SLICE_BYTES", budget)


def main(layers: str, batch: int, rounds: int, out_path: str, other_budget: int = 0) -> int:
    target = tvm_deconv.resolve_target("llvm")
    variants = [("shipped", contextlib.nullcontext), ("unchunked",
                                                      lambda: weight_slice_budget(1 << 62))]
    if other_budget:
        variants.append((f"budget_{other_budget}", lambda: weight_slice_budget(other_budget)))
    results = {}
    for name, spec in interleaved_layers(layers, batch, target):
        data, weight = random_inputs(spec, seed=1)
        ref = conv_transpose_reference(data, weight, spec)
        arg, vms = tvm.runtime.tensor(data), {}
        for tag, context in variants:
            with context():
                ex = tvm_deconv.build(transposed_conv_module(spec, weight), target,
                                      tuning_logs=False)
            vms[tag] = relax.VirtualMachine(ex, tvm.cpu())
        times, med, errors = check_and_time(vms, arg, ref, rounds)
        speedup = {t: med[t] / med["shipped"] for t in med if t != "shipped"}
        results[name] = {"batch": batch, "ms": times, "median_ms": med, "errors": errors,
                         "speedup_over": speedup}
        print(f"{name} N={batch}: " + ", ".join(f"{t} {m:.3f} ms" for t, m in med.items())
              + "; shipped over " + ", ".join(f"{t} {x:.2f}x" for t, x in speedup.items()),
              flush=True)
    Path(out_path).write_text(json.dumps({"target": str(target), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4],
                  *(int(a) for a in sys.argv[5:6])))
