"""Zoo layers at a batch > 1 whose batch goes through the phases in chunks, built with each
chunk's padded copy made inside the chunk (as ``schedules.x86`` does) and with the whole
batch's copy made before the chunks, timed alternately in one process.

    python benchmarks/x86_pad_in_chunks_ab.py fsrcnn_x3_56_1_k9s3,unet3d_64_32_k2s2 16 5
"""
import sys, numpy as np, tvm, tvm_deconv
from tvm import relax
from tvm_deconv import zoo
from tvm_deconv.schedules import x86
from tvm_deconv.testing import transposed_conv_module, random_inputs, conv_transpose_reference, relative_error
orig_args, orig_pad = x86.compute_args_and_padded_data, x86._pad_block
def old_args(spec, lay, packed_shape, pad=True): return orig_args(spec, lay, packed_shape, True)
def old_pad(spec, lay, data, dpad, dshape, batch_chunk=None):
    if batch_chunk is None: orig_pad(spec, lay, data, dpad, dshape)
for name in sys.argv[1].split(","):
    spec = next(l for l in zoo.LAYERS if l.name == name).spec(int(sys.argv[2])); data, weight = random_inputs(spec, seed=1)
    ref = conv_transpose_reference(data, weight, spec)
    arg = tvm.runtime.tensor(data); vms = {}
    for tag, (a, p) in (("pad_in_chunks", (orig_args, orig_pad)), ("pad_before", (old_args, old_pad))):
        x86.compute_args_and_padded_data, x86._pad_block = a, p
        vms[tag] = relax.VirtualMachine(tvm_deconv.build(transposed_conv_module(spec, weight), "llvm", tuning_logs=False), tvm.cpu())
    x86.compute_args_and_padded_data, x86._pad_block = orig_args, orig_pad
    for t, vm in vms.items(): assert relative_error(vm["main"](arg).numpy(), ref) < 1e-5, t
    res = {k: [] for k in vms}
    for _ in range(int(sys.argv[3])):
        for k, vm in vms.items():
            res[k].append(vm.time_evaluator("main", tvm.cpu(), number=1, repeat=3, min_repeat_ms=50)(arg).median*1e3)
    m = {k: float(np.median(v)) for k, v in res.items()}
    print(name, {k: round(v, 1) for k, v in m.items()}, "speedup %.2fx" % (m["pad_before"] / m["pad_in_chunks"]), flush=True)
