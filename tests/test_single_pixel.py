"""The 1-pixel-input implementation (a GEMV) against float64, and when it declines."""

import numpy as np
import pytest
import tvm
from tvm import relax

import tvm_deconv
from tvm_deconv import strategy
from tvm_deconv.plan import make_spec
from tvm_deconv.testing import (conv_transpose_reference, random_inputs, relative_error,
                                transposed_conv_module)

HOST = tvm_deconv.resolve_target("llvm")


@pytest.mark.parametrize("data,weight,attrs", [
    ((1, 100, 1, 1), (100, 64, 4, 4), dict(strides=1)),                      # DCGAN latent
    ((3, 7, 1, 1), (7, 5, 3, 3), dict(strides=2, padding=1, output_padding=1)),
    ((1, 9, 1), (9, 3, 5), dict(strides=3, padding=(1, 2))),
    ((2, 4, 1, 1, 1), (4, 6, 2, 3, 2), dict(strides=2)),
])
def test_single_pixel_matches_reference_with_fused_epilogue(data, weight, attrs):
    spec = make_spec(data, weight, **attrs)
    assert strategy.select(strategy.CONV_TRANSPOSE, spec, HOST).implementation.name \
        == "cpu.single_pixel"
    x, w = random_inputs(spec, seed=4)
    bias = np.random.default_rng(5).standard_normal(spec.out_channels).astype("float32")
    bias_shape = (1, spec.out_channels) + (1,) * spec.ndim

    def epilogue(bb, y):
        return bb.emit(relax.op.tanh(relax.op.add(y, relax.op.reshape(relax.const(bias),
                                                                        bias_shape))))

    ex = tvm_deconv.build(transposed_conv_module(spec, w, epilogue), HOST)
    out = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    ref = np.tanh(conv_transpose_reference(x, w, spec, bias))
    assert relative_error(out, ref) < 1e-5


@pytest.mark.parametrize("data,weight,attrs,why", [
    ((1, 4, 1, 1), (4, 2, 3, 3), dict(strides=2, dilation=2), "dilation"),
    ((1, 4, 1, 1), (4, 2, 3, 3), dict(strides=2, groups=2), "groups"),
    ((1, 4, 1, 1), (4, 2, 3, 3), dict(strides=2, output_padding=1), "output_padding"),
    ((1, 4, 2, 1), (4, 2, 3, 3), dict(strides=2), "single pixel"),
])
def test_single_pixel_declines_what_it_cannot_do(data, weight, attrs, why):
    spec = make_spec(data, weight, **attrs)
    selection = strategy.select(strategy.CONV_TRANSPOSE, spec, HOST)
    assert selection.implementation.name != "cpu.single_pixel"
    assert any(name == "cpu.single_pixel" and why in reason
               for name, reason in selection.declined)
