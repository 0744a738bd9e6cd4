"""x86 w-mode kernels with different accumulator budgets, timed alternately in one process.

    python benchmarks/x86_w_accumulators_ab.py fsrcnn_x3_56_1_k9s3,dcgan_64_3_k4s2 8,12 7 \
        out.json        # layers, budgets (the first is the baseline of the ratios), rounds

Each budget is the w-mode tile's accumulator registers on a 256-bit (AVX2) target
(``schedules/x86.py:AVX2_W_ACCUMULATORS``); the kernel PrimFunc and its weight packing are
built for the host, checked against float64 and timed with the same packed weight and
input.
"""
import json
import sys

import numpy as np
import tvm
from tvm import s_tir

import tvm_deconv
from tvm_deconv import zoo
from tvm_deconv.schedules import x86 as X86  # its module state is patched
from tvm_deconv.testing import conv_transpose_reference, relative_error


def built_kernel(spec, target):
    sch = s_tir.Schedule(X86.x86_compute(spec))
    X86.schedule_x86(sch, target)
    with target:
        kernel = tvm.compile(sch.mod, target).jit()
        pack = tvm.compile(X86.x86_pack(spec), target).jit()
    return kernel, pack


def main(layers, budgets, rounds, out_path):
    target, dev = tvm_deconv.resolve_target("llvm"), tvm.cpu()
    default = X86.AVX2_W_ACCUMULATORS
    results = {}
    for name in layers.split(","):
        spec = zoo.get(name).spec(1)
        rng = np.random.default_rng(0)
        x = rng.standard_normal(spec.data_shape).astype("float32")
        w = rng.standard_normal(spec.weight_shape).astype("float32")
        ref = conv_transpose_reference(x.astype("float64"), w.astype("float64"), spec)
        runs, tiles, errors = {}, {}, {}
        for budget in budgets:
            X86.AVX2_W_ACCUMULATORS = budget
            try:
                kernel, pack = built_kernel(spec, target)
                lay = X86.x86_layout(spec)
            finally:
                X86.AVX2_W_ACCUMULATORS = default
            packed = tvm.runtime.empty(lay.packed_shape, "float32", dev)
            pack["main"](tvm.runtime.tensor(w, dev), packed)
            args = [tvm.runtime.tensor(x, dev), packed,
                    tvm.runtime.empty(spec.out_shape, "float32", dev)]
            kernel["main"](*args)
            errors[budget] = relative_error(args[2].numpy().astype("float64"), ref)
            tiles[budget] = list(lay.tile)
            runs[budget] = (kernel.time_evaluator("main", dev, number=10, repeat=1), args)
        times = {b: [] for b in budgets}
        for _ in range(rounds):
            for budget, (timer, args) in runs.items():
                times[budget].append(timer(*args).mean * 1e3)
        med = {b: float(np.median(v)) for b, v in times.items()}
        base = budgets[0]
        results[name] = {"tiles": tiles, "rel_error": errors, "ms": times, "median_ms": med,
                         "time_vs_first": {b: med[b] / med[base] for b in budgets}}
        print(name, " ".join(f"{b}: {med[b]:.3f} ms tile {tiles[b]} ({med[b] / med[base]:.2f}x "
                             f"the time of {base}; err {errors[b]:.1e})" for b in budgets),
              flush=True)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], [int(b) for b in sys.argv[2].split(",")], int(sys.argv[3]), sys.argv[4])
