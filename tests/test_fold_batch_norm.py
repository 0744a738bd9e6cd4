"""FoldBatchNorm: inference batch norms folded into the conv before them (float64 references)."""

import numpy as np
import pytest
import tvm
from tvm import relax

import tvm_deconv
from tvm_deconv.dilated import dilated_conv_reference
from tvm_deconv.fold_batch_norm import FoldBatchNorm
from tvm_deconv.plan import make_dilated_spec, make_spec
from tvm_deconv.testing import conv_transpose_reference, random_inputs, relative_error

EPS = 1e-3


def _stats(channels: int, seed: int = 11):
    rng = np.random.default_rng(seed)
    return [rng.uniform(0.5, 1.5, channels), rng.standard_normal(channels),
            rng.standard_normal(channels), rng.uniform(0.5, 1.5, channels)]


def _module(op, spec, weight, stats, relu: bool, weight_param: bool = False):
    """``relu?(batch_norm(op(x, W)))``; ``weight_param``: W a function parameter."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(spec.data_shape, "float32"))
    w = relax.Var("w", relax.TensorType(weight.shape, "float32"))
    params = [x, w] if weight_param else [x]
    with bb.function("main", params):
        with bb.dataflow():
            y = bb.emit(op(x, w if weight_param else relax.const(weight),
                           strides=spec.strides, padding=spec.pad_before + spec.pad_after,
                           groups=spec.groups))
            bn = relax.op.nn.batch_norm(y, *[relax.const(s.astype("float32")) for s in stats],
                                        axis=1, epsilon=EPS, training=False)
            y = bb.emit(relax.TupleGetItem(bb.emit(bn), 0))
            out = bb.emit_output(relax.op.nn.relu(y) if relu else y)
        bb.emit_func_output(out)
    return bb.get()


def _batch_norm(y: np.ndarray, stats) -> np.ndarray:
    gamma, beta, mean, var = (s.reshape((1, -1) + (1,) * (y.ndim - 2)) for s in stats)
    return (y - mean) / np.sqrt(var + EPS) * gamma + beta


def _ops(mod) -> set:
    names = set()
    relax.analysis.post_order_visit(mod["main"], lambda e: names.add(e.op.name) if isinstance(
        e, relax.Call) and isinstance(e.op, tvm.ir.Op) else None)
    return names


CASES = [  # (op, spec): grouped transposed 2-d, transposed 1-d, ordinary 2-d
    (relax.op.nn.conv2d_transpose,
     make_spec((1, 8, 5, 5), (8, 6, 4, 4), strides=2, padding=1, groups=2)),
    (relax.op.nn.conv1d_transpose, make_spec((2, 8, 9), (8, 16, 5), strides=3, padding=1)),
    (relax.op.nn.conv2d, make_dilated_spec((1, 8, 9, 9), (16, 8, 3, 3), strides=2, padding=1)),
]


@pytest.mark.parametrize("op,spec", CASES, ids=["ct2d_groups", "ct1d", "conv2d"])
def test_folded_batch_norm_matches_float64(op, spec):
    if isinstance(spec.kernel_layout, str) and spec.kernel_layout.startswith("O"):
        rng = np.random.default_rng(3)
        data = rng.standard_normal(spec.data_shape).astype("float32")
        weight = rng.standard_normal(spec.weight_shape).astype("float32")
        y = dilated_conv_reference(data, weight, spec)
    else:
        data, weight = random_inputs(spec, seed=3)
        y = conv_transpose_reference(data, weight, spec)
    stats = _stats(y.shape[1])
    ref = np.maximum(_batch_norm(y, stats), 0)
    mod = _module(op, spec, weight, stats, relu=True)
    folded = FoldBatchNorm()(mod)
    assert "relax.nn.batch_norm" not in _ops(folded) and "relax.add" in _ops(folded)
    vm = relax.VirtualMachine(tvm_deconv.build(mod, "llvm"), tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(data)).numpy()
    assert np.abs(ref).max() > 0 and relative_error(out, ref) < 1e-5


def test_batch_norm_of_a_weight_parameter_stays():
    spec = CASES[0][1]
    _, weight = random_inputs(spec)
    mod = _module(relax.op.nn.conv2d_transpose, spec, weight, _stats(spec.out_channels),
                  relu=False, weight_param=True)
    assert "relax.nn.batch_norm" in _ops(FoldBatchNorm()(mod))
