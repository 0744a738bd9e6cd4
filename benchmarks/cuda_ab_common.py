"""Helpers of the CUDA A/B scripts (benchmarks/cuda_*_ab.py): one-layer Relax modules, random
cases with their float64 result through PyTorch on the GPU, and timing of TVM and cuDNN.

The zoo benchmark on the GPU is ``tvm-deconv bench --target cuda`` (tvm_deconv/bench.py and
bench_gpu.py; it replaced this file's zoo runner, ``benchmarks/cuda_zoo.py``, in session 19).
"""

from __future__ import annotations

import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import tvm  # noqa: E402
from tvm import relax  # noqa: E402

import tvm_deconv  # noqa: E402
from tvm_deconv.bench_gpu import time_cuda  # noqa: E402
from tvm_deconv.bench_gpu import torch_conv_transpose as torch_conv  # noqa: E402
from tvm_deconv.testing import relative_error  # noqa: E402

OPS = {1: relax.op.nn.conv1d_transpose, 2: relax.op.nn.conv2d_transpose,
       3: relax.op.nn.conv3d_transpose}


def one_layer(spec) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(spec.data_shape, spec.dtype))
    w = relax.Var("w", relax.TensorType(spec.weight_shape, spec.dtype))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            y = bb.emit(OPS[spec.ndim](x, w, strides=spec.strides,
                                       padding=spec.pad_before + spec.pad_after,
                                       output_padding=spec.output_padding,
                                       dilation=spec.dilation, groups=spec.groups))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def random_case(spec):
    """Random inputs of ``spec`` (seed 0, its dtype), on the host and the GPU, and the float64
    result of those inputs through torch: ``(x, w, x_gpu, w_gpu, ref)``."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(spec.data_shape).astype(spec.dtype)
    w = rng.standard_normal(spec.weight_shape).astype(spec.dtype)
    xt, wt = torch.from_numpy(x).cuda(), torch.from_numpy(w).cuda()
    return x, w, xt, wt, torch_conv(spec, xt.double(), wt.double()).cpu().numpy()


def time_tvm(vm, dev, args, budget_s):
    """Median ms of VM main(*args): warm-up, then repeats of `number` calls each."""
    vm["main"](*args)
    dev.sync()
    t0 = time.perf_counter()
    vm["main"](*args)
    dev.sync()
    once = time.perf_counter() - t0
    number = max(1, min(100, int(0.01 / max(once, 1e-6))))
    repeat = max(3, min(30, int(budget_s / max(once * number, 1e-6))))
    res = vm.time_evaluator("main", dev, number=number, repeat=repeat)(*args)
    return float(np.median(np.asarray(res.results)) * 1e3), number, repeat


def time_cudnn(spec, x, w) -> float:
    """Median ms of cuDNN's transposed conv of ``spec`` on torch tensors ``x``, ``w``, timed as
    ``tvm-deconv bench`` times it (:func:`~tvm_deconv.bench_gpu.time_cuda`: calls back to back,
    as TVM's time_evaluator runs ours; the caller sets the TF32 and benchmark flags)."""
    return statistics.median(time_cuda(lambda: torch_conv(spec, x, w), repeat=15,
                                       min_repeat_ms=10))


def build_check_time(row, key, spec, x, w, ref, dev, budget_s, decompose=True):
    """Build ``spec`` as one layer through ``tvm_deconv.build`` (weight constant, no tuning
    logs; ``decompose=False``: TVM's default lowering), check its output against ``ref`` and
    time it: ``row[key + "_err"]`` and ``row[key + "_ms"]``, or ``row[key + "_error"]`` where
    it fails."""
    try:
        ex = tvm_deconv.build(one_layer(spec), "cuda", params={"w": w}, tuning_logs=False,
                              decompose=decompose)
        vm = relax.VirtualMachine(ex, dev)
        x_nd = tvm.runtime.tensor(x, dev)
        out = vm["main"](x_nd).numpy().astype("float64")
        row[key + "_err"] = relative_error(out, ref)
        row[key + "_ms"] = time_tvm(vm, dev, [x_nd], budget_s)[0]
        print(f"  {key}: {row[key + '_ms']:.4f} ms, error {row[key + '_err']:.1e}", flush=True)
    except Exception as err:  # pylint: disable=broad-except
        row[key + "_error"] = f"{type(err).__name__}: {str(err)[:200]}"
        traceback.print_exc()
