"""The phase plan against a brute-force enumeration of the scatter definition (pure Python)."""

import itertools
import math

import pytest
from hypothesis import given, settings, strategies as st

from tvm_deconv.plan import PlanError, make_plan, make_spec, plan_axis


def scatter_pairs(in_size, kernel, stride, dilation, pad_before, out_size):
    """Every (output, tap, input) triple of the textbook definition inside the output."""
    return {(i * stride + t * dilation - pad_before, t, i)
            for i in range(in_size) for t in range(kernel)
            if 0 <= i * stride + t * dilation - pad_before < out_size}


@st.composite
def axis_configs(draw):
    stride = draw(st.integers(1, 5))
    dilation = draw(st.integers(1, 3))
    kernel = draw(st.integers(1, 10))
    in_size = draw(st.integers(1, 9))
    pad_before = draw(st.integers(0, kernel))
    pad_after = draw(st.integers(0, kernel))
    output_padding = draw(st.integers(0, max(stride, dilation) - 1))
    out = (in_size - 1) * stride - pad_before - pad_after + dilation * (kernel - 1)
    out += output_padding + 1
    return in_size, kernel, stride, dilation, pad_before, pad_after, output_padding, out


@settings(max_examples=400, deadline=None)
@given(axis_configs())
def test_axis_plan_matches_scatter_definition(cfg):
    in_size, kernel, stride, dilation, pad_before, pad_after, output_padding, out = cfg
    if out <= 0:
        return
    axis = plan_axis(in_size, kernel, stride, dilation, pad_before, pad_after, output_padding)
    assert axis.out_size == out
    assert sum(p.extent for p in axis.phases) == out
    planned = set()
    for phase in axis.phases:
        assert len(phase.taps) == phase.num_taps
        for q in range(phase.extent):
            o = phase.output_index(q)
            assert o % stride == phase.phase and 0 <= o < out
            for t, offset in zip(phase.taps, phase.input_offsets):
                assert 0 <= t < kernel
                assert (q + offset) * stride == o + pad_before - t * dilation
                if 0 <= q + offset < in_size:
                    planned.add((o, t, q + offset))
    assert planned == scatter_pairs(in_size, kernel, stride, dilation, pad_before, out)


@settings(max_examples=300, deadline=None)
@given(axis_configs(), st.integers(1, 12), st.integers(0, 5))
def test_input_window_spans_every_read_of_a_q_window(cfg, width, start):
    """``input_window(w)``: the input positions the phases with taps read for outputs ``q`` in
    ``[start, start + w)`` of each, lowest to highest, wherever the window starts."""
    in_size, kernel, stride, dilation, pad_before, pad_after, output_padding, out = cfg
    if out <= 0:
        return
    axis = plan_axis(in_size, kernel, stride, dilation, pad_before, pad_after, output_padding)
    reads = [q + offset for p in axis.phases if p.num_taps and p.extent
             for q in range(start, start + width) for offset in p.input_offsets]
    if reads:
        assert axis.input_window(width) == max(reads) - min(reads) + 1


@settings(max_examples=300, deadline=None)
@given(axis_configs())
def test_batched_closed_forms_match_every_phase(cfg):
    """Where all phases share one loop nest (the CUDA phase-batched kernel), the closed form
    in ``r`` gives exactly each phase's input offsets."""
    in_size, kernel, stride, dilation, pad_before, pad_after, output_padding, out = cfg
    if out <= 0:
        return
    axis = plan_axis(in_size, kernel, stride, dilation, pad_before, pad_after, output_padding)
    expected = (dilation == 1 and kernel % stride == 0 and out % stride == 0)
    assert axis.phase_batched == expected
    if not expected:
        return
    for phase in axis.phases:
        assert phase.extent == out // stride
        for j in range(phase.num_taps):
            for q in range(phase.extent):
                assert axis.batched_input(phase.phase, q, j) == q + phase.input_offsets[j]


@settings(max_examples=300, deadline=None)
@given(axis_configs())
def test_phase_runs_read_one_input_window(cfg):
    """The phases of each run of ``phase_run`` (from a multiple of it) read the same inputs
    for every tap and ``q``, so one GEMM operand serves the run (the Hopper kernel's phase
    groups), and with equal tap counts no longer run length does."""
    in_size, kernel, stride, dilation, pad_before, pad_after, output_padding, out = cfg
    if out <= 0:
        return
    axis = plan_axis(in_size, kernel, stride, dilation, pad_before, pad_after, output_padding)
    if axis.dilation > 1:
        return
    run = axis.phase_run
    assert stride % run == 0
    for start in range(0, stride, run):
        offsets = {axis.phases[r].input_offsets for r in range(start, start + run)}
        assert len(offsets) == 1
    for longer in range(run + 1, stride + 1):  # with equal tap counts, no longer run holds
        if stride % longer == 0 and axis.uniform_taps:
            assert any(len({axis.phases[r].input_offsets for r in range(start, start + longer)})
                       > 1 for start in range(0, stride, longer))


@pytest.mark.parametrize("kernel,stride,pad,run", [(2, 2, 0, 2), (16, 8, 4, 4), (4, 2, 1, 1),
                                                   (6, 3, 3, 3), (12, 6, 2, 2), (3, 2, 1, 1),
                                                   (9, 3, 4, 1)])
def test_phase_run_examples(kernel, stride, pad, run):
    assert plan_axis(8, kernel, stride, pad_before=pad, pad_after=pad).phase_run == run


@pytest.mark.parametrize("kernel,stride,taps", [
    (3, 2, (2, 1)), (9, 2, (5, 4)), (4, 2, (2, 2)), (9, 3, (3, 3, 3)), (16, 8, (2,) * 8),
    (2, 3, (1, 1, 0)), (1, 4, (1, 0, 0, 0))])
def test_ragged_subkernels_waste_no_tap(kernel, stride, taps):
    """Every kernel tap is used by exactly one phase: no zero-padding to a multiple of s."""
    axis = plan_axis(8, kernel, stride, pad_before=0)
    assert tuple(p.num_taps for p in axis.phases) == taps
    used = sorted(t for p in axis.phases for t in p.taps)
    assert used == list(range(kernel))


def brute_force_macs(spec):
    """Count (output element, tap) pairs whose tap belongs to the element's phase."""
    total = 0
    ranges = [range(o) for o in spec.out_size]
    for pos in itertools.product(*ranges):
        taps = 1
        for o, k, s, d, pb in zip(pos, spec.kernel, spec.strides, spec.dilation, spec.pad_before):
            taps *= sum(1 for t in range(k) if (o + pb - t * d) % s == 0)
        total += taps
    return total * spec.batch * spec.out_channels * spec.in_per_group


@pytest.mark.parametrize("data,weight,attrs", [
    ((1, 4, 5, 5), (4, 6, 3, 3), dict(strides=2, padding=1, output_padding=1)),
    ((2, 3, 4, 4), (3, 2, 9, 9), dict(strides=3, padding=4, output_padding=2)),
    ((1, 6, 3, 3), (6, 1, 1, 1), dict(strides=3, groups=6)),
    ((1, 2, 4), (2, 3, 16), dict(strides=8, padding=4)),
    ((1, 2, 3, 3, 3), (2, 2, 4, 2, 3), dict(strides=(2, 1, 3), padding=1)),
])
def test_plan_mac_count(data, weight, attrs):
    plan = make_plan(make_spec(data, weight, **attrs))
    assert plan.macs() == brute_force_macs(plan.spec)
    assert plan.macs() < plan.zero_insertion_macs() or plan.num_phases == 1


def test_tapless_phases_are_marked():
    plan = make_plan(make_spec((1, 2, 4, 4), (2, 2, 1, 1), strides=3))
    phases = list(plan.phases())
    assert sum(p.has_taps for p in phases) == 1
    assert all(0 in p.num_taps for p in phases if not p.has_taps)
    assert [p.index for p in phases if p.has_taps] == [(0, 0)]


@pytest.mark.parametrize("attrs,message", [
    (dict(strides=0), "strides"),
    (dict(strides=2, output_padding=2), "output_padding"),
    (dict(padding=-1), "padding"),
    (dict(groups=3), "groups"),
    (dict(padding=(1, 1, 1)), "padding"),
    (dict(data_layout="NCHX"), "layout"),
    (dict(padding=20), "empty"),
])
def test_invalid_attributes_name_the_problem(attrs, message):
    with pytest.raises(PlanError, match=message):
        make_spec((1, 4, 5, 5), (4, 2, 3, 3), **attrs)


def test_weight_channels_must_match():
    with pytest.raises(PlanError, match="kernel_layout"):
        make_spec((1, 4, 5, 5), (2, 4, 3, 3))


def test_useful_flops_formula():
    spec = make_spec((2, 8, 5, 7), (8, 3, 4, 4), strides=2, padding=1, groups=2)
    assert make_plan(spec).useful_flops() == 2 * 2 * 8 * 3 * 5 * 7 * 16
    assert math.prod(spec.out_size) == 10 * 14


@pytest.mark.parametrize("data,weight,attrs", [
    ((2, 4, 5, 5), (4, 3, 3, 3), dict(strides=2, padding=1, output_padding=1)),
    ((1, 6, 4, 3), (6, 2, 4, 4), dict(strides=(2, 3), padding=(1, 2), groups=3)),
    ((1, 3, 7), (3, 2, 16), dict(strides=8, padding=4)),
    ((1, 2, 3, 4, 2), (2, 3, 2, 3, 4), dict(strides=2, padding=1, output_padding=1)),
])
def test_reference_agrees_with_tvm_topi_testing(data, weight, attrs):
    """Our float64 oracle against TVM's own Python references (where they apply)."""
    import numpy as np
    from tvm.topi import testing as topi_testing

    from tvm_deconv.testing import conv_transpose_reference, random_inputs

    spec = make_spec(data, weight, **attrs)
    x, w = random_inputs(spec)
    x, w = x.astype("float64"), w.astype("float64")
    nd = spec.ndim
    pads = list(spec.pad_before + spec.pad_after)
    if nd == 1:
        theirs = topi_testing.conv1d_transpose_ncw_python(x, w, spec.strides[0], pads,
                                                          spec.output_padding)
    elif nd == 2:
        theirs = topi_testing.conv2d_transpose_nchw_python(x, w, spec.strides, pads,
                                                           spec.output_padding, spec.groups)
    else:
        theirs = topi_testing.conv3d_transpose_ncdhw_python(x, w, spec.strides, pads,
                                                             spec.output_padding, spec.groups)
    np.testing.assert_allclose(conv_transpose_reference(x, w, spec), theirs, rtol=1e-10,
                               atol=1e-10)


@pytest.mark.parametrize("kernel,stride,pad,output_padding",
                         [(4, 2, 1, 0), (9, 3, 4, 2), (16, 8, 4, 0), (2, 2, 0, 0)])
def test_phase_batched_packed_taps_are_the_row_major_phase_tap_grid(kernel, stride, pad,
                                                                     output_padding):
    """The batched GPU compute reads the per-phase packed weight at flat (r, j): that needs
    the phases' taps laid end to end in row-major (r, j) order, equal counts per phase."""
    spec = make_spec((1, 2, 5, 6), (2, 3, kernel, kernel), strides=stride, padding=pad,
                     output_padding=output_padding)
    plan = make_plan(spec)
    assert plan.phase_batched
    offsets, total = plan.tap_offsets()
    taps = math.prod(ax.max_taps for ax in plan.axes)
    assert total == taps * plan.num_phases
    row_major = itertools.product(*(range(s) for s in spec.strides))
    for flat_r, (phase, r) in enumerate(zip(plan.phases(), row_major)):
        assert phase.index == r and offsets[phase.index] == flat_r * taps
