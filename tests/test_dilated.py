"""Dilated conv, untangled: phase plan, the one-PrimFunc compute, and the Relax pass."""

import contextlib
import dataclasses
import itertools
import logging
import re

import numpy as np
import pytest
import tvm
from tvm import relax, s_tir

import tvm_deconv
from tvm_deconv.compute import PHASE_ANNOTATION
from tvm_deconv.dilated import (OP_ANNOTATION, DecomposeDilatedConv, dilated_conv1d,
                                dilated_conv2d, dilated_conv_reference, untangled_dilated_conv)
from tvm_deconv.plan import PlanError, make_dilated_plan, make_dilated_spec, plan_dilated_axis
from tvm_deconv.testing import conv_inputs, loop_nest_macs, relative_error, run_primfunc

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
    x, w, params = conv_inputs(spec, weight, symbolic)
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


def test_ordinary_convs_take_the_packed_kernel_and_bias_relu_fuse():
    spec = SPECS[0]
    data, weight = random_inputs(spec, seed=1)
    bias = np.random.default_rng(0).standard_normal(spec.out_channels).astype("float32")

    def epilogue(bb, y):
        y = bb.emit(relax.op.add(y, relax.const(bias.reshape(1, -1, 1, 1))))
        return bb.emit(relax.op.nn.relu(y))

    mod = conv_layer(spec, weight=weight, epilogue=epilogue, extra_undilated=True)
    rewritten = DecomposeDilatedConv()(mod)
    ops = called_ops(rewritten["main"])
    # weight pack + conv for the dilated conv and for the ordinary 1x1 conv after it (on CPUs
    # the packed register-tiled kernel takes ordinary convs too)
    assert ops.count("relax.call_tir") == 4 and ops.count("relax.nn.conv2d") == 0
    lowered = tvm_deconv.pipeline("llvm")(rewritten)
    fused = untangled_funcs(lowered)
    assert len(fused) == 2
    script = next(f for name, f in fused if "relu" in name).script()
    assert "T.max" in script or "max(" in script, "bias + relu should fuse into the conv"
    w2 = np.random.default_rng(9).standard_normal((6, 6, 1, 1))
    ref = np.maximum(dilated_conv_reference(data, weight, spec, bias), 0)
    ref = np.einsum("nchw,oc->nohw", ref, w2[:, :, 0, 0])
    out = run(tvm_deconv.build(rewritten, "llvm"), data)
    assert relative_error(out, ref) < 1e-5


@pytest.mark.parametrize("spec", [
    make_dilated_spec((1, 8, 9, 10), (16, 8, 4, 4), strides=2, padding=1),          # pix2pix down
    make_dilated_spec((2, 6, 7, 7), (8, 3, 3, 3), padding=1, groups=2),            # groups
    make_dilated_spec((1, 12, 11, 9), (12, 12, 1, 1)),                              # 1x1
    make_dilated_spec((1, 8, 20), (16, 8, 5), strides=3, padding=(2, 1)),          # 1-d
], ids=_id)
def test_ordinary_convs_match_reference(spec):
    data, weight = random_inputs(spec, seed=6)
    rewritten = DecomposeDilatedConv("llvm")(conv_layer(spec))
    assert not any(op.startswith("relax.nn.conv") for op in called_ops(rewritten["main"]))
    out = run(tvm_deconv.build(rewritten, "llvm"), data, weight)
    assert relative_error(out, dilated_conv_reference(data, weight, spec)) < 1e-5


def test_single_input_channel_convs_keep_tvm_default():
    """1 input channel per group: TVM's default measured faster, so the call stays as is."""
    spec = make_dilated_spec((1, 1, 16, 16), (8, 1, 5, 5), padding=2)
    rewritten = DecomposeDilatedConv("llvm")(conv_layer(spec))
    assert called_ops(rewritten["main"]).count("relax.nn.conv2d") == 1


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


# ------------------------------------------------------------- x86 / NEON schedule (x86.dilated)

from tvm_deconv import strategy  # noqa: E402
from tvm_deconv.schedules import x86_dilated  # noqa: E402
from tvm_deconv.schedules.x86 import NEON  # noqa: E402
from tvm_deconv.targets import resolve_target  # noqa: E402


def _random_x86_specs(count, seed):
    """Random dilated convs the x86 schedule takes (out_channels/groups >= 4): 1-d and 2-d,
    groups, asymmetric padding, dilation 2..18, stride 1..2, batch 1..2."""
    rng = np.random.default_rng(seed)
    specs = []
    while len(specs) < count:
        nd = int(rng.integers(1, 3))
        groups = int(rng.choice([1, 2, 3]))
        cin_g, cout_g = int(rng.integers(1, 7)), int(rng.choice([4, 6, 8, 12, 16, 20]))
        d = tuple(int(v) for v in rng.integers(2, 19, nd))
        k = tuple(int(v) for v in rng.integers(1, 4, nd))
        size = tuple(int(v) for v in rng.integers(3, 40, nd))
        pads = tuple(int(rng.integers(0, dd + 2)) for dd in d * 2)
        s = tuple(int(v) for v in rng.integers(1, 3, nd))
        try:
            specs.append(make_dilated_spec(
                (int(rng.integers(1, 3)), cin_g * groups) + size,
                (cout_g * groups, cin_g) + k, strides=s, padding=pads, dilation=d,
                groups=groups))
        except PlanError:
            continue
    return specs


X86_SPECS = _random_x86_specs(10, seed=8) + [
    make_dilated_spec((1, 600, 9, 9), (12, 600, 3, 3), padding=2, dilation=2),  # chunks, Cog 12
    make_dilated_spec((1, 14, 14, 8), (3, 3, 8, 16), padding=(3, 1, 0, 4), dilation=(3, 2),
                      data_layout="NHWC", kernel_layout="HWIO"),              # NHWC/HWIO
    make_dilated_spec((1, 8, 33, 33), (16, 8, 3, 3), padding=18, dilation=18),  # ASPP d18 rate
    make_dilated_spec((2, 16, 200), (32, 16, 2), dilation=64),                   # WaveNet-style
]


def declining(name):
    """The dilated-conv implementation ``name`` declining every call (to test the kernel a
    call would get without it)."""
    return strategy.declining(strategy.DILATED_CONV, name, "test: off")


def _x86_build(spec, weight, bias=None, relu=False, caplog=None, positions=False):
    """Build through the Relax pipeline on x86.dilated (``positions``: with
    x86.conv1d_positions in the registry, which takes stride-1 1-d NCW convs)."""
    with contextlib.nullcontext() if positions else declining("x86.conv1d_positions"):
        return _x86_build_with_registry(spec, weight, bias, relu, caplog)


def _x86_build_with_registry(spec, weight, bias, relu, caplog):
    def epilogue(bb, y):
        if bias is not None:
            shape = [1] * len(spec.out_shape)
            shape[spec.out_layout.index("C")] = -1
            y = bb.emit(relax.op.add(y, relax.const(bias.reshape(shape))))
        return bb.emit(relax.op.nn.relu(y)) if relu else y

    with caplog.at_level(logging.INFO, logger="tvm_deconv"):
        ex = tvm_deconv.build(conv_layer(spec, weight=weight, epilogue=epilogue), "llvm")
    assert "failed" not in caplog.text and "keeps TVM" not in caplog.text, caplog.text
    return ex


@pytest.mark.parametrize("spec", X86_SPECS, ids=[f"{i}-{_id(s)}" for i, s in enumerate(X86_SPECS)])
def test_x86_dilated_matches_reference(spec, caplog):
    with declining("x86.conv1d_positions"):
        assert strategy.select("dilated_conv", spec, resolve_target("llvm")).implementation.name \
            == "x86.dilated"
    data, weight = random_inputs(spec, seed=2)
    out = run(_x86_build(spec, weight, caplog=caplog), data)
    assert relative_error(out, dilated_conv_reference(data, weight, spec)) < 1e-5


def test_x86_dilated_fuses_bias_relu_and_emits_fma(caplog):
    spec = make_dilated_spec((1, 16, 20, 20), (32, 16, 3, 3), padding=6, dilation=6)
    data, weight = random_inputs(spec, seed=6)
    bias = np.random.default_rng(3).standard_normal(32).astype("float32")
    ex = _x86_build(spec, weight, bias=bias, relu=True, caplog=caplog)
    ref = np.maximum(dilated_conv_reference(data, weight, spec, bias), 0)
    assert relative_error(run(ex, data), ref) < 1e-5
    lowered = tvm_deconv.pipeline("llvm")(conv_layer(
        spec, weight=weight, epilogue=lambda bb, y: bb.emit(relax.op.nn.relu(y))))
    fused = untangled_funcs(lowered)
    assert len(fused) == 1 and "max(" in fused[0][1].script()
    asm = "\n".join(m.inspect_source("asm") for m in ex.mod.imports if m.kind == "llvm")
    assert "vfmadd" in asm


def test_neon_dilated_layout_numerics_on_host_and_fmla():
    """The NEON sizes (4 lanes, up to 4 channel vectors per tile) compute the right thing on
    the host, and the aarch64 build of the same kernel has fmla v.4s."""
    spec = make_dilated_spec((1, 6, 17, 15), (16, 6, 3, 3), padding=(4, 2, 3, 5), dilation=4)
    data, weight = random_inputs(spec, seed=9)
    lay = x86_dilated.dilated_layout(spec, NEON)
    assert lay.lanes == 4 and lay.obt == 4
    packed = run_primfunc(x86_dilated.dilated_pack(spec, NEON), [weight],
                          lay.packed_shape(spec), "float32")
    out = run_primfunc(x86_dilated.dilated_compute(spec, NEON), [data, packed], spec.out_shape,
                       "float32")
    assert relative_error(out, dilated_conv_reference(data, weight, spec)) < 1e-5
    aarch64 = resolve_target("aarch64")
    assert strategy.select("dilated_conv", spec, aarch64).implementation.name == "arm_cpu.dilated"
    ex = tvm_deconv.build(conv_layer(spec, weight=weight), aarch64)
    asm = "\n".join(m.inspect_source("asm") for m in ex.mod.imports if m.kind == "llvm")
    assert re.search(r"fmla\s+v\d+\.4s", asm)


def test_depthwise_falls_back_to_generic_with_a_reason(caplog):
    spec = SPECS[2]  # depthwise: 1 output channel per group
    data, weight = random_inputs(spec, seed=1)
    with caplog.at_level(logging.INFO, logger="tvm_deconv"):
        ex = tvm_deconv.build(conv_layer(spec, weight=weight), "llvm")
    lines = [r.getMessage() for r in caplog.records if "cpu.dilated" in r.getMessage()]
    assert len(lines) == 1 and "x86.dilated" in lines[0] and "depthwise" in lines[0]
    assert relative_error(run(ex, data), dilated_conv_reference(data, weight, spec)) < 1e-5


def test_valid_taps_and_phase_runs_follow_the_plan():
    for n, k, s, d, pb, pa in itertools.product(range(1, 30, 4), range(1, 4), range(1, 3),
                                                range(2, 13, 3), range(0, 14, 4), range(0, 3)):
        try:
            axis = plan_dilated_axis(n, k, s, d, pb, pa)
        except PlanError:
            continue
        if axis.out_size <= 0:
            continue
        for ap in axis.phases:
            for q0, q1 in itertools.combinations_with_replacement(range(ap.extent), 2):
                lo, hi = x86_dilated.valid_taps(ap, q0, q1, n)
                inside = {t for q in range(q0, q1 + 1) for t in range(k)
                          if 0 <= ap.input_index(q, t) < n}
                assert 0 <= lo <= hi <= k and set(range(lo, hi)) >= inside
                if q0 == q1:  # one position: exactly its taps with input
                    assert set(range(lo, hi)) == inside
        members = []
        for run_ in x86_dilated.phase_runs(axis):
            for i in range(run_.count):
                ap = axis.phases[run_.first.phase + i]
                assert (ap.extent, ap.in_start, ap.in_phase) == (
                    run_.first.extent, run_.first.in_start,
                    run_.first.in_phase + i * run_.in_phase_step)
                members.append(ap.phase)
        assert members == [ap.phase for ap in axis.phases if ap.extent]


@pytest.mark.parametrize("spec, split", [
    # pix2pix's inner encoder, scaled down: weights outweigh the data, channel tiles split
    # (256 output channels: 8 channel tiles with AVX-512's 16 lanes)
    (make_dilated_spec((1, 64, 8, 8), (256, 64, 4, 4), strides=2, padding=1), (1, 8)),
    # as heavy, but 4 positions per phase: a channel share would reread each input patch
    (make_dilated_spec((1, 64, 12, 12), (128, 64, 3, 3), padding=6, dilation=6), (8, 1)),
    # data outweighs the weights: positions split
    (make_dilated_spec((1, 8, 40, 40), (16, 8, 3, 3), padding=2, dilation=2), (8, 1)),
], ids=["weight-heavy", "small-phases", "data-heavy"])
def test_x86_dilated_splits_the_threads_by_bytes_moved(spec, split, caplog):
    """Parallel iterations split the positions (each streams all weights) or the channel tiles
    (each reads all the data); either split computes the same conv."""
    lay = x86_dilated.dilated_layout(spec)
    assert (lay.parts, lay.oc_parts) == split
    assert lay.parts * lay.oc_parts == x86_dilated.MIN_PARALLEL
    data, weight = random_inputs(spec, seed=3)
    out = run(_x86_build(spec, weight, caplog=caplog), data)
    assert relative_error(out, dilated_conv_reference(data, weight, spec)) < 1e-5


def test_x86_dilated_tiles_span_the_phases_of_short_phase_runs():
    """ASPP's d=18 on 33x33 has 2 positions per phase, which need different taps: tiles of a
    phase's positions multiplied every tap (padding included), tiles of consecutive phases
    multiply only taps with input and read no padding before the input."""
    aspp = make_dilated_spec((1, 2048, 33, 33), (256, 2048, 3, 3), padding=18, dilation=18)
    lay = x86_dilated.dilated_layout(aspp)
    assert lay.spans == (True, True) and lay.lo == (0, 0)
    plan = make_dilated_plan(aspp)
    assert x86_dilated.tile_macs(aspp, lay) < 0.45 * plan.macs()
    # the tiles of positions it had (one row, two positions) multiplied 1.4x as many
    positions = dataclasses.replace(lay, spans=(False, False), tq=(1, 2))
    assert x86_dilated.tile_macs(aspp, lay) < 0.75 * x86_dilated.tile_macs(aspp, positions)
    # WaveNet's d=512 on 4096: 512 phases of 7 positions, tiles of consecutive outputs
    wavenet = make_dilated_spec((1, 64, 4096), (128, 64, 2), dilation=512)
    assert x86_dilated.dilated_layout(wavenet).spans == (True,)
    # ordinary convs and long phases keep tiles of positions
    conv = make_dilated_spec((1, 64, 32, 32), (128, 64, 3, 3), padding=1)
    assert x86_dilated.dilated_layout(conv).spans == (False, False)


@pytest.mark.parametrize("spec", [
    make_dilated_spec((1, 8, 29, 31), (16, 8, 3, 3), padding=(12, 12, 10, 14), dilation=12),
    make_dilated_spec((2, 6, 27, 9), (16, 6, 3, 2), padding=(9, 2), dilation=(9, 2),
                      strides=(2, 1)),                 # stride 2: runs read every other phase
    make_dilated_spec((1, 4, 300), (16, 4, 2), padding=(40, 0), dilation=40),   # 1-d, causal
    make_dilated_spec((1, 12, 35, 35), (32, 6, 3, 3), padding=14, dilation=14, groups=2),
], ids=["partial-phase-tiles", "stride2", "1d-causal", "groups"])
def test_x86_dilated_phase_spanning_tiles_match_reference(spec, caplog):
    lay = x86_dilated.dilated_layout(spec)
    assert any(lay.spans), lay
    data, weight = random_inputs(spec, seed=4)
    out = run(_x86_build(spec, weight, caplog=caplog), data)
    assert relative_error(out, dilated_conv_reference(data, weight, spec)) < 1e-5


# ------------------------------------------------ x86 position-vector kernel (x86.conv1d_positions)

from tvm_deconv.schedules import x86_positions  # noqa: E402


def _random_positions_specs(count, seed):
    """Random stride-1 1-d convs: dilation 1..70, groups, 1..20 output channels per group,
    asymmetric padding, lengths that leave partial tiles, NCW and NWC data."""
    rng = np.random.default_rng(seed)
    specs = []
    while len(specs) < count:
        groups = int(rng.choice([1, 2, 3]))
        cin_g, cout_g = int(rng.integers(1, 8)), int(rng.choice([1, 3, 4, 8, 12, 20]))
        d, k = int(rng.integers(1, 71)), int(rng.integers(1, 5))
        size = int(rng.integers(3, 300))
        pads = (int(rng.integers(0, d * (k - 1) + 2)), int(rng.integers(0, d + 2)))
        channels_last = bool(rng.integers(0, 2))
        data_shape = ((1, size, cin_g * groups) if channels_last
                      else (int(rng.integers(1, 3)), cin_g * groups, size))
        try:
            specs.append(make_dilated_spec(
                data_shape, (cout_g * groups, cin_g, k), padding=pads, dilation=d, groups=groups,
                data_layout="NWC" if channels_last else "NCW", out_layout="NCW"))
        except PlanError:
            continue
    return specs


POSITIONS_SPECS = _random_positions_specs(8, seed=5) + [
    make_dilated_spec((1, 64, 700), (128, 64, 2), dilation=128),                  # WaveNet
    make_dilated_spec((1, 16, 333), (16, 16, 11), padding=25, dilation=5),        # HiFi-GAN
    make_dilated_spec((2, 8, 90), (1, 8, 7), padding=3),                          # conv_post
]


@pytest.mark.parametrize("spec", POSITIONS_SPECS,
                         ids=[f"{i}-{_id(s)}" for i, s in enumerate(POSITIONS_SPECS)])
def test_x86_positions_kernel_writes_every_output_and_matches_reference(spec):
    """The pack and the compute run directly into a NaN-filled output: an element no tile
    stores stays NaN."""
    assert strategy.select("dilated_conv", spec, resolve_target("llvm")).implementation.name \
        == "x86.conv1d_positions"
    data, weight = random_inputs(spec, seed=7)
    lay = x86_positions.positions_layout(spec)
    packed = run_primfunc(x86_positions.positions_pack(spec), [weight], lay.packed_shape(spec),
                          "float32")
    out = run_primfunc(x86_positions.positions_compute(spec), [data, packed], spec.out_shape,
                       "float32", fill=np.nan)
    assert relative_error(out, dilated_conv_reference(data, weight, spec)) < 1e-5


@pytest.mark.parametrize("spec", POSITIONS_SPECS[-3:], ids=["wavenet", "hifigan", "post"])
def test_x86_positions_builds_fuse_bias_relu_and_read_the_data_channels_first(spec, caplog):
    data, weight = random_inputs(spec, seed=8)
    bias = np.random.default_rng(4).standard_normal(spec.out_channels).astype("float32")
    ex = _x86_build(spec, weight, bias=bias, relu=True, caplog=caplog, positions=True)
    ref = np.maximum(dilated_conv_reference(data, weight, spec, bias), 0)
    assert relative_error(run(ex, data), ref) < 1e-5
    lowered = tvm_deconv.pipeline("llvm")(conv_layer(
        spec, weight=weight, epilogue=lambda bb, y: bb.emit(relax.op.nn.relu(y))))
    (_, func), = untangled_funcs(lowered)
    script = func.script()
    assert '"x86.conv1d_positions"' in script and "max(" in script
    sch = s_tir.Schedule(func)
    (copy,) = [sch.get(b) for b in sch.get_child_blocks(sch.get_sblock("root"))
               if str(sch.get(b).annotations.get(x86_positions.ROLE, "")) == "pad"]
    assert [int(iv.dom.extent) for iv in copy.iter_vars][:2] == [spec.batch, spec.in_channels], \
        "the padded data copy is channels-first"
    asm = "\n".join(m.inspect_source("asm") for m in ex.mod.imports if m.kind == "llvm")
    assert "vfmadd" in asm


@pytest.mark.parametrize("spec, why", [
    (make_dilated_spec((1, 8, 40), (16, 8, 3), strides=2, dilation=3), "stride 2"),
    (make_dilated_spec((1, 40, 8), (16, 8, 3), dilation=3, data_layout="NWC"), "out_layout NWC"),
    (make_dilated_spec((1, 8, 20, 20), (16, 8, 3, 3), dilation=3), "2-d"),
], ids=["stride2", "nwc-out", "2d"])
def test_x86_positions_declines_strided_channels_last_and_2d_convs(spec, why):
    selection = strategy.select("dilated_conv", spec, resolve_target("llvm"))
    assert selection.implementation.name == "x86.dilated"
    assert why in selection.reason(), selection.reason()
