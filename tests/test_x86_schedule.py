"""The x86 default schedule (``x86.decomposed``): numerics on awkward configs, fused epilogues,
packing folded at compile time.  Small shapes: the whole file runs in well under 2 minutes.
``x86.interleaved`` (which takes strided many-channel calls on AVX-512 hosts) is switched off
here: tests/test_x86_interleaved.py covers it."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import tvm
from tvm import relax

import tvm_deconv
from tvm_deconv import strategy
from tvm_deconv.plan import make_plan, make_spec
from tvm_deconv.targets import resolve_target
from tvm_deconv.testing import (conv_transpose_reference, random_inputs, relative_error,
                                transposed_conv_module)

TARGET = resolve_target("llvm")


@pytest.fixture(autouse=True)
def decomposed_kernel():
    with strategy.declining(strategy.CONV_TRANSPOSE, "x86.interleaved",
                            "tests of x86.decomposed"):
        yield


def _module(spec, bias=False, act=None):
    return transposed_conv_module(spec, bias=bias, activation=act)


def _run(spec, bias=None, act=None, caplog=None):
    data, weight = random_inputs(spec, seed=7)
    params = {"w": weight}
    if bias is not None:
        params["b"] = bias
    with caplog.at_level(logging.WARNING, logger="tvm_deconv"):
        ex = tvm_deconv.build(_module(spec, bias is not None, act), TARGET, params)
    assert "failed" not in caplog.text, caplog.text  # the schedule applied
    assert "falls back" not in caplog.text, caplog.text
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return data, weight, vm["main"](tvm.runtime.tensor(data)).numpy()


# (data shape, weight shape, attrs): k<s, k%s!=0, groups, depthwise, output_padding, batch>1,
# asymmetric padding, dilation, 1-d / 3-d, Cout not a multiple of the vector width.
CONFIGS = [
    ((1, 16, 5, 5), (16, 16, 4, 4), dict(strides=2, padding=1)),                    # uniform
    ((2, 8, 6, 5), (8, 12, 3, 3), dict(strides=2, padding=1, output_padding=1)),    # ragged
    ((1, 6, 7, 6), (6, 1, 9, 9), dict(strides=3, padding=4, output_padding=2)),     # w mode
    ((1, 6, 4, 5), (6, 3, 2, 2), dict(strides=3, padding=0)),                       # k < s
    ((1, 8, 5, 4), (8, 5, 3, 3), dict(strides=2, padding=(0, 1, 2, 0), groups=2)),  # asym, groups
    ((1, 12, 6, 6), (12, 1, 4, 4), dict(strides=2, padding=1, groups=12)),          # depthwise
    ((1, 10, 5, 5), (10, 20, 5, 3), dict(strides=(3, 2), padding=(2, 1),
                                         output_padding=(1, 0))),                  # rect, Cout 20
    ((1, 8, 6, 6), (8, 9, 3, 3), dict(strides=2, padding=2, dilation=2)),          # dilation
    ((2, 8, 9), (8, 16, 5), dict(strides=3, padding=1, output_padding=1)),          # 1-d
    ((1, 16, 70), (16, 8, 4), dict(strides=2, padding=1)),    # 1-d, copy blocked by positions
    ((1, 4, 3, 4, 3), (4, 8, 3, 2, 4), dict(strides=2, padding=1)),                 # 3-d ragged
    ((1, 4, 3, 3, 3), (4, 2, 2, 2, 2), dict(strides=2)),                            # 3-d w mode
    ((1, 3, 4, 5), (3, 40, 4, 4), dict(strides=4, padding=(1, 0, 2, 3), output_padding=3)),
    # Sub-kernels beyond L2 at batch 2 (tile_order): outweighing an image, then outweighed.
    ((2, 256, 3, 3), (256, 72, 4, 4), dict(strides=2, padding=1)),
    ((2, 1024, 12, 12), (1024, 72, 2, 2), dict(strides=2)),
]


@pytest.mark.parametrize("data_shape,weight_shape,attrs", CONFIGS,
                         ids=[f"cfg{i}" for i in range(len(CONFIGS))])
def test_x86_matches_reference(data_shape, weight_shape, attrs, caplog):
    spec = make_spec(data_shape, weight_shape, **attrs)
    sel = strategy.select(strategy.CONV_TRANSPOSE, spec, TARGET)
    assert sel.implementation.name == "x86.decomposed", sel.reason()
    data, weight, out = _run(spec, caplog=caplog)
    ref = conv_transpose_reference(data, weight, spec)
    assert out.shape == ref.shape
    assert relative_error(out, ref) < 1e-5


@pytest.mark.parametrize("data_shape,weight_shape,attrs", [
    ((4, 6, 7, 6), (6, 1, 9, 9), dict(strides=3, padding=4, output_padding=2)),   # w mode
    ((4, 16, 5, 5), (16, 8, 4, 4), dict(strides=2, padding=1)),                   # oc mode
], ids=["w", "oc"])
def test_batch_goes_through_the_phases_in_chunks(data_shape, weight_shape, attrs, monkeypatch,
                                                 caplog):
    """A batch whose padded input outgrows the cache share runs all phases a chunk of images
    at a time (here with a 4 KiB share, so these small batches chunk)."""
    from tvm_deconv.schedules import x86 as x86_schedule

    monkeypatch.setattr(x86_schedule, "BATCH_CHUNK_BYTES", 4096)
    spec = make_spec(data_shape, weight_shape, **attrs)
    lay = x86_schedule.x86_layout(spec)
    assert x86_schedule.batch_chunk(spec, make_plan(spec), lay) < spec.batch
    data, weight, out = _run(spec, caplog=caplog)
    assert relative_error(out, conv_transpose_reference(data, weight, spec)) < 1e-5


def test_x86_random_configs(caplog):
    rng = np.random.default_rng(3)
    for _ in range(4):
        nd = 2
        s = [int(v) for v in rng.integers(1, 4, nd)]
        k = [int(v) for v in rng.integers(1, 6, nd)]
        groups = int(rng.choice([1, 2]))
        cin, cog = groups * int(rng.integers(1, 6)), int(rng.integers(1, 20))
        pads = [int(rng.integers(0, kk)) for kk in k] + [int(rng.integers(0, kk)) for kk in k]
        outpad = [int(rng.integers(0, ss)) for ss in s]
        size = [int(v) for v in rng.integers(2, 7, nd)]
        try:
            spec = make_spec((int(rng.integers(1, 3)), cin, *size), (cin, cog, *k), strides=s,
                             padding=pads, output_padding=outpad, groups=groups)
        except tvm_deconv.PlanError:
            continue
        data, weight, out = _run(spec, caplog=caplog)
        ref = conv_transpose_reference(data, weight, spec)
        assert relative_error(out, ref) < 1e-5, spec


ACTS = {
    "relu": (relax.op.nn.relu, lambda y: np.maximum(y, 0)),
    "tanh": (relax.op.tanh, np.tanh),
    "sigmoid": (relax.op.sigmoid, lambda y: 1 / (1 + np.exp(-y))),
    "leaky_relu": (lambda y: relax.op.nn.leakyrelu(y, 0.1), lambda y: np.where(y > 0, y, 0.1 * y)),
}


@pytest.mark.parametrize("act", sorted(ACTS))
@pytest.mark.parametrize("cout", [16, 3])
def test_x86_fused_bias_activation(act, cout, caplog):
    spec = make_spec((1, 8, 5, 6), (8, cout, 4, 4), strides=2, padding=1)
    bias = np.random.default_rng(1).standard_normal(cout).astype("float32")
    relax_act, np_act = ACTS[act]
    data, weight, out = _run(spec, bias=bias, act=relax_act, caplog=caplog)
    ref = np_act(conv_transpose_reference(data, weight, spec, bias=bias))
    assert relative_error(out, ref) < 1e-5


def test_x86_packing_is_constant_folded():
    spec = make_spec((1, 8, 4, 4), (8, 16, 4, 4), strides=2, padding=1)
    _, weight = random_inputs(spec)
    mod = relax.transform.BindParams("main", {"w": tvm.runtime.tensor(weight)})(_module(spec))
    passes = [tvm_deconv.transform.DecomposeTransposedConv(TARGET), relax.transform.LegalizeOps(),
              relax.transform.AnnotateTIROpPattern(), relax.transform.FoldConstant(),
              relax.transform.FuseOps(), relax.transform.FuseTIR()]
    with TARGET:
        before = tvm.transform.Sequential(passes[:1])(mod)
        after = tvm.transform.Sequential(passes)(mod)
    assert "pack_weight" in before["main"].script()  # the pass did emit the packing
    assert "pack_weight" not in after["main"].script()  # ... and FoldConstant ran it


def test_x86_declines_arm_and_non_float32():
    impl = strategy.get("x86.decomposed")
    spec = make_spec((1, 4, 3, 3), (4, 4, 2, 2), strides=2)
    assert impl.applies_to(spec, resolve_target("cortex-a72")) is not None
    assert impl.applies_to(spec, TARGET) is None
    spec16 = make_spec((1, 4, 3, 3), (4, 4, 2, 2), strides=2, dtype="float16")
    assert impl.applies_to(spec16, TARGET) is not None


def _llvm_ir(mod) -> str:
    """LLVM IR of every llvm module a built executable holds (transitively)."""
    text = mod.inspect_source("ll") if mod.kind == "llvm" else ""
    return text + "".join(_llvm_ir(sub) for sub in mod.imports)


def test_register_tiles_live_on_the_stack_not_in_the_workspace_pool():
    """The per-tile accumulators (transposed and dilated kernels) must not call TVM's workspace
    allocator: LowerTVMBuiltin puts only "global" allocations under 1 KiB on the stack, and a
    "local" tile cost an AllocWorkspace/FreeWorkspace pair per tile (10-40% of the layer)."""
    spec = make_spec((1, 16, 6, 6), (16, 16, 3, 3), strides=2, padding=1, output_padding=1)
    _, weight = random_inputs(spec)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 16, 12, 12), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(weight.transpose(1, 0, 2, 3)),
                                           padding=2, dilation=2))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    for mod, params, kernel in [(_module(spec), {"w": weight}, "conv2d_transpose"),
                                (bb.get(), {}, "dilated")]:
        ir = _llvm_ir(tvm_deconv.build(mod, TARGET, params).mod)
        assert kernel in ir
        # one workspace per call: the zero-padded data copy (several phases and tiles each)
        assert ir.count("load ptr, ptr @__TVMBackendAllocWorkspace") == 1, kernel
