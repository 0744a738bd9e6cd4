"""Zoo layers at a batch > 1, built with this session's batch handling of the x86 transposed
conv and without it, timed alternately in one process: ``batch_chunk`` (all phases a chunk
of images at a time; without: the whole batch per phase) or ``tile_order`` (channel tiles
outside the batch when a phase's weights outweigh an image; without: batch outermost).

    python benchmarks/x86_batch_order_ab.py batch_chunk \
        fsrcnn_x3_56_1_k9s3,fsrcnn_x2_56_1_k9s2,unet_512_256_k2s2 16 3 out.json
    python benchmarks/x86_batch_order_ab.py tile_order \
        pose_2048_256_k4s2,dcgan_512_256_k4s2 16 5 out.json   # what, layers, batch, rounds
"""
import json
import sys

import numpy as np
import tvm
from tvm import relax

import tvm_deconv
from tvm_deconv import zoo
from tvm_deconv.schedules import x86
from tvm_deconv.testing import (conv_transpose_reference, random_inputs, relative_error,
                                transposed_conv_module)


def whole_batch(spec, _lay):
    return spec.batch


def batch_outermost(dims, weight_bytes, _image_bytes):
    spatial = list(range(3, dims))
    return [0, 1] + spatial + [2] if weight_bytes <= x86.L2_WEIGHT_BYTES else [0, 1, 2] + spatial


WITHOUT = {"batch_chunk": whole_batch, "tile_order": batch_outermost}


def main(what, layers, batch, rounds, out_path):
    results = {}
    for name in layers.split(","):
        spec = next(layer for layer in zoo.LAYERS if layer.name == name).spec(batch)
        data, weight = random_inputs(spec, seed=1)
        ref = conv_transpose_reference(data, weight, spec)
        arg, vms, original = tvm.runtime.tensor(data), {}, getattr(x86, what)
        for tag, fn in (("with", original), ("without", WITHOUT[what])):
            setattr(x86, what, fn)
            ex = tvm_deconv.build(transposed_conv_module(spec, weight), "llvm", tuning_logs=False)
            vms[tag] = relax.VirtualMachine(ex, tvm.cpu())
        setattr(x86, what, original)
        errors = {t: relative_error(vm["main"](arg).numpy(), ref) for t, vm in vms.items()}
        assert max(errors.values()) < 1e-5, errors
        times = {t: [] for t in vms}
        for _ in range(rounds):
            for tag, vm in vms.items():
                timer = vm.time_evaluator("main", tvm.cpu(), number=1, repeat=5, min_repeat_ms=50)
                times[tag].append(timer(arg).median * 1e3)
        med = {t: float(np.median(v)) for t, v in times.items()}
        results[name] = {"batch": batch, "ms": times, "median_ms": med,
                         "speedup": med["without"] / med["with"]}
        print(f"{name} N={batch}: with {med['with']:.2f} ms, without {med['without']:.2f} ms, "
              f"{results[name]['speedup']:.2f}x", flush=True)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump({"what": what, "layers": results}, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
