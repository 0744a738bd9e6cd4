"""Graph mode: transposed conv → ordinary convs + interleave, stock Relax ops only."""

import logging

import numpy as np
import pytest
import tvm
from tvm import relax

import tvm_deconv
from tvm_deconv.graph_mode import SplitTransposedConvToConv, axis_conv_params, conv_count
from tvm_deconv.plan import make_plan, make_spec, plan_axis
from tvm_deconv.testing import (conv_transpose_reference, random_inputs, relative_error,
                                transposed_conv_module)

STOCK_OK = {"relax.nn.conv1d", "relax.nn.conv2d", "relax.nn.conv3d", "relax.zeros",
            "relax.stack", "relax.reshape", "relax.strided_slice", "relax.permute_dims",
            "relax.flip", "relax.expand_dims", "relax.add", "relax.nn.relu"}


def one_layer(spec, weight=None, epilogue=None):
    return transposed_conv_module(spec, weight, epilogue)


def run(ex, *args):
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(a) for a in args]).numpy()


def called_ops(mod):
    """Names of every op called in the module's Relax functions (call_tir included)."""
    ops = []

    def visit(expr):
        if isinstance(expr, relax.Call):
            ops.append(expr.op.name if isinstance(expr.op, tvm.ir.Op) else str(expr.op))

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return ops


def assert_stock_only(mod):
    assert not any(isinstance(f, tvm.tirx.PrimFunc) for _, f in mod.functions_items())
    ops = called_ops(mod)
    assert "relax.call_tir" not in ops
    assert not any("transpose" in op and op.startswith("relax.nn.conv") for op in ops)
    assert set(ops) <= STOCK_OK, set(ops) - STOCK_OK


SPECS = [
    make_spec((2, 8, 4, 4), (8, 4, 4, 4), strides=2, padding=1),                  # DCGAN
    make_spec((1, 4, 5, 5), (4, 3, 3, 3), strides=2, padding=1, output_padding=1),  # k%s != 0
    make_spec((1, 6, 5, 4), (6, 2, 3, 5), strides=(3, 2), padding=(2, 0, 1, 3),
              output_padding=(1, 1), groups=3),                                  # groups
    make_spec((1, 4, 9), (4, 2, 3), strides=4, padding=1),                        # k < s
    make_spec((1, 3, 4, 4), (3, 2, 2, 3), strides=(3, 2), groups=1),              # k < s (2-d)
    make_spec((1, 6, 7, 7), (6, 4, 9, 9), strides=3, padding=4, output_padding=2),  # FSRCNN
    make_spec((1, 4, 5, 5), (4, 3, 3, 3), strides=2, padding=(1, 0, 2, 1), dilation=2),
    make_spec((1, 5, 5, 6), (3, 3, 2, 6), strides=2, padding=(0, 1, 1, 0), groups=3,
              data_layout="NHWC"),                                               # NHWC/HWOI
    make_spec((1, 4, 3, 4, 2), (4, 2, 3, 2, 2), strides=2, padding=1),            # 3-d
    make_spec((1, 2, 3, 3), (2, 2, 5, 5), strides=2, padding=(4, 3, 1, 2)),        # big padding
]


def _id(spec):
    return (f"{spec.ndim}d-k{'x'.join(map(str, spec.kernel))}-s{'x'.join(map(str, spec.strides))}"
            f"-g{spec.groups}-{spec.data_layout}")


CASES = [(s, True) for s in SPECS] + [(SPECS[i], False) for i in (1, 2, 4, 6, 7, 8)]


@pytest.mark.parametrize("spec,const_weight", CASES,
                         ids=[_id(s) + ("-const-w" if c else "-var-w") for s, c in CASES])
def test_split_matches_reference(spec, const_weight):
    data, weight = random_inputs(spec, seed=7)
    mod = one_layer(spec, weight=weight if const_weight else None)
    mod = SplitTransposedConvToConv()(mod)
    assert_stock_only(mod)
    ops = called_ops(mod)
    plan = make_plan(spec)
    assert sum(op.startswith("relax.nn.conv") for op in ops) == conv_count(plan)
    args = (data,) if const_weight else (data, weight)
    out = run(tvm_deconv.build(mod, "llvm"), *args)
    assert relative_error(out, conv_transpose_reference(data, weight, spec)) < 1e-5


def test_random_configs():
    rng = np.random.default_rng(11)
    for _ in range(10):
        nd = int(rng.integers(1, 3))
        s = tuple(int(v) for v in rng.integers(1, 5, nd))
        k = tuple(int(v) for v in rng.integers(1, 6, nd))
        d = tuple(int(v) for v in rng.integers(1, 3, nd))
        groups = int(rng.choice([1, 2]))
        cin, cout_g = 2 * groups, int(rng.integers(1, 3))
        size = tuple(int(v) for v in rng.integers(1, 6, nd))
        pads = tuple(int(rng.integers(0, kk)) for kk in k) * 2
        op = tuple(int(rng.integers(0, ss)) for ss in s)  # Relax: output_padding < stride
        try:
            spec = make_spec((1, cin) + size, (cin, cout_g) + k, strides=s, padding=pads,
                             output_padding=op, dilation=d, groups=groups)
        except tvm_deconv.PlanError:
            continue
        data, weight = random_inputs(spec, seed=int(rng.integers(1000)))
        mod = SplitTransposedConvToConv()(one_layer(spec, weight=weight))
        assert_stock_only(mod)
        out = run(tvm_deconv.build(mod, "llvm"), data)
        assert relative_error(out, conv_transpose_reference(data, weight, spec)) < 1e-5, spec


def test_axis_conv_params_reproduce_the_plan():
    """The flipped sub-conv with the derived padding reads exactly the plan's inputs."""
    for n, k, s, d, pb, pa, op in [(5, 3, 2, 1, 1, 1, 1), (7, 9, 3, 1, 4, 4, 2),
                                   (4, 2, 3, 1, 0, 0, 0), (5, 3, 2, 2, 1, 2, 1),
                                   (3, 5, 2, 1, 5, 5, 0)]:
        axis = plan_axis(n, k, s, d, pb, pa, op)
        blocks = -(-axis.out_size // s)
        for ap in axis.phases:
            if ap.num_taps == 0:
                continue
            cpb, cpa, crop = axis_conv_params(ap, n, blocks)
            assert cpb >= 0 and cpa >= 0
            conv_size = n + cpb + cpa - ap.in_step * (ap.num_taps - 1)
            assert conv_size >= crop + blocks
            for q in range(blocks):
                conv_reads = [crop + q - cpb + jj * ap.in_step for jj in range(ap.num_taps)]
                plan_reads = [q + ap.in_start - j * ap.in_step for j in range(ap.num_taps)]
                assert conv_reads == plan_reads[::-1]


def test_bias_relu_after_split():
    spec = SPECS[0]
    data, weight = random_inputs(spec, seed=1)
    bias = np.random.default_rng(0).standard_normal(4).astype("float32")

    def epilogue(bb, y):
        y = bb.emit(relax.op.add(y, relax.const(bias.reshape(1, 4, 1, 1))))
        return bb.emit(relax.op.nn.relu(y))

    mod = SplitTransposedConvToConv()(one_layer(spec, weight=weight, epilogue=epilogue))
    assert_stock_only(mod)
    out = run(tvm_deconv.build(mod, "llvm"), data)
    ref = np.maximum(conv_transpose_reference(data, weight, spec, bias), 0)
    assert relative_error(out, ref) < 1e-5


def test_symbolic_shape_is_left_alone_with_a_log_line(caplog):
    bb = relax.BlockBuilder()
    n = tvm.tirx.Var("n", "int64")
    x = relax.Var("x", relax.TensorType((n, 4, 5, 5), "float32"))
    w = relax.Var("w", relax.TensorType((4, 3, 3, 3), "float32"))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.conv2d_transpose(x, w, strides=2))
        bb.emit_func_output(out)
    with caplog.at_level(logging.WARNING, logger="tvm_deconv"):
        mod = SplitTransposedConvToConv()(bb.get())
    assert "relax.nn.conv2d_transpose" in called_ops(mod)
    lines = [r.getMessage() for r in caplog.records if r.name == "tvm_deconv"]
    assert len(lines) == 1 and "symbolic" in lines[0]


def test_pipeline_graph_mode_matches_reference():
    """``tvm_deconv.build(..., mode="graph")`` runs the split-deconvolution rewrite."""
    spec = make_spec((1, 4, 5, 5), (4, 3, 3, 3), strides=2, padding=1, output_padding=1)
    data, weight = random_inputs(spec, seed=11)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(spec.data_shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.conv2d_transpose(
                x, relax.const(weight), strides=2, padding=1, output_padding=1))
        bb.emit_func_output(out)
    lowered = tvm_deconv.transform.DecomposeTransposedConv("llvm", mode="graph")(bb.get())
    assert "R.nn.conv2d(" in lowered["main"].script()
    assert "call_tir" not in lowered["main"].script()
    vm = relax.VirtualMachine(tvm_deconv.build(bb.get(), "llvm", mode="graph"), tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(data)).numpy()
    assert relative_error(out, conv_transpose_reference(data, weight, spec)) < 1e-5
