"""ConvAsTransposedConv: stride-1 convs with few output channels run as the equivalent
stride-1 transposed conv on x86 (flipped, transposed weight), and match the float64 reference."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import tvm
from tvm import relax

import tvm_deconv
from tvm_deconv.conv_as_transposed import ConvAsTransposedConv
from tvm_deconv.dilated import dilated_conv_reference
from tvm_deconv.plan import make_dilated_spec
from tvm_deconv.testing import relative_error

TARGET = tvm_deconv.resolve_target("llvm")


def conv_module(data_shape, weight, **attrs):
    """``main(x)`` calling ``relax.nn.conv2d(x, weight)`` (a constant) and a ReLU after it."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(data_shape, str(weight.dtype)))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(weight), **attrs))
            out = bb.emit_output(bb.emit(relax.op.nn.relu(y)))
        bb.emit_func_output(out)
    return bb.get()


def called_ops(mod) -> list[str]:
    ops = []
    relax.analysis.post_order_visit(mod["main"], lambda e: ops.append(e.op.name) if isinstance(
        e, relax.Call) and isinstance(e.op, tvm.ir.Op) else None)
    return ops


@pytest.mark.parametrize("data_shape,weight_shape,padding", [
    ((1, 56, 9, 10), (12, 56, 1, 1), 0),             # FSRCNN shrink (1x1)
    ((1, 12, 11, 9), (12, 12, 3, 3), 1),             # FSRCNN mapping
    ((1, 1, 12, 12), (56, 1, 5, 5), 2),              # FSRCNN feature extraction (1 channel in)
    ((2, 8, 9, 7), (5, 8, 3, 3), (0, 2, 1, 1)),      # asymmetric padding, batch 2, odd Cout
    ((1, 64, 10, 10), (3, 64, 7, 7), 3),             # CycleGAN head
])
def test_conv_runs_as_transposed_and_matches_reference(data_shape, weight_shape, padding, caplog):
    rng = np.random.default_rng(4)
    data = rng.standard_normal(data_shape).astype("float32")
    weight = rng.standard_normal(weight_shape).astype("float32")
    mod = conv_module(data_shape, weight, padding=padding)
    with TARGET:
        rewritten = ConvAsTransposedConv(TARGET)(mod)
    ops = called_ops(rewritten)
    assert "relax.nn.conv2d_transpose" in ops and "relax.nn.conv2d" not in ops
    with caplog.at_level(logging.INFO, logger="tvm_deconv"):
        ex = tvm_deconv.build(mod, TARGET, tuning_logs=False)
    assert "runs as the equivalent stride-1 transposed conv (x86.decomposed)" in caplog.text
    out = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(data)).numpy()
    spec = make_dilated_spec(data_shape, weight_shape, padding=padding)
    ref = np.maximum(dilated_conv_reference(data, weight, spec), 0)
    assert relative_error(out, ref) < 1e-5


@pytest.mark.parametrize("weight_shape,attrs", [
    ((12, 8, 3, 3), dict(strides=2, padding=1)),            # strided: the dilated kernel's
    ((12, 8, 3, 3), dict(dilation=2, padding=2)),           # dilated
    ((12, 4, 3, 3), dict(groups=2, padding=1)),             # grouped
    ((64, 8, 3, 3), dict(padding=1)),                       # many output channels
    ((12, 8, 1, 1), dict(padding=1)),                       # padding wider than the kernel
])
def test_other_convs_are_left_alone(weight_shape, attrs):
    weight = np.ones(weight_shape, "float32")
    mod = conv_module((1, 8, 10, 10), weight, **attrs)
    with TARGET:
        rewritten = ConvAsTransposedConv(TARGET)(mod)
    assert called_ops(rewritten).count("relax.nn.conv2d") == 1
    assert "relax.nn.conv2d_transpose" not in called_ops(rewritten)


def test_float16_convs_are_left_alone():
    """The x86 transposed-conv kernel is float32 only, so float16 convs keep their lowering."""
    mod = conv_module((1, 8, 10, 10), np.ones((12, 8, 3, 3), "float16"), padding=1)
    with TARGET:
        rewritten = ConvAsTransposedConv(TARGET)(mod)
    assert "relax.nn.conv2d_transpose" not in called_ops(rewritten)


def test_only_where_the_x86_transposed_kernel_takes_it():
    weight = np.ones((12, 8, 3, 3), "float32")
    mod = conv_module((1, 8, 10, 10), weight, padding=1)
    arm = tvm_deconv.resolve_target("cortex-a72")
    with arm:
        rewritten = ConvAsTransposedConv(arm)(mod)
    assert "relax.nn.conv2d_transpose" not in called_ops(rewritten)
