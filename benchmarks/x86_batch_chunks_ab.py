"""x86: the interleaved kernel (``x86.interleaved``) going through the batch in chunks of
images (``x86_interleaved.batch_chunk``, as shipped) against the same kernel over the whole
batch per pass, per zoo layer, built whole through ``tvm_deconv.build`` and timed alternately
in one process.

    python benchmarks/x86_batch_chunks_ab.py all 16 3 benchmarks/results/x86-znver5-batch-chunks-b16.json

Arguments: layers (``all``: every zoo layer ``x86.interleaved`` takes and chunks), batch,
rounds (each round times every build once: median of 5 repeats of >= 50 ms), output JSON.
Every output is checked against the float64 reference first; ``chunked_speedup`` is the
whole-batch build's median time over the chunked one's.
"""

from __future__ import annotations

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


def images_per_chunk(spec, target) -> int:
    sch = tvm.s_tir.Schedule(x86_interleaved.interleaved_compute(spec))
    with target:
        fused = bool(x86_interleaved.task_patches(sch)[1])
        return x86_interleaved.batch_chunk(sch, x86_interleaved.per_chunk_roles(
            fused, x86_interleaved._weight_streams(sch)))


def main(layers: str, batch: int, rounds: int, out_path: str) -> int:
    target = tvm_deconv.resolve_target("llvm")
    results = {}
    for name, spec in interleaved_layers(layers, batch, target):
        images = images_per_chunk(spec, target)
        if images >= batch:
            print(f"{name}: {images} images per pass: no chunks, skipped")
            continue
        data, weight = random_inputs(spec, seed=1)
        ref = conv_transpose_reference(data, weight, spec)
        arg, vms = tvm.runtime.tensor(data), {}
        for tag, chunk in (("chunked", None), ("whole", batch)):
            with mock.patch.object(x86_interleaved, "batch_chunk",
                                   x86_interleaved.batch_chunk if chunk is None
                                   else lambda sch, per_chunk, c=chunk: c):
                ex = tvm_deconv.build(transposed_conv_module(spec, weight), target,
                                      tuning_logs=False)
            vms[tag] = relax.VirtualMachine(ex, tvm.cpu())
        times, med, errors = check_and_time(vms, arg, ref, rounds)
        speedup = med["whole"] / med["chunked"]
        results[name] = {"batch": batch, "images_per_chunk": images, "ms": times,
                         "median_ms": med, "errors": errors, "chunked_speedup": speedup}
        print(f"{name} N={batch} ({images} images per chunk): chunked {med['chunked']:.2f} ms, "
              f"whole {med['whole']:.2f} ms; chunked {speedup:.2f}x", flush=True)
    Path(out_path).write_text(json.dumps({"target": str(target), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
