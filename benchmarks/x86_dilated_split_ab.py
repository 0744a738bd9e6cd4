"""The packed conv kernel (``schedules/x86_dilated.py``) with its parallel split picked by
bytes moved (now) and with every parallel iteration splitting the positions only (before
session 7), timed alternately in one process: pix2pix's k4 s2 encoder convs and ASPP.

    python benchmarks/x86_dilated_split_ab.py 7 benchmarks/results/x86-znver3-dilated-split-ab.json
"""
import json
import sys

import numpy as np
from tvm import relax

import tvm_deconv
from tvm_deconv import bench, zoo
from tvm_deconv.plan import make_dilated_spec
from tvm_deconv.schedules import x86_dilated
from tvm_deconv.testing import random_inputs, relative_error

BY_BYTES = x86_dilated._parallel_split  # pylint: disable=protected-access
target = tvm_deconv.resolve_target("llvm")
specs = {f"pix2pix_conv_{ci}_{co}_{h}": make_dilated_spec((1, ci, h, h), (co, ci, 4, 4),
                                                          strides=2, padding=1)
         for ci, co, h in [(64, 128, 128), (128, 256, 64), (256, 512, 32), (512, 512, 16),
                           (512, 512, 8)]}
specs.update({l.name: l.spec() for l in zoo.DILATED_LAYERS if l.name.startswith("aspp")})
res = {}
for name, spec in specs.items():
    data, weight = random_inputs(spec, seed=1)
    op = {1: relax.op.nn.conv1d, 2: relax.op.nn.conv2d}[spec.ndim]
    mod = bench._one_op_module(op, spec.data_shape, spec.weight_shape, spec.dtype,
                               strides=spec.strides, padding=spec.pad_before + spec.pad_after,
                               dilation=spec.dilation)
    impls, splits = {}, {}
    for tag, split in (("positions_only", lambda s, p, total, t: (total, 1)),
                       ("by_bytes", BY_BYTES)):
        x86_dilated._parallel_split = split  # pylint: disable=protected-access
        lay = x86_dilated.dilated_layout(spec)
        splits[tag] = [lay.parts, lay.oc_parts]
        impls[tag] = bench.tvm_prepared(
            lambda: tvm_deconv.build(mod, target, {"w": weight}, tuning_logs=False), [data])
    x86_dilated._parallel_split = BY_BYTES  # pylint: disable=protected-access
    err = relative_error(impls["by_bytes"].run(), impls["positions_only"].run())
    times = bench.round_robin(impls, 3 * int(sys.argv[1]), 100)
    med = {t: float(np.median(v)) for t, v in times.items()}
    res[name] = dict(median_ms=med, parts_oc_parts=splits, rel_err=err,
                     speedup=med["positions_only"] / med["by_bytes"])
    print(name, json.dumps(res[name]), flush=True)
json.dump(res, open(sys.argv[2], "w"), indent=1)
