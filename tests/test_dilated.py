"""Dilated conv, untangled: phase plan, the one-PrimFunc compute, and the Relax pass."""

import itertools
import logging

import numpy as np
import pytest
import tvm
from tvm import relax, s_tir

import tvm_deconv
from tvm_deconv.compute import PHASE_ANNOTATION
from tvm_deconv.dilated import (OP_ANNOTATION, DecomposeDilatedConv, dilated_conv1d,
                                dilated_conv2d, dilated_conv_reference, untangled_dilated_conv)
from tvm_deconv.plan import PlanError, make_dilated_plan, make_dilated_spec, plan_dilated_axis
from tvm_deconv.testing import loop_nest_macs, relative_error, run_primfunc

CONV = {1: relax.op.nn.conv1d, 2: relax.op.nn.conv2d, 3: relax.op.nn.conv3d}


def random_inputs(spec, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(spec.data_shape).astype(spec.dtype),
            rng.standard_normal(spec.weight_shape).astype(spec.dtype))


SPECS = [
    make_dilated_spec((1, 4, 9, 9), (6, 4, 3, 3), padding=2, dilation=2),          # DeepLab-ish
    make_dilated_spec((2, 6, 10, 11), (6, 2, 3, 2), padding=(1, 0, 3, 2), dilation=(3, 2),
                      groups=3),                                                    # groups
    make_dilated_spec((1, 4, 8, 8), (4, 1, 3, 3), padding=4, dilation=4, groups=4),  # depthwise
    make_dilated_spec((1, 3, 13), (4, 3, 3), padding=3, dilation=3),                # NCW
    make_dilated_spec((1, 3, 17), (4, 3, 3), padding=1, dilation=3, strides=2),     # stride 2
    make_dilated_spec((1, 4, 12, 12), (4, 4, 3, 3), padding=2, dilation=2, strides=2),  # s = d
    make_dilated_spec((1, 9, 9, 4), (3, 3, 4, 5), padding=2, dilation=2, data_layout="NHWC",
                      kernel_layout="HWIO"),                                        # NHWC/HWIO
    make_dilated_spec((1, 2, 5, 6, 5), (3, 2, 2, 2, 3), padding=1, dilation=(2, 1, 2)),  # 3-d
    make_dilated_spec((1, 2, 4, 4), (2, 2, 2, 2), padding=0, dilation=3),           # out < d
]


def _id(spec):
    return (f"{spec.ndim}d-k{'x'.join(map(str, spec.kernel))}-d{'x'.join(map(str, spec.dilation))}"
            f"-s{'x'.join(map(str, spec.strides))}-g{spec.groups}-{spec.data_layout}")


def test_plan_reads_exactly_the_dilated_taps():
    for n, k, s, d, pb, pa in itertools.product(range(1, 9), range(1, 4), range(1, 4),
                                                range(1, 5), range(3), range(3)):
        axis = plan_dilated_axis(n, k, s, d, pb, pa)
        if axis.out_size <= 0:
            continue
        seen = {}
        for ph in axis.phases:
            assert 0 <= ph.in_phase < d
            for q in range(ph.extent):
                o = ph.output_index(q)
                assert o not in seen
                seen[o] = [ph.input_index(q, t) for t in range(k)]
                # every tap of a phase reads the same input phase (space-to-batch)
                assert all(i % d == ph.in_phase for i in seen[o])
        assert sorted(seen) == list(range(axis.out_size))
        for o, reads in seen.items():
            assert reads == [o * s + t * d - pb for t in range(k)]


@pytest.mark.parametrize("spec", SPECS, ids=_id)
def test_untangled_compute_matches_reference(spec):
    func = untangled_dilated_conv(spec)
    data, weight = random_inputs(spec, seed=3)
    out = run_primfunc(func, [data, weight], spec.out_shape, spec.out_dtype)
    assert relative_error(out, dilated_conv_reference(data, weight, spec)) < 1e-5
    # one PrimFunc, original layouts, no intermediate buffer
    assert [tuple(int(v) for v in p.shape) for p in func.params] == \
        [spec.data_shape, spec.weight_shape, spec.out_shape]
    assert "alloc_buffer" not in func.script()
    # exactly the useful MACs: the dense kernel at every output element, no kernel zero
    plan = make_dilated_plan(spec)
    assert loop_nest_macs(func) == plan.macs()
    assert plan.macs() == (spec.batch * spec.out_channels * spec.in_per_group
                           * int(np.prod(spec.out_size)) * int(np.prod(spec.kernel)))
    if any(d > 1 for d in spec.dilation):
        assert plan.dilated_kernel_macs() > plan.macs()
    # one annotated block per non-empty phase
    sch = s_tir.Schedule(func)
    blocks = [sch.get(b) for b in sch.get_child_blocks(sch.get_sblock("root"))]
    assert len(blocks) == sum(1 for p in plan.phases() if not p.is_empty)
    for block in blocks:
        assert PHASE_ANNOTATION in block.annotations
        assert str(block.annotations[OP_ANNOTATION]) == "dilated_conv"


def test_random_configs_match_reference():
    rng = np.random.default_rng(5)
    checked = 0
    while checked < 8:
        nd = int(rng.integers(1, 3))
        groups = int(rng.choice([1, 2]))
        size = tuple(int(v) for v in rng.integers(3, 10, nd))
        k = tuple(int(v) for v in rng.integers(1, 4, nd))
        d = tuple(int(v) for v in rng.integers(1, 5, nd))
        s = tuple(int(v) for v in rng.integers(1, 3, nd))
        pads = tuple(int(v) for v in rng.integers(0, 4, 2 * nd))
        try:
            spec = make_dilated_spec((1, 2 * groups) + size, (2 * groups, 2) + k, strides=s,
                                     padding=pads, dilation=d, groups=groups)
        except PlanError:
            continue
        fn = dilated_conv1d if nd == 1 else dilated_conv2d
        func = fn(spec.data_shape, spec.weight_shape, strides=s, padding=pads, dilation=d,
                  groups=groups)
        data, weight = random_inputs(spec, seed=checked)
        out = run_primfunc(func, [data, weight], spec.out_shape, spec.out_dtype)
        assert relative_error(out, dilated_conv_reference(data, weight, spec)) < 1e-5, spec
        assert loop_nest_macs(func) == make_dilated_plan(spec).macs()
        checked += 1


def test_invalid_attributes_raise():
    with pytest.raises(PlanError, match="groups"):
        make_dilated_spec((1, 4, 8, 8), (4, 3, 3, 3), dilation=2, groups=3)
    with pytest.raises(PlanError, match="larger than the padded input"):
        make_dilated_spec((1, 4, 4, 4), (4, 4, 3, 3), dilation=3)
    with pytest.raises(ValueError, match="dilated_conv2d got 1-d"):
        dilated_conv2d((1, 2, 9), (2, 2, 3), dilation=2)


# ------------------------------------------------------------------------------ Relax pass


def conv_layer(spec, weight=None, epilogue=None, extra_undilated=False, symbolic=False):
    bb = relax.BlockBuilder()
    shape = list(spec.data_shape)
    if symbolic:
        shape[spec.data_layout.index("N")] = tvm.tirx.Var("n", "int64")
    x = relax.Var("x", relax.TensorType(shape, spec.dtype))
    params = [x]
    if weight is None:
        w = relax.Var("w", relax.TensorType(spec.weight_shape, spec.dtype))
        params.append(w)
    else:
        w = relax.const(weight)
    with bb.function("main", params):
        with bb.dataflow():
            y = bb.emit(CONV[spec.ndim](
                x, w, strides=spec.strides, padding=spec.pad_before + spec.pad_after,
                dilation=spec.dilation, groups=spec.groups, data_layout=spec.data_layout,
                kernel_layout=spec.kernel_layout, out_dtype=spec.out_dtype))
            if epilogue is not None:
                y = epilogue(bb, y)
            if extra_undilated:
                c = spec.out_channels
                w2 = relax.const(np.random.default_rng(9).standard_normal(
                    (c, c, 1, 1)).astype(spec.dtype))
                y = bb.emit(relax.op.nn.conv2d(y, w2))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def run(ex, *args):
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(a) for a in args]).numpy()


def called_ops(func):
    ops = []
    relax.analysis.post_order_visit(func, lambda e: ops.append(e.op.name) if isinstance(
        e, relax.Call) and isinstance(e.op, tvm.ir.Op) else None)
    return ops


def untangled_funcs(mod):
    found = []
    for gv, func in mod.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        sch = s_tir.Schedule(func)
        if any(OP_ANNOTATION in sch.get(b).annotations
               for b in sch.get_child_blocks(sch.get_sblock("root"))):
            found.append((gv.name_hint, func))
    return found


@pytest.mark.parametrize("spec", [SPECS[0], SPECS[1], SPECS[3], SPECS[6]], ids=_id)
def test_pass_build_matches_reference_and_stock_lowering(spec):
    data, weight = random_inputs(spec, seed=4)
    mod = conv_layer(spec)
    rewritten = DecomposeDilatedConv()(mod)
    ops = called_ops(rewritten["main"])
    assert "relax.call_tir" in ops and not any(op.startswith("relax.nn.conv") for op in ops)
    funcs = untangled_funcs(rewritten)
    assert len(funcs) == 1 and int(funcs[0][1].attrs["op_pattern"]) == 4
    out = run(tvm_deconv.build(rewritten, "llvm"), data, weight)
    ref = dilated_conv_reference(data, weight, spec)
    assert relative_error(out, ref) < 1e-5
    stock = run(tvm_deconv.build(mod, "llvm"), data, weight)  # TVM's own lowering agrees
    assert relative_error(stock, ref) < 1e-5


def test_undilated_convs_are_untouched_and_bias_relu_fuse():
    spec = SPECS[0]
    data, weight = random_inputs(spec, seed=1)
    bias = np.random.default_rng(0).standard_normal(spec.out_channels).astype("float32")

    def epilogue(bb, y):
        y = bb.emit(relax.op.add(y, relax.const(bias.reshape(1, -1, 1, 1))))
        return bb.emit(relax.op.nn.relu(y))

    mod = conv_layer(spec, weight=weight, epilogue=epilogue, extra_undilated=True)
    rewritten = DecomposeDilatedConv()(mod)
    ops = called_ops(rewritten["main"])
    assert ops.count("relax.call_tir") == 1 and ops.count("relax.nn.conv2d") == 1
    lowered = tvm_deconv.pipeline("llvm")(rewritten)
    fused = untangled_funcs(lowered)
    assert len(fused) == 1
    script = fused[0][1].script()
    assert "T.max" in script or "max(" in script, "bias + relu should fuse into the conv"
    w2 = np.random.default_rng(9).standard_normal((6, 6, 1, 1))
    ref = np.maximum(dilated_conv_reference(data, weight, spec, bias), 0)
    ref = np.einsum("nchw,oc->nohw", ref, w2[:, :, 0, 0])
    out = run(tvm_deconv.build(rewritten, "llvm"), data)
    assert relative_error(out, ref) < 1e-5


def test_unhandled_dilated_calls_log_one_line_each(caplog):
    spec = SPECS[0]
    mod = conv_layer(spec, symbolic=True)
    with caplog.at_level(logging.WARNING, logger="tvm_deconv"):
        rewritten = DecomposeDilatedConv()(mod)
    assert "relax.nn.conv2d" in called_ops(rewritten["main"])
    lines = [r.getMessage() for r in caplog.records if r.name == "tvm_deconv"]
    assert len(lines) == 1 and "symbolic" in lines[0] and "relax.nn.conv2d" in lines[0]

    caplog.clear()
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 2, 9, 9), "int32"))
    w = relax.Var("w", relax.TensorType((2, 2, 3, 3), "int32"))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.conv2d(x, w, dilation=2))
        bb.emit_func_output(out)
    with caplog.at_level(logging.WARNING, logger="tvm_deconv"):
        DecomposeDilatedConv()(bb.get())
    lines = [r.getMessage() for r in caplog.records if r.name == "tvm_deconv"]
    assert len(lines) == 1 and "int32" in lines[0]
