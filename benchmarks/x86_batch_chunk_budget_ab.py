"""Zoo layers at batch 16 built with three cache shares for ``schedules.x86.batch_chunk``
(``BATCH_CHUNK_BYTES`` 8, 4 and 2 MiB), timed alternately in one process.

    python benchmarks/x86_batch_chunk_budget_ab.py fsrcnn_x3_56_1_k9s3,fsrcnn_x2_56_1_k9s2
"""
import sys, numpy as np, tvm, tvm_deconv
from tvm import relax
from tvm_deconv import zoo
from tvm_deconv.schedules import x86
from tvm_deconv.testing import transposed_conv_module, random_inputs
for name in sys.argv[1].split(","):
    spec = next(l for l in zoo.LAYERS if l.name == name).spec(16); data, weight = random_inputs(spec, seed=1)
    arg = tvm.runtime.tensor(data); vms = {}
    for mb in (8, 4, 2):
        x86.BATCH_CHUNK_BYTES = mb << 20
        vms[mb] = (x86.batch_chunk(spec, x86.x86_layout(spec)), relax.VirtualMachine(tvm_deconv.build(transposed_conv_module(spec, weight), "llvm", tuning_logs=False), tvm.cpu()))
    res = {k: [] for k in vms}
    for _ in range(3):
        for k, (c, vm) in vms.items():
            res[k].append(vm.time_evaluator("main", tvm.cpu(), number=1, repeat=3, min_repeat_ms=50)(arg).median*1e3)
    print(name, {f"{k}MB(chunk {vms[k][0]})": round(float(np.median(v)), 1) for k, v in res.items()}, flush=True)
