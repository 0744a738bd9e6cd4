"""FusePrologue: activations and concatenations before a conv run inside the conv's kernel."""

import numpy as np
import pytest
import tvm
from tvm import relax

import tvm_deconv
from tvm_deconv.build import bind_params, front_passes
from tvm_deconv.dilated import dilated_conv_reference
from tvm_deconv.plan import make_dilated_spec, make_spec
from tvm_deconv.testing import conv_transpose_reference, relative_error
from tvm_deconv.transform import implementation_of

RNG = np.random.default_rng(5)


def tensor(shape):
    return RNG.standard_normal(shape).astype("float32")


def lowered_primfuncs(mod):
    target = tvm_deconv.resolve_target("llvm")
    with target:
        lowered = tvm.transform.Sequential(front_passes(target))(mod)
    return {gv.name_hint: f for gv, f in lowered.functions_items()
            if isinstance(f, tvm.tirx.PrimFunc)}


def run(mod, *args):
    vm = relax.VirtualMachine(tvm_deconv.build(mod, "llvm"), tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(a) for a in args]).numpy()


def module(body, *shapes):
    """``main(*inputs)`` whose body ``body(bb, *inputs)`` emits the ops."""
    params = [relax.Var(f"x{i}", relax.TensorType(s, "float32")) for i, s in enumerate(shapes)]
    bb = relax.BlockBuilder()
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(body(bb, *params))
        bb.emit_func_output(out)
    return bb.get()


def test_relu_of_a_concatenation_runs_in_the_transposed_conv():
    """pix2pix's up block: ConvTranspose(ReLU(concat(skip, up)))."""
    a, b, w = tensor((1, 3, 6, 5)), tensor((1, 5, 6, 5)), tensor((8, 4, 4, 4))
    spec = make_spec((1, 8, 6, 5), w.shape, strides=2, padding=1)

    def body(bb, x0, x1):
        y = bb.emit(relax.op.nn.relu(relax.op.concat([x0, x1], axis=1)))
        return bb.emit(relax.op.nn.conv2d_transpose(y, relax.const(w), strides=2, padding=1))

    mod = module(body, a.shape, b.shape)
    funcs = lowered_primfuncs(mod)
    convs = [f for f in funcs.values() if implementation_of(f) is not None]
    assert len(convs) == 1 and convs[0].attrs.get("tirx.is_scheduled")
    assert [n for n, f in funcs.items() if implementation_of(f) is None
            and not n.startswith("pack_weight")] == [], "concat / relu left as kernels"
    assert "T_concat" not in convs[0].script(), "the concatenation is not inlined"
    ref = conv_transpose_reference(np.maximum(np.concatenate([a, b], axis=1), 0), w, spec)
    assert relative_error(run(mod, a, b), ref) < 1e-5


def test_leaky_relu_runs_in_the_ordinary_conv():
    """pix2pix's down block: Conv(LeakyReLU(x)), through the packed dilated/ordinary kernel."""
    x, w = tensor((1, 6, 10, 10)), tensor((8, 6, 4, 4))
    spec = make_dilated_spec(x.shape, w.shape, strides=2, padding=1)

    def body(bb, x0):
        y = bb.emit(relax.op.nn.leakyrelu(x0, 0.2))
        return bb.emit(relax.op.nn.conv2d(y, relax.const(w), strides=2, padding=1))

    mod = module(body, x.shape)
    funcs = lowered_primfuncs(mod)
    assert [implementation_of(f) for f in funcs.values()
            if implementation_of(f) is not None] == ["x86.dilated"]
    assert len([n for n in funcs if not n.startswith("pack_weight")]) == 1
    ref = dilated_conv_reference(np.where(x > 0, x, 0.2 * x), w, spec)
    assert relative_error(run(mod, x), ref) < 1e-5


def test_a_producer_with_other_readers_stays_a_kernel():
    """ReLU(x) read by the conv and by an add: fusing it would compute it twice; it stays."""
    x, w = tensor((1, 4, 5, 5)), tensor((4, 4, 3, 3))
    spec = make_spec(x.shape, w.shape, strides=1, padding=1)

    def body(bb, x0):
        y = bb.emit(relax.op.nn.relu(x0))
        z = bb.emit(relax.op.nn.conv2d_transpose(y, relax.const(w), strides=1, padding=1))
        return bb.emit(relax.op.add(z, y))

    mod = module(body, x.shape)
    funcs = lowered_primfuncs(mod)
    assert any("relu" in n for n in funcs), "the shared ReLU was fused"
    relu = np.maximum(x, 0)
    ref = conv_transpose_reference(relu, w, spec) + relu
    assert relative_error(run(mod, x), ref) < 1e-5


@pytest.mark.parametrize("model", ["pix2pix_unet", "hifigan"])
def test_zoo_models_lose_their_activation_kernels(model):
    """Every pre-conv activation / skip concatenation of pix2pix and HiFi-GAN is fused."""
    from tvm_deconv.models import build_model

    bundle = build_model(model, small=True)
    funcs = lowered_primfuncs(bind_params(bundle.mod, bundle.params))
    left = [n for n, f in funcs.items() if implementation_of(f) is None
            and any(op in n for op in ("relu", "concatenate"))]
    assert left == []


TRANSPOSED = {1: relax.op.nn.conv1d_transpose, 2: relax.op.nn.conv2d_transpose}
CONV = {1: relax.op.nn.conv1d, 2: relax.op.nn.conv2d}


@pytest.mark.parametrize("op,data_shape,weight_shape,attrs", [
    ("transposed", (1, 16, 1, 1), (16, 8, 4, 4), dict(strides=1)),           # single pixel
    ("transposed", (1, 6, 5, 5), (6, 1, 4, 4), dict(strides=2, padding=1, groups=6)),
    ("conv", (1, 8, 40), (16, 8, 3), dict(padding=1)),                       # 1-d positions
    ("conv", (1, 6, 9, 9), (6, 1, 3, 3), dict(padding=2, dilation=2, groups=6)),  # depthwise
], ids=["single-pixel", "depthwise-transposed", "conv1d", "depthwise-dilated"])
def test_every_cpu_kernel_takes_a_prologue(op, data_shape, weight_shape, attrs, caplog):
    """Whatever CPU implementation reads the fused producer schedules it (inlined where its
    data copy reads it alone, else as a loop nest of its own) and stays correct."""
    x, w = tensor(data_shape), tensor(weight_shape)
    ndim = len(data_shape) - 2
    make = TRANSPOSED[ndim] if op == "transposed" else CONV[ndim]

    def body(bb, x0):
        return bb.emit(make(bb.emit(relax.op.nn.relu(x0)), relax.const(w), **attrs))

    with caplog.at_level("WARNING", logger="tvm_deconv"):
        out = run(module(body, x.shape), x)
    assert "failed" not in caplog.text and "falls back" not in caplog.text, caplog.text
    relu = np.maximum(x, 0)
    if op == "transposed":
        ref = conv_transpose_reference(relu, w, make_spec(x.shape, w.shape, **attrs))
    else:
        ref = dilated_conv_reference(relu, w, make_dilated_spec(x.shape, w.shape, **attrs))
    assert relative_error(out, ref) < 1e-5
