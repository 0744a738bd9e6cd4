"""Zoo layers built with 64-bit TIR indices (``tvm_deconv.build``'s CPU default) and with
TVM's NarrowDataType(32) left on, timed alternately in one process.

    python benchmarks/x86_index_width_ab.py all 7 \
        benchmarks/results/x86-znver3-index-width-ab.json   # layers (or 'all'), rounds, JSON
"""
import json
import sys

import numpy as np
from tvm import relax

import tvm_deconv.build
from tvm_deconv import bench, zoo
from tvm_deconv.testing import random_inputs, relative_error

B = sys.modules["tvm_deconv.build"]
WIDE = B.CPU_DISABLED_PASSES
target = tvm_deconv.resolve_target("llvm")
names = None if sys.argv[1] == "all" else sys.argv[1].split(",")
res = {}
for layer in [l for l in zoo.LAYERS if names is None or l.name in names]:
    spec = layer.spec(1)
    data, weight = random_inputs(spec, seed=1)
    op = {1: relax.op.nn.conv1d_transpose, 2: relax.op.nn.conv2d_transpose,
          3: relax.op.nn.conv3d_transpose}[spec.ndim]
    mod = bench._one_op_module(op, spec.data_shape, spec.weight_shape, spec.dtype,
                               strides=spec.strides, padding=spec.pad_before + spec.pad_after,
                               output_padding=spec.output_padding)
    impls = {}
    for tag, disabled in (("int32", ()), ("int64", WIDE)):
        B.CPU_DISABLED_PASSES = disabled
        impls[tag] = bench.tvm_prepared(
            lambda: B.build(mod, target, {"w": weight}, tuning_logs=False), [data])
    B.CPU_DISABLED_PASSES = WIDE
    err = relative_error(impls["int64"].run(), impls["int32"].run())
    times = bench.round_robin(impls, 3 * int(sys.argv[2]), 50)
    med = {t: float(np.median(v)) for t, v in times.items()}
    res[layer.name] = dict(median_ms=med, rel_err_int64_vs_int32=err,
                           speedup=med["int32"] / med["int64"])
    print(layer.name, json.dumps(res[layer.name]), flush=True)
speedups = [r["speedup"] for r in res.values()]
res["geomean_speedup"] = float(np.exp(np.mean(np.log(speedups))))
print("geomean", res["geomean_speedup"])
json.dump(res, open(sys.argv[3], "w"), indent=1)
