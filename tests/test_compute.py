"""The decomposed TIR computes, unscheduled (TVM's default codegen), against float64."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import tvm_deconv
from tvm_deconv.compute import decomposed_conv_transpose
from tvm_deconv.plan import DEFAULT_LAYOUTS, SPATIAL_AXES, make_plan, make_spec
from tvm_deconv.testing import (conv_transpose_reference, loop_nest_macs, random_inputs,
                                relative_error, run_primfunc)


def check(spec, seed=0):
    data, weight = random_inputs(spec, seed)
    assert np.all(data != 0) and np.all(weight != 0)
    out = run_primfunc(decomposed_conv_transpose(spec), [data, weight], spec.out_shape,
                       spec.out_dtype)
    ref = conv_transpose_reference(data, weight, spec)
    if not np.any(ref):
        # Padding and output_padding can leave an output that no input reaches.
        assert not np.any(out), f"{spec}: expected an all-zero output"
        return
    err = relative_error(out, ref)
    assert err < 1e-5, f"{spec}: relative error {err}"


def channels_last(ndim):
    return "N" + SPATIAL_AXES[ndim] + "C"


CASES = [
    # (data shape NC..., weight IO..., attrs)
    ((1, 512, 4, 4), (512, 16, 4, 4), dict(strides=2, padding=1)),           # DCGAN-like
    ((2, 8, 5, 5), (8, 3, 3, 3), dict(strides=2, padding=1, output_padding=1)),  # k % s != 0
    ((1, 4, 6, 6), (4, 1, 9, 9), dict(strides=3, padding=4, output_padding=2)),  # FSRCNN x3
    ((3, 4, 3, 3), (4, 2, 1, 1), dict(strides=3)),                           # k < s: zero phases
    ((2, 4, 3, 3), (4, 2, 2, 2), dict(strides=3, padding=(0, 1, 1, 0))),     # k < s, asym pad
    ((1, 6, 4, 4), (6, 2, 4, 4), dict(strides=2, padding=1, groups=3)),      # groups
    ((2, 6, 5, 4), (6, 1, 3, 3), dict(strides=2, padding=1, groups=6)),      # depthwise
    ((1, 3, 1, 1), (3, 5, 4, 4), dict(strides=1)),                           # 1x1 input
    ((1, 3, 1, 1), (3, 5, 3, 3), dict(strides=2, padding=1, output_padding=1)),
    ((1, 3, 4, 5), (3, 2, 3, 3), dict(strides=2, dilation=2, padding=2, output_padding=1)),
    ((1, 3, 4, 5), (3, 2, 3, 2), dict(strides=(3, 2), dilation=(2, 3), padding=(1, 2, 0, 3))),
    ((2, 5, 16), (5, 3, 16), dict(strides=8, padding=4)),                    # HiFi-GAN-like 1-d
    ((1, 3, 7), (3, 2, 3), dict(strides=2, padding=(0, 2), output_padding=1)),
    ((2, 3, 3, 4, 2), (3, 2, 2, 2, 2), dict(strides=2)),                     # 3-D U-Net k2s2
    ((1, 2, 3, 3, 3), (2, 4, 4, 3, 2), dict(strides=(2, 3, 1), padding=(1, 1, 0, 1, 0, 1))),
]


@pytest.mark.parametrize("channels_last_layout", [False, True], ids=["NC..", "N..C"])
@pytest.mark.parametrize("data_shape,weight_shape,attrs", CASES)
def test_against_reference(data_shape, weight_shape, attrs, channels_last_layout):
    nd = len(data_shape) - 2
    if channels_last_layout:
        layout = channels_last(nd)
        data_shape = (data_shape[0],) + data_shape[2:] + (data_shape[1],)
        # Default kernel layout for channels-last data: spatial, O, I (TensorFlow's).
        weight_shape = weight_shape[2:] + (weight_shape[1], weight_shape[0])
        spec = make_spec(data_shape, weight_shape, data_layout=layout, **attrs)
        assert spec.kernel_layout == DEFAULT_LAYOUTS[layout]
    else:
        spec = make_spec(data_shape, weight_shape, **attrs)
    check(spec)


def test_mixed_layouts_and_out_dtype():
    spec = make_spec((1, 5, 5, 4), (4, 3, 3, 3), strides=2, padding=1, data_layout="NHWC",
                     kernel_layout="IOHW", out_layout="NCHW", dtype="float32",
                     out_dtype="float64")
    check(spec)


def test_float16_accumulates_in_float32():
    spec = make_spec((1, 16, 4, 4), (16, 4, 4, 4), strides=2, padding=1, dtype="float16",
                     out_dtype="float32")
    data, weight = random_inputs(spec)
    out = run_primfunc(decomposed_conv_transpose(spec), [data, weight], spec.out_shape,
                       "float32")
    # Inputs are exactly representable in fp16, products are summed in fp32.
    assert relative_error(out, conv_transpose_reference(data, weight, spec)) < 1e-5


@st.composite
def specs(draw):
    nd = draw(st.sampled_from([1, 2, 2, 3]))
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cin = groups * draw(st.integers(1, 3))
    cout_g = draw(st.integers(1, 3))
    sizes = [draw(st.integers(1, 5 if nd < 3 else 3)) for _ in range(nd)]
    kernel = [draw(st.integers(1, 6 if nd < 3 else 3)) for _ in range(nd)]
    strides = [draw(st.integers(1, 4)) for _ in range(nd)]
    dilation = [draw(st.sampled_from([1, 1, 1, 2])) for _ in range(nd)]
    pads = [draw(st.integers(0, k - 1)) for k in kernel + kernel]
    output_padding = [draw(st.integers(0, max(s, d) - 1)) for s, d in zip(strides, dilation)]
    batch = draw(st.integers(1, 2))
    last = draw(st.booleans())
    layout = channels_last(nd) if last else "NC" + SPATIAL_AXES[nd]
    data = (batch, *sizes, cin) if last else (batch, cin, *sizes)
    weight = (*kernel, cout_g, cin) if last else (cin, cout_g, *kernel)
    try:
        return make_spec(data, weight, strides=strides, padding=pads,
                         output_padding=output_padding, dilation=dilation, groups=groups,
                         data_layout=layout)
    except tvm_deconv.PlanError:
        return None  # padding cropped the whole output: not a valid conv


@settings(max_examples=320, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs(), st.integers(0, 2**16))
def test_property_random_configs(spec, seed):
    if spec is None:
        return
    check(spec, seed)


@pytest.mark.parametrize("data_shape,weight_shape,attrs", CASES)
def test_loop_nest_does_exactly_the_planned_macs(data_shape, weight_shape, attrs):
    spec = make_spec(data_shape, weight_shape, **attrs)
    plan = make_plan(spec)
    func = decomposed_conv_transpose(spec)
    assert loop_nest_macs(func) == plan.macs()
    # Ragged sub-kernels: never more MACs than one per (output, tap of its phase).
    if plan.num_phases > 1:
        assert plan.macs() < plan.zero_insertion_macs()


def test_no_zero_insertion_stage():
    spec = make_spec((1, 8, 4, 4), (8, 4, 3, 3), strides=2, padding=1, output_padding=1)
    func = decomposed_conv_transpose(spec)
    text = func.script()
    assert "alloc_buffer" not in text  # no intermediate (dilated or padded) tensor
    assert "dilate" not in text
    assert [tuple(int(d) for d in b.shape) for b in func.params] == [
        spec.data_shape, spec.weight_shape, spec.out_shape]
