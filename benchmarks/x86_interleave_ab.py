"""x86: the interleaved kernel (``x86.interleaved``: dense phase GEMMs, then one interleave
pass) against ``x86.decomposed`` (register tiles written straight to the strided output), per
zoo layer, built whole through ``tvm_deconv.build`` and timed alternately in one process.

    python benchmarks/x86_interleave_ab.py all 1 5 benchmarks/results/x86-znver5-interleave-b1.json
    python benchmarks/x86_interleave_ab.py unet_512_256_k2s2,pose_2048_256_k4s2 16 3 out.json
    python benchmarks/x86_interleave_ab.py all 1 5 out.json 16   # + tiles of 16 accumulators

Arguments: layers (``all``: every zoo layer ``x86.interleaved`` takes), batch, rounds (each
round times every build once: median of 5 repeats of >= 50 ms), output JSON, and optionally
an accumulator count: the interleaved kernel also built with tiles of that many accumulator
registers (``x86_interleaved.ACCUMULATORS``, 12 as shipped).  Every output is checked against
the float64 reference first; ``interleaved_speedup`` is the decomposed kernel's median time
over the interleaved one's, ``accumulators_speedup`` the shipped tiles' time over the others'.
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
from tvm_deconv import strategy, zoo  # noqa: E402
from tvm_deconv.schedules import x86_interleaved  # noqa: E402
from tvm_deconv.testing import (conv_transpose_reference, random_inputs,  # noqa: E402
                                transposed_conv_module)
from x86_batch_order_ab import check_and_time  # noqa: E402

INTERLEAVED = "x86.interleaved"


def accumulators(count: int):
    return mock.patch.object(x86_interleaved, "ACCUMULATORS", count)


def interleaved_layers(layers: str, batch: int, target):
    """``(name, spec)`` of the zoo layers named in ``layers`` (``all``: every one) at ``batch``
    that ``x86.interleaved`` takes on ``target``; the others are printed as skipped."""
    names = [layer.name for layer in zoo.LAYERS] if layers == "all" else layers.split(",")
    for name in names:
        spec = zoo.get(name).spec(batch)
        picked = strategy.select(strategy.CONV_TRANSPOSE, spec, target).implementation.name
        if picked != INTERLEAVED:
            print(f"{name}: {picked} takes it, skipped")
            continue
        yield name, spec


def main(layers: str, batch: int, rounds: int, out_path: str, other_accumulators: int = 0
         ) -> int:
    target = tvm_deconv.resolve_target("llvm")
    results = {}
    for name, spec in interleaved_layers(layers, batch, target):
        data, weight = random_inputs(spec, seed=1)
        ref = conv_transpose_reference(data, weight, spec)
        arg, vms = tvm.runtime.tensor(data), {}
        variants = [("interleaved", contextlib.nullcontext()),
                    ("decomposed", strategy.declining(strategy.CONV_TRANSPOSE, INTERLEAVED,
                                                      "A/B"))]
        if other_accumulators:
            variants.append((f"interleaved_{other_accumulators}acc",
                             accumulators(other_accumulators)))
        for tag, context in variants:
            with context:
                ex = tvm_deconv.build(transposed_conv_module(spec, weight), target,
                                      tuning_logs=False)
            vms[tag] = relax.VirtualMachine(ex, tvm.cpu())
        times, med, errors = check_and_time(vms, arg, ref, rounds)
        speedup = med["decomposed"] / med["interleaved"]
        results[name] = {"batch": batch, "ms": times, "median_ms": med, "errors": errors,
                         "interleaved_speedup": speedup}
        if other_accumulators:
            results[name]["accumulators_speedup"] = (
                med[f"interleaved_{other_accumulators}acc"] / med["interleaved"])
        print(f"{name} N={batch}: " + ", ".join(f"{t} {m:.3f} ms" for t, m in med.items())
              + f"; interleaved over decomposed {speedup:.2f}x", flush=True)
    Path(out_path).write_text(json.dumps({"target": str(target), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4],
                  *(int(a) for a in sys.argv[5:6])))
