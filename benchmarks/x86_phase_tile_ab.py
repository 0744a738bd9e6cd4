"""x86: the phase-tile kernel (``x86.phase_tile``: every phase of an output patch in one
register tile, the input read as it is, phases interleaved in registers) against the kernel
that takes the layer without it, per layer, built whole through ``tvm_deconv.build`` and
timed alternately in one process.

    python benchmarks/x86_phase_tile_ab.py cyclegan_128_64_k3s2,dcgan_128_64_k4s2 1 5 out.json

Arguments: zoo layers, batch, rounds (each round times every build once: median of 5
repeats of >= 50 ms), output JSON.  Every output is checked against the float64 reference
first; ``phase_tile_speedup`` is the other kernel's median time over the phase-tile kernel's.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import tvm
from tvm import relax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import tvm_deconv  # noqa: E402
from tvm_deconv import strategy, zoo  # noqa: E402
from tvm_deconv.testing import (conv_transpose_reference, random_inputs,  # noqa: E402
                                transposed_conv_module)
from x86_batch_order_ab import check_and_time  # noqa: E402

PHASE_TILE = "x86.phase_tile"


def main(layers: str, batch: int, rounds: int, out_path: str) -> int:
    target = tvm_deconv.resolve_target("llvm")
    results = {}
    for name in layers.split(","):
        spec = zoo.get(name).spec(batch)
        picked = strategy.select(strategy.CONV_TRANSPOSE, spec, target).implementation.name
        if picked != PHASE_TILE:
            print(f"{name}: {picked} takes it, skipped")
            continue
        with strategy.declining(strategy.CONV_TRANSPOSE, PHASE_TILE, "A/B"):
            other = strategy.select(strategy.CONV_TRANSPOSE, spec, target).implementation.name
        data, weight = random_inputs(spec, seed=1)
        ref = conv_transpose_reference(data, weight, spec)
        arg, vms = tvm.runtime.tensor(data), {}
        for tag in (PHASE_TILE, other):
            with (strategy.declining(strategy.CONV_TRANSPOSE, PHASE_TILE, "A/B") if tag != PHASE_TILE
                  else contextlib.nullcontext()):
                ex = tvm_deconv.build(transposed_conv_module(spec, weight), target,
                                      tuning_logs=False)
            vms[tag] = relax.VirtualMachine(ex, tvm.cpu())
        times, med, errors = check_and_time(vms, arg, ref, rounds)
        results[name] = {"batch": batch, "ms": times, "median_ms": med, "errors": errors,
                         "other": other, "phase_tile_speedup": med[other] / med[PHASE_TILE]}
        print(name, json.dumps(results[name]), flush=True)
    Path(out_path).write_text(json.dumps({"target": str(target), "layers": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
