"""Zoo models built with and without FusePrologue, timed alternately in one process.

    python benchmarks/x86_fuse_prologue_ab.py pix2pix_unet,hifigan 7 \
        benchmarks/results/x86-znver4-noavx512-fuse-prologue-ab.json   # models, rounds, JSON
"""
import json
import sys

import numpy as np
import tvm
from tvm import relax

import tvm_deconv
from tvm_deconv.models import build_model
from tvm_deconv.testing import relative_error

BUILD = sys.modules["tvm_deconv.build"]
FUSE = BUILD.FusePrologue


def main(names, rounds, out_path):
    results = {}
    for name in names.split(","):
        bundle = build_model(name, batch=1)
        args = [tvm.runtime.tensor(v) for v in bundle.random_inputs()]
        vms = {}
        for tag, make in (("fused", FUSE), ("unfused", lambda: tvm.transform.Sequential([]))):
            BUILD.FusePrologue = make
            vms[tag] = relax.VirtualMachine(
                tvm_deconv.build(bundle.mod, "llvm", bundle.params, tuning_logs=False), tvm.cpu())
        BUILD.FusePrologue = FUSE
        outs = {t: vm["main"](*args).numpy() for t, vm in vms.items()}
        times = {t: [] for t in vms}
        for _ in range(rounds):
            for tag, vm in vms.items():
                timer = vm.time_evaluator("main", tvm.cpu(), number=1, repeat=3)
                times[tag].append(timer(*args).median * 1e3)
        med = {t: float(np.median(v)) for t, v in times.items()}
        results[name] = {"ms": times, "median_ms": med,
                         "speedup": med["unfused"] / med["fused"],
                         "rel_error": relative_error(outs["fused"], outs["unfused"])}
        print(f"{name}: fused {med['fused']:.2f} ms, unfused {med['unfused']:.2f} ms, "
              f"{results[name]['speedup']:.3f}x", flush=True)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
