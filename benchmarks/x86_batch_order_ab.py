"""Zoo layers at a batch > 1, built with this session's batch handling of the x86 transposed
conv and with variants of it, timed alternately in one process:

* ``batch_chunk``: all phases a chunk of images at a time / without: the whole batch per phase;
* ``tile_order``: channel tiles outside the batch when a phase's weights outweigh an image /
  without: the batch outermost;
* ``pad_in_chunks``: each chunk makes its padded copy inside the chunk loop / without: the
  whole batch's copy is made before the chunks;
* ``chunk_share``: ``BATCH_CHUNK_BYTES`` 4 MiB (shipped) against 8 and 2 MiB;
* ``l2_share``: ``L2_WEIGHT_BYTES`` (channel tiles innermost up to this much weight per
  phase) 256 KiB against 512 KiB and 1 MiB (any batch, 1 too);
* ``oc_tile``: the transposed-conv kernel's oc-mode register tile with 2 channel vectors,
  as shipped against 6, 8 and 12 output columns.

    python benchmarks/x86_batch_order_ab.py batch_chunk \\
        fsrcnn_x3_56_1_k9s3,fsrcnn_x2_56_1_k9s2,unet3d_64_32_k4s2 16 3 out.json
    python benchmarks/x86_batch_order_ab.py tile_order \\
        pose_2048_256_k4s2,dcgan_512_256_k4s2 16 5 out.json   # what, layers, batch, rounds

Each variant's output is checked against the float64 reference before it is timed; the
speedups are the variants' median times over the shipped build's.
"""
import contextlib
import dataclasses
import json
import sys

import numpy as np
import tvm
from tvm import relax

import tvm_deconv
from tvm_deconv import strategy, zoo
from tvm_deconv.schedules import x86
from tvm_deconv.testing import (conv_transpose_reference, random_inputs, relative_error,
                                transposed_conv_module)


def whole_batch(spec, _plan, _lay):
    return spec.batch


def batch_outermost(dims, weight_bytes, _image_bytes):
    spatial = list(range(3, dims))
    return [0, 1] + spatial + [2] if weight_bytes <= x86.L2_WEIGHT_BYTES else [0, 1, 2] + spatial


SHIPPED_ARGS, SHIPPED_PAD = x86.compute_args_and_padded_data, x86._pad_block


def args_with_pad(spec, lay, packed_shape, pad=True):  # pylint: disable=unused-argument
    return SHIPPED_ARGS(spec, lay, packed_shape, pad=True)


def pad_outside_chunks(spec, lay, data, dpad, dshape, batch_chunk=None):
    if batch_chunk is None:
        SHIPPED_PAD(spec, lay, data, dpad, dshape)


VARIANTS = {  # what -> [(tag, {x86 attribute: value})], the shipped build first
    "batch_chunk": [("with", {}), ("without", {"batch_chunk": whole_batch})],
    "tile_order": [("with", {}), ("without", {"tile_order": batch_outermost})],
    "pad_in_chunks": [("with", {}), ("without", {"compute_args_and_padded_data": args_with_pad,
                                                  "_pad_block": pad_outside_chunks})],
    "chunk_share": [(f"{mib}MiB", {"BATCH_CHUNK_BYTES": mib << 20}) for mib in (4, 8, 2)],
    "l2_share": [(f"{kib}KiB", {"L2_WEIGHT_BYTES": kib << 10}) for kib in (256, 512, 1024)],
    "oc_tile": [("shipped", {})] + [
        (f"2x{cols}", {"X86": dataclasses.replace(x86.X86, oc_cols=(8, cols))})
        for cols in (6, 8, 12)],
}


@contextlib.contextmanager
def patched(attrs):
    saved = {name: getattr(x86, name) for name in attrs}
    for name, value in attrs.items():
        setattr(x86, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(x86, name, value)


def check_and_time(vms: dict, arg, ref, rounds: int) -> tuple[dict, dict, dict]:
    """Each VM's ``main(arg)`` checked against ``ref`` (1e-5), then timed alternately for
    ``rounds`` rounds (median of 5 repeats of >= 50 ms each): (ms per round, median ms,
    relative errors), by tag."""
    errors = {t: relative_error(vm["main"](arg).numpy(), ref) for t, vm in vms.items()}
    assert max(errors.values()) < 1e-5, errors
    times = {t: [] for t in vms}
    for _ in range(rounds):
        for tag, vm in vms.items():
            timer = vm.time_evaluator("main", tvm.cpu(), number=1, repeat=5, min_repeat_ms=50)
            times[tag].append(timer(arg).median * 1e3)
    return times, {t: float(np.median(v)) for t, v in times.items()}, errors


def main(what, layers, batch, rounds, out_path):
    results = {}
    for name in layers.split(","):
        spec = next(layer for layer in zoo.LAYERS if layer.name == name).spec(batch)
        data, weight = random_inputs(spec, seed=1)
        ref = conv_transpose_reference(data, weight, spec)
        arg, vms = tvm.runtime.tensor(data), {}
        for tag, attrs in VARIANTS[what]:
            # The knobs are x86.decomposed's: keep x86.interleaved (AVX-512) from taking the layer.
            with patched(attrs), strategy.declining(strategy.CONV_TRANSPOSE, "x86.interleaved",
                                                    "A/B of x86.decomposed's knobs"):
                ex = tvm_deconv.build(transposed_conv_module(spec, weight), "llvm",
                                      tuning_logs=False)
            vms[tag] = relax.VirtualMachine(ex, tvm.cpu())
        times, med, _ = check_and_time(vms, arg, ref, rounds)
        shipped = VARIANTS[what][0][0]
        speedup = {t: med[t] / med[shipped] for t in med if t != shipped}
        results[name] = {"batch": batch, "ms": times, "median_ms": med,
                         "shipped_speedup_over": speedup}
        print(f"{name} N={batch}: " + ", ".join(f"{t} {m:.2f} ms" for t, m in med.items())
              + "; shipped over " + ", ".join(f"{t} {x:.2f}x" for t, x in speedup.items()),
              flush=True)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump({"what": what, "layers": results}, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
