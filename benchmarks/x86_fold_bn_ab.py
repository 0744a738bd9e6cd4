"""Zoo models built with and without FoldBatchNorm, timed alternately in one process.

    python benchmarks/x86_fold_bn_ab.py dcgan,pix2pix_unet 9 \
        benchmarks/results/x86-znver3-fold-bn-ab.json     # models, rounds, JSON out
"""
import json
import sys
import time

import numpy as np
import tvm
from tvm import relax
import tvm_deconv
import tvm_deconv.build
B = sys.modules["tvm_deconv.build"]
from tvm_deconv.models import build_model
from tvm_deconv.testing import relative_error

@tvm.transform.module_pass(opt_level=0, name="NoFold")
class NoFold:
    def transform_module(self, mod, _ctx):
        return mod

res = {}
FOLD = B.FoldBatchNorm
for name in sys.argv[1].split(","):
    b = build_model(name, batch=1)
    x = [tvm.runtime.tensor(v) for v in b.random_inputs()]
    fns, outs = {}, {}
    for tag, fold in (("fold", FOLD), ("no_fold", NoFold)):
        B.FoldBatchNorm = fold
        ex = tvm_deconv.build(b.mod, "llvm", b.params, tuning_logs=False)
        vm = relax.VirtualMachine(ex, tvm.cpu())
        outs[tag] = vm["main"](*x).numpy()
        fns[tag] = vm.time_evaluator("main", tvm.cpu(), number=1, repeat=1, min_repeat_ms=300)
    err = relative_error(outs["fold"], outs["no_fold"])
    times = {t: [] for t in fns}
    for _ in range(int(sys.argv[2])):
        for t, f in fns.items():
            time.sleep(0.25); times[t].append(f(*x).mean * 1e3)
    med = {t: float(np.median(v)) for t, v in times.items()}
    res[name] = dict(median_ms=med, spread={t: [min(v), max(v)] for t, v in times.items()},
                     rel_err_fold_vs_not=err, speedup=med["no_fold"] / med["fold"])
    print(name, json.dumps(res[name]), flush=True)
json.dump(res, open(sys.argv[3], "w"), indent=1)
