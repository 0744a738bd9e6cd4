"""The Relax pass, the pipeline, build(), fallbacks, targets and importers."""

import logging

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import tirx as T

import tvm_deconv
from tvm_deconv import strategy
from tvm_deconv.plan import make_spec
from tvm_deconv.testing import (conv_transpose_reference, random_inputs, relative_error,
                                transposed_conv_module)
from tvm_deconv.transform import DecomposeTransposedConv, implementation_of


def one_layer(spec, weight=None, epilogue=None, symbolic_batch=False):
    return transposed_conv_module(spec, weight, epilogue, symbolic_batch=symbolic_batch)


def run(ex, *args):
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(a) for a in args]).numpy()


def primfuncs(mod):
    return {gv.name_hint: f for gv, f in mod.functions_items()
            if isinstance(f, tvm.tirx.PrimFunc)}


def has_phase_blocks(func):
    """The PrimFunc holds a decomposed transposed conv (its blocks name their implementation)."""
    return implementation_of(func) is not None


SPECS = [
    make_spec((2, 8, 4, 4), (8, 4, 4, 4), strides=2, padding=1),
    make_spec((1, 4, 5, 5), (4, 3, 3, 3), strides=2, padding=1, output_padding=1),
    make_spec((1, 5, 5, 6), (3, 3, 2, 6), strides=2, padding=(0, 1, 1, 0), groups=3,
              data_layout="NHWC"),
    make_spec((1, 4, 9), (4, 2, 16), strides=8, padding=4),
    make_spec((1, 3, 3, 4, 2), (3, 2, 2, 2, 2), strides=2),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.ndim}d-{s.data_layout}")
def test_build_matches_reference(spec):
    data, weight = random_inputs(spec, seed=3)
    out = run(tvm_deconv.build(one_layer(spec), "llvm"), data, weight)
    assert relative_error(out, conv_transpose_reference(data, weight, spec)) < 1e-5


def test_pass_replaces_every_transposed_conv():
    spec = SPECS[1]
    mod = DecomposeTransposedConv("llvm")(one_layer(spec))
    assert "conv2d_transpose\"" not in mod["main"].script()
    assert "R.nn.conv2d_transpose" not in mod["main"].script()
    funcs = primfuncs(mod)
    conv = [name for name, f in funcs.items() if has_phase_blocks(f)]
    assert conv == ["conv2d_transpose_decomposed"]
    # Anything else is the implementation's weight packing.
    assert all(name.startswith("pack_weight") for name in funcs if name not in conv)


def bias_act(act):
    def epilogue(bb, y):
        bias = relax.const(np.random.default_rng(0).standard_normal(4).astype("float32"))
        y = bb.emit(relax.op.add(y, relax.op.reshape(bias, (1, 4, 1, 1))))
        return bb.emit(act(y))
    return epilogue


@pytest.mark.parametrize("act,ref_act", [
    (relax.op.nn.relu, lambda v: np.maximum(v, 0)),
    (relax.op.tanh, np.tanh),
    (relax.op.sigmoid, lambda v: 1 / (1 + np.exp(-v))),
    (lambda y: relax.op.nn.leakyrelu(y, 0.2), lambda v: np.where(v > 0, v, 0.2 * v)),
])
def test_bias_and_activation_fuse_into_the_kernel(act, ref_act):
    spec = make_spec((1, 6, 5, 5), (6, 4, 4, 4), strides=2, padding=1)
    data, weight = random_inputs(spec, seed=1)
    mod = one_layer(spec, weight=weight, epilogue=bias_act(act))
    target = tvm_deconv.resolve_target("llvm")
    lowered = tvm_deconv.pipeline(target)(mod)
    fused = [f for f in primfuncs(lowered).values() if has_phase_blocks(f)]
    assert len(fused) == 1, "the conv and its epilogue should be one PrimFunc"
    assert fused[0].attrs.get("tirx.is_scheduled")
    # Nothing else is left to launch: no separate bias or activation kernel.
    assert list(primfuncs(lowered)) == [next(n for n, f in primfuncs(lowered).items()
                                             if has_phase_blocks(f))]
    bias = np.random.default_rng(0).standard_normal(4)
    ref = ref_act(conv_transpose_reference(data, weight, spec, bias))
    out = run(tvm_deconv.build(mod, target), data)
    assert relative_error(out, ref) < 1e-5


def test_tvm_compile_with_our_pipeline():
    spec = SPECS[0]
    data, weight = random_inputs(spec)
    target = tvm_deconv.resolve_target("llvm")
    with tvm_deconv.lowering_context(target):
        ex = tvm.compile(one_layer(spec), target, relax_pipeline=tvm_deconv.pipeline(target))
    assert relative_error(run(ex, data, weight),
                          conv_transpose_reference(data, weight, spec)) < 1e-5


def _narrowed_loop_dtype() -> str:
    """The loop variable's dtype after a Sequential holding NarrowDataType, as TVM's TIR
    pipeline runs it, in the current PassContext."""
    @T.prim_func
    def copy(a: T.Buffer((T.int64(64),), "float32"), b: T.Buffer((T.int64(64),), "float32")):
        for i in range(T.int64(64)):
            b[i] = a[i]

    mod = tvm.transform.Sequential([tvm.tirx.transform.FlattenBuffer(),
                                    tvm.tirx.transform.NarrowDataType(32)])(
        tvm.IRModule({"main": copy}))
    loop = [stmt for stmt in mod["main"].body if isinstance(stmt, tvm.tirx.For)]
    return str(loop[0].extent.ty)


def test_lowering_context_keeps_64_bit_indices_on_cpus_only():
    cpu, gpu = tvm_deconv.resolve_target("llvm"), tvm_deconv.resolve_target("cuda")
    with tvm.transform.PassContext(opt_level=3, disabled_pass=["relax.FuseOps"],
                                   config={"tirx.disable_vectorize": True}):
        with tvm_deconv.lowering_context(cpu) as ctx:  # the caller's settings kept
            assert ctx.opt_level == 3 and bool(ctx.config["tirx.disable_vectorize"])
            assert set(ctx.disabled_pass) == {"relax.FuseOps", "tirx.NarrowDataType"}
            assert _narrowed_loop_dtype() == "int64"
        assert _narrowed_loop_dtype() == "int32"  # TVM's own lowering narrows
    for target, decompose in ((gpu, True), (cpu, False)):
        with tvm_deconv.lowering_context(target, decompose) as ctx:
            assert not list(ctx.disabled_pass)


def test_gpu_builds_lower_async_copies():
    """On GPU targets the build (and the tuner's candidate build, kernel_context) sets
    tirx.use_async_copy, which the tensor-core kernel's cp.async pipeline needs; CPU targets
    and TVM's default lowering do not."""
    cpu, gpu = tvm_deconv.resolve_target("llvm"), tvm_deconv.resolve_target("cuda")
    for make, target, expected in ((tvm_deconv.lowering_context, gpu, True),
                                   (tvm_deconv.kernel_context, gpu, True),
                                   (tvm_deconv.lowering_context, cpu, False),
                                   (tvm_deconv.kernel_context, cpu, False),
                                   (lambda t: tvm_deconv.lowering_context(t, False), gpu, False)):
        with make(target) as ctx:
            assert bool(ctx.config.get("tirx.use_async_copy", False)) == expected, (make, target)


def test_unsupported_call_falls_back_with_a_log_line(caplog):
    spec = make_spec((1, 4, 5, 5), (4, 3, 3, 3), strides=2, padding=1)
    mod = one_layer(spec, symbolic_batch=True)
    with caplog.at_level(logging.WARNING, logger="tvm_deconv"):
        rewritten = DecomposeTransposedConv("llvm")(mod)
    assert "R.nn.conv2d_transpose" in rewritten["main"].script()
    lines = [r.getMessage() for r in caplog.records if r.name == "tvm_deconv"]
    assert len(lines) == 1
    assert "relax.nn.conv2d_transpose" in lines[0] and "symbolic" in lines[0]
    assert "falls back" in lines[0]
    # ...and the whole model still compiles and runs through TVM's default lowering.
    data, weight = random_inputs(spec)
    out = run(tvm_deconv.build(mod, "llvm"), data, weight)
    assert relative_error(out, conv_transpose_reference(data, weight, spec)) < 1e-5


def test_unsupported_dtype_falls_back(caplog):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 2, 3, 3), "int32"))
    w = relax.Var("w", relax.TensorType((2, 2, 3, 3), "int32"))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.conv2d_transpose(x, w, strides=2))
        bb.emit_func_output(out)
    with caplog.at_level(logging.WARNING, logger="tvm_deconv"):
        DecomposeTransposedConv("llvm")(bb.get())
    assert any("int32" in r.getMessage() for r in caplog.records)


def test_invalid_attributes_raise_a_clear_error():
    # Relax itself rejects most invalid attributes when the call is made; the compute API
    # (used without Relax) checks them all.
    with pytest.raises(tvm_deconv.PlanError, match="output_padding"):
        tvm_deconv.conv2d_transpose((1, 2, 3, 3), (2, 2, 3, 3), strides=2, output_padding=2)
    with pytest.raises(tvm_deconv.PlanError, match="kernel_layout"):
        tvm_deconv.conv2d_transpose((1, 2, 3, 3), (3, 2, 3, 3), strides=2)
    with pytest.raises(ValueError, match="conv2d_transpose got 1-d"):
        tvm_deconv.conv2d_transpose((1, 2, 3), (2, 2, 3), strides=2)


def test_registry_priority_and_predicates():
    spec = SPECS[0]
    target = tvm_deconv.resolve_target("llvm")
    chosen = strategy.select(strategy.CONV_TRANSPOSE, spec, target).implementation
    assert chosen is not None and "cpu" in chosen.target_keys
    arm = tvm_deconv.resolve_target("aarch64")
    assert strategy.select(strategy.CONV_TRANSPOSE, spec, arm).implementation.name \
        == "arm_cpu.decomposed"
    cuda = tvm_deconv.resolve_target("cuda")
    # 4 output channels: the few-channel direct kernel outranks the implicit GEMM, which
    # takes 8.
    assert strategy.select(strategy.CONV_TRANSPOSE, spec, cuda).implementation.name \
        == "cuda.direct"
    wider = make_spec((2, 8, 4, 4), (8, 8, 4, 4), strides=2, padding=1)
    assert strategy.select(strategy.CONV_TRANSPOSE, wider, cuda).implementation.name \
        == "cuda.decomposed"
    int_spec = make_spec((1, 2, 3, 3), (2, 2, 3, 3), strides=2, dtype="int8")
    selection = strategy.select(strategy.CONV_TRANSPOSE, int_spec, target)
    assert selection.implementation is None and "int8" in selection.reason()


def test_registering_a_higher_priority_implementation_wins():
    spec = SPECS[0]
    target = tvm_deconv.resolve_target("llvm")
    base = strategy.select(strategy.CONV_TRANSPOSE, spec, target).implementation
    custom = strategy.Implementation(
        name="test.only_batch_2", target_keys=("cpu",), priority=1000, compute=base.compute,
        schedule=None, predicate=lambda s, t: None if s.batch == 2 else "batch is not 2")
    strategy.register(strategy.CONV_TRANSPOSE, custom)
    try:
        assert strategy.select(strategy.CONV_TRANSPOSE, spec, target).implementation is custom
        other = make_spec((1, 8, 4, 4), (8, 4, 4, 4), strides=2, padding=1)
        selection = strategy.select(strategy.CONV_TRANSPOSE, other, target)
        assert selection.implementation is base
        assert ("test.only_batch_2", "batch is not 2") in selection.declined
    finally:
        strategy._REGISTRY[strategy.CONV_TRANSPOSE].remove(custom)


@pytest.mark.parametrize("given", [
    "llvm", "aarch64", "cortex-a72", "cuda", "jetson-orin",
    {"kind": "llvm", "mcpu": "haswell"}, tvm.target.Target({"kind": "llvm"})])
def test_targets_resolve(given):
    assert isinstance(tvm_deconv.resolve_target(given), tvm.target.Target)


def test_unknown_target_names_the_presets():
    with pytest.raises(ValueError, match="cortex-a72"):
        tvm_deconv.resolve_target("rasberry-pi")


def test_host_target_switches_off_features_the_machine_hides():
    """A Zen 4 VM whose hypervisor hides AVX-512: LLVM still names the CPU znver4, so the host
    target must switch AVX-512 off or every kernel dies of SIGILL."""
    from tvm_deconv.schedules.x86 import vector_lanes
    from tvm_deconv.targets import missing_feature_mattr
    from tvm_deconv.tuning import target_key

    zen4 = tvm.target.codegen.llvm_get_cpu_features(
        tvm.target.Target({"kind": "llvm", "mcpu": "znver4"}))
    assert missing_feature_mattr("znver4", {f: True for f in zen4}) == ()
    hidden = {f: not f.startswith("avx512") for f in zen4}
    mattr = missing_feature_mattr("znver4", hidden)
    assert "-avx512f" in mattr and len(mattr) < len([f for f in hidden if not hidden[f]])
    masked = tvm.target.Target({"kind": "llvm", "mcpu": "znver4", "mattr": list(mattr)})
    assert not any(tvm.target.codegen.llvm_cpu_has_features(f, masked)
                   for f in zen4 if not hidden[f])
    assert vector_lanes(masked) == 8 and tvm.target.codegen.llvm_cpu_has_features("avx2", masked)
    assert target_key(masked).startswith("llvm-znver4-mattr-avx512f")


def test_dcgan_generator_matches_tvm_default():
    from tvm_deconv.models import dcgan_generator

    mod, params = dcgan_generator(batch=2, ngf=8)
    z = np.random.default_rng(2).standard_normal((2, 100, 1, 1)).astype("float32")
    ours = run(tvm_deconv.build(mod, "llvm", params), z)
    default = run(tvm_deconv.build(mod, "llvm", params, decompose=False), z)
    assert np.std(default) > 1e-3
    assert relative_error(ours, default) < 1e-5


def test_onnx_model_compiles_and_matches():
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    from tvm.relax.frontend.onnx import from_onnx

    spec = make_spec((1, 6, 7, 7), (6, 4, 9, 9), strides=3, padding=4, output_padding=2)
    data, weight = random_inputs(spec, seed=5)
    bias = np.random.default_rng(6).standard_normal(4).astype("float32")
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=[3, 3],
                            pads=[4, 4, 4, 4], output_padding=[2, 2], kernel_shape=[9, 9])
    relu = helper.make_node("Relu", ["y"], ["z"])
    graph = helper.make_graph(
        [node, relu], "fsrcnn_tail",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(spec.data_shape))],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, list(spec.out_shape))],
        initializer=[numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    mod = from_onnx(model, keep_params_in_input=False)
    out = run(tvm_deconv.build(mod, "llvm"), data)
    ref = np.maximum(conv_transpose_reference(data, weight, spec, bias), 0)
    assert relative_error(out, ref) < 1e-5


def intermediate_shapes(func):
    """Shapes of the buffers a PrimFunc allocates (its intermediates)."""
    import re

    return [tuple(int(v) for v in re.findall(r"T\.int64\((\d+)\)", line))
            for line in func.script().splitlines() if "alloc_buffer(" in line]


@pytest.mark.parametrize("decompose", [True, False])
def test_built_ir_has_no_zero_insertion_stage(decompose):
    spec = make_spec((1, 8, 8, 8), (8, 4, 3, 3), strides=2, padding=1, output_padding=1)
    dilated = (8 - 1) * 2 + 1  # spatial extent of the zero-inserted input
    lowered = tvm_deconv.pipeline("llvm", decompose=decompose)(one_layer(spec))
    funcs = primfuncs(lowered).values()
    zero_inserted = [s for f in funcs for s in intermediate_shapes(f)
                     if len(s) == 4 and min(s[2:]) >= dilated]
    named_dilate = [f for f in funcs if "dilate" in f.script()]
    if decompose:
        assert not zero_inserted and not named_dilate
    else:  # TVM's default lowering does have one: the check can tell them apart
        assert zero_inserted and named_dilate
