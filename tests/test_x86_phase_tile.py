"""The x86 phase-tile kernel (``x86.phase_tile``: every phase of an output patch in one
register tile, for convs whose phases each own one output per input position): which calls it
takes, numerics on awkward configs, fused epilogues, its tiles.

It takes 16-lane (AVX-512) targets only; the numerics tests lower its lane count to the host's,
so they run on any x86 machine (the compute does not depend on the width)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

import tvm_deconv
from tvm_deconv import strategy
from tvm_deconv.plan import make_plan, make_spec
from tvm_deconv.schedules import x86, x86_phase_tile
from tvm_deconv.targets import resolve_target
from tvm_deconv.testing import (conv_transpose_reference, relative_error, run_implementation,
                                transposed_conv_module)

TARGET = resolve_target("llvm")
NAME = "x86.phase_tile"


@pytest.fixture
def host_lanes(monkeypatch):
    """The kernel takes the host's vector width (16 lanes on AVX-512 hosts already)."""
    monkeypatch.setattr(x86_phase_tile, "LANES", x86.vector_lanes(TARGET))


def _run(spec, bias=None, act=None):
    return run_implementation(NAME, spec, TARGET, bias, act, seed=3)


@pytest.mark.parametrize("kernel,stride,padding,output_padding,dilation,on_grid", [
    (2, 2, 0, 0, 1, True),    # U-Net: one tap per phase
    (3, 3, 0, 0, 1, True),
    (4, 2, 1, 0, 1, True),    # DCGAN: two taps per phase and axis, inputs q-1..q+1
    (3, 2, 1, 1, 1, True),    # CycleGAN: ragged phases (1 and 2 taps)
    (3, 1, 1, 0, 1, True),    # stride 1, "same" padding
    (2, 2, 1, 0, 1, False),   # the padding crops the output below s x in
    (2, 2, 0, 1, 1, False),   # the output-padding row: output above s x in
    (3, 2, 0, 0, 1, False),   # ragged and output 2 * in + 1
    (2, 3, 0, 0, 1, False),   # k < s: a phase without taps
    (3, 2, 2, 1, 2, False),   # dilation
])
def test_plan_says_which_convs_put_every_phase_on_the_input_grid(kernel, stride, padding,
                                                                 output_padding, dilation,
                                                                 on_grid):
    spec = make_spec((1, 4, 8, 8), (4, 4, kernel, kernel), strides=stride, padding=padding,
                     output_padding=output_padding, dilation=dilation)
    assert make_plan(spec).phases_on_input_grid is on_grid


# Channel counts that leave a padded last tile, several column tiles per row and row tiles
# per plane, rectangular strides, s = 4 and 8 (nested interleaves), batch > 1, 1-d and 3-d;
# halos of taps reaching past the patch (zeros past the borders) on one side, both sides and
# two deep, ragged phases.
def _configs(lanes: int) -> list:
    return [
        ((1, 16, 4, 2 * lanes), (16, 8, 2, 2), dict(strides=2)),
        ((2, 5, 3, lanes), (5, 7, 2, 2), dict(strides=2)),
        ((1, 8, 6, 4 * lanes), (8, 3, 2, 2), dict(strides=2)),
        ((1, 6, 2, lanes), (6, 4, 3, 2), dict(strides=(3, 2))),
        ((1, 4, 3, lanes), (4, 5, 4, 4), dict(strides=4)),
        ((3, 8, 2 * lanes), (8, 6, 2), dict(strides=2)),
        ((1, 4, 2, 3, lanes), (4, 5, 2, 2, 2), dict(strides=2)),
        ((2, 8, 8, lanes), (8, 12, 3, 3), dict(strides=2, padding=1, output_padding=1)),
        ((1, 8, 6, 2 * lanes), (8, 5, 4, 4), dict(strides=2, padding=1)),
        ((1, 5, 6, lanes), (5, 1, 9, 9), dict(strides=2, padding=4, output_padding=1)),
        ((1, 6, 5, lanes), (6, 4, 8, 8), dict(strides=4, padding=2)),
        ((1, 8, 4 * lanes), (8, 6, 16), dict(strides=8, padding=4)),
        ((1, 4, 3, 2 * lanes), (4, 6, 3, 4), dict(strides=(1, 2), padding=1)),
        # weights over GROUP_WEIGHT_BYTES: several channel groups
        ((1, 64, 2, lanes), (64, 72, 4, 4), dict(strides=2, padding=1)),
        # 16 phases of 4 taps: the tile takes them in 4 runs of 4 phases
        ((1, 4, 5, 2 * lanes), (4, 6, 8, 8), dict(strides=4, padding=2)),
        # 3-d, 8 phases of 8 taps (the 3-D U-Net k4): 2 runs
        ((1, 4, 4, 4, lanes), (4, 3, 4, 4, 4), dict(strides=2, padding=1)),
    ]


@pytest.mark.parametrize("index", range(16), ids=[f"cfg{i}" for i in range(16)])
def test_phase_tile_matches_reference(index, host_lanes):
    data_shape, weight_shape, attrs = _configs(x86_phase_tile.LANES)[index]
    spec = make_spec(data_shape, weight_shape, **attrs)
    lay = x86_phase_tile.phase_tile_layout(spec)
    if index == 13:
        assert lay.group_tiles < lay.oc_tiles
    if index == 14:
        assert lay.phase_groups == 4 and lay.tile[1] == 4
    if index == 15:
        assert lay.phase_groups == 2 and lay.tile[1] == 4
    data, weight, out = _run(spec)
    assert relative_error(out, conv_transpose_reference(data, weight, spec)) < 1e-5


# Strides that are no power of two: the write-back's interleave is two-source permutes
# (16 lanes).  FSRCNN x3's k9 s3 p4 op2 (ragged halo: inputs q-1..q+1), one tap a phase,
# stride 3 on one axis only, 1-d strides 5 and 6 (pieces drawing on 5 and 6 phase vectors).
ODD_STRIDE_CONFIGS = [
    ((1, 5, 6, 32), (5, 1, 9, 9), dict(strides=3, padding=4, output_padding=2)),
    ((2, 6, 3, 16), (6, 5, 3, 3), dict(strides=3)),
    ((1, 4, 4, 16), (4, 6, 4, 3), dict(strides=(2, 3), padding=(1, 0))),
    ((1, 6, 32), (6, 4, 5), dict(strides=5)),
    ((1, 4, 16), (4, 3, 8), dict(strides=6, padding=1)),
]


@pytest.mark.skipif(x86.vector_lanes(TARGET) != 16, reason="the permutes are AVX-512's")
@pytest.mark.parametrize("data_shape,weight_shape,attrs", ODD_STRIDE_CONFIGS)
def test_phase_tile_odd_strides_match_reference(data_shape, weight_shape, attrs):
    spec = make_spec(data_shape, weight_shape, **attrs)
    assert strategy.get(NAME).applies_to(spec, TARGET) is None
    data, weight, out = _run(spec)
    assert relative_error(out, conv_transpose_reference(data, weight, spec)) < 1e-5


# Widths that are no multiple of the lanes where the output row is whole vectors: the last
# vector of a row runs into zero columns (computed, not stored).  DCGAN-like with the halo
# past the ragged edge, FCN-8s-like (28 of 32 columns, 64 phases), 1-d.
def _ragged_configs(lanes: int) -> list:
    return [
        ((1, 6, 3, lanes + lanes // 2), (6, 5, 4, 4), dict(strides=2, padding=1)),
        ((1, 5, 2, 7 * lanes // 4), (5, 3, 16, 16), dict(strides=8, padding=4)),
        ((2, 4, 7 * lanes // 4), (4, 3, 4), dict(strides=4)),
    ]


@pytest.mark.parametrize("index", range(3))
def test_phase_tile_ragged_rows_match_reference(index, host_lanes):
    data_shape, weight_shape, attrs = _ragged_configs(x86_phase_tile.LANES)[index]
    spec = make_spec(data_shape, weight_shape, **attrs)
    assert spec.in_size[-1] % x86_phase_tile.LANES
    bias = np.random.default_rng(5).standard_normal(spec.out_channels).astype("float32")
    data, weight, out = _run(spec, bias=bias, act=relax.op.nn.relu)
    ref = np.maximum(conv_transpose_reference(data, weight, spec, bias=bias), 0)
    assert relative_error(out, ref) < 1e-5


def test_phase_tile_fuses_bias_and_relu(host_lanes):
    lanes = x86_phase_tile.LANES
    spec = make_spec((1, 8, 4, 2 * lanes), (8, 12, 3, 3), strides=2, padding=1,
                     output_padding=1)
    bias = np.random.default_rng(4).standard_normal(12).astype("float32")
    data, weight, out = _run(spec, bias=bias, act=relax.op.nn.relu)
    ref = np.maximum(conv_transpose_reference(data, weight, spec, bias=bias), 0)
    assert relative_error(out, ref) < 1e-5


def test_phase_tile_declines_with_reasons(host_lanes):
    impl = strategy.get(NAME)
    lanes = x86_phase_tile.LANES
    for spec, target, why in [
        (make_spec((1, 8, 4, lanes), (8, 8, 2, 2), strides=2, padding=1), TARGET,
         "output != stride x input"),
        (make_spec((1, 8, 4, lanes), (8, 8, 2, 2), strides=3), TARGET, "without taps"),
        (make_spec((1, 8, 4, lanes), (8, 8, 3, 3), strides=1, padding=1), TARGET, "stride 1"),
        (make_spec((1, 4, 2 * lanes), (4, 4, 32), strides=32), TARGET, "32 phases"),
        (make_spec((1, 8, 4, lanes + 1), (8, 8, 2, 2), strides=2), TARGET, "multiple of"),
        (make_spec((1, 8, 4, lanes // 2), (8, 8, 2, 2), strides=2), TARGET, "real"),
        (make_spec((1, 8, 4, lanes), (8, 4, 2, 2), strides=2, groups=2), TARGET, "grouped"),
        (make_spec((1, 4, lanes), (4, 4, 17), strides=17), TARGET, "powers of two"),
        (make_spec((1, 8, 4, lanes), (8, 8, 2, 2), strides=2, dtype="float16"), TARGET,
         "float32"),
        (make_spec((1, 8, 4, lanes), (8, 8, 2, 2), strides=2), resolve_target("cortex-a72"),
         "arm_cpu"),
    ]:
        reason = impl.applies_to(spec, target)
        assert reason is not None and why in reason, (why, reason)


def test_phase_tile_lanes_are_avx512_only():
    impl = strategy.get(NAME)
    spec = make_spec((1, 8, 4, 32), (8, 8, 2, 2), strides=2)
    avx2 = tvm.target.Target({"kind": "llvm", "mcpu": "znver3", "num-cores": 2})
    assert "AVX-512" in impl.applies_to(spec, avx2)
    avx512 = tvm.target.Target({"kind": "llvm", "mcpu": "znver5", "num-cores": 2})
    assert impl.applies_to(spec, avx512) is None


@pytest.mark.parametrize("data_shape,weight_shape,attrs,tile", [
    ((1, 512, 32, 32), (512, 256, 2, 2), dict(strides=2), (1, 2, 2)),   # U-Net
    ((1, 64, 16, 16, 16), (64, 32, 2, 2, 2), dict(strides=2), (1, 2, 1)),  # 8 phases
    ((1, 128, 128, 128), (128, 64, 3, 3), dict(strides=2, padding=1, output_padding=1),
     None),                                                                # CycleGAN
    ((1, 64, 256), (64, 64, 2), dict(strides=2), None),
    # FSRCNN x3: 9 phases of 9 taps, in 3 runs; several taps a phase leave registers for
    # their shifted inputs (24 accumulators spilled)
    ((1, 56, 128, 128), (56, 1, 9, 9), dict(strides=3, padding=4, output_padding=2),
     (1, 4, 1)),
])
def test_phase_tile_tiles_fit_the_registers(data_shape, weight_shape, attrs, tile):
    spec = make_spec(data_shape, weight_shape, **attrs)
    lay = x86_phase_tile.phase_tile_layout(spec)
    if tile is not None:
        assert (lay.ot, lay.rh, lay.v) == tile
    one_tap = lay.taps == lay.phases
    limit = (x86_phase_tile.ACCUMULATORS if one_tap
             else x86_phase_tile.MULTI_TAP_ACCUMULATORS)
    assert lay.ot * lay.tile[1] * lay.rh * lay.v <= limit
    assert spec.in_size[-1] % (lay.v * lay.lanes) == 0
    if spec.ndim > 1:
        assert spec.in_size[-2] % lay.rh == 0
    tile_bytes = spec.in_channels * lay.ot * lay.taps * 4
    assert lay.group_tiles * tile_bytes <= max(x86_phase_tile.GROUP_WEIGHT_BYTES, tile_bytes)


def test_phase_tile_epilogues_inline_into_the_write_back(host_lanes):
    spec = make_spec((1, 8, 4, 2 * x86_phase_tile.LANES), (8, 12, 4, 4), strides=2, padding=1)
    mod = tvm_deconv.transform.DecomposeTransposedConv(TARGET)(
        transposed_conv_module(spec, bias=True, activation=relax.op.nn.relu))
    with TARGET:
        fused = tvm.transform.Sequential([
            relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
            relax.transform.FuseOps(), relax.transform.FuseTIR()])(mod)
    kernels = [f for f in fused.functions.values()
               if isinstance(f, tvm.tirx.PrimFunc) and '"interleave"' in f.script()]
    assert len(kernels) == 1, "the epilogue did not fuse into the conv"
    sch = tvm.s_tir.Schedule(kernels[0])
    epilogues = [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))
                 if x86.ROLE not in sch.get(b).annotations]
    assert epilogues  # bias add, ReLU
    x86_phase_tile.schedule_phase_tile(sch, TARGET)
    roots = [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))]
    assert not set(epilogues) & set(roots), roots  # inlined into the write-back


def test_phase_tile_workspace_is_the_panels_in_flight():
    spec = make_spec((1, 128, 128, 128), (128, 64, 3, 3), strides=2, padding=1,
                     output_padding=1)
    lay = x86_phase_tile.phase_tile_layout(spec)
    # the patch and, for k3 s2 p1, one halo row below and one column right
    panel = 128 * (lay.rh + 1) * (lay.v * lay.lanes + 1) * 4
    assert 64 % lay.ot == 0
    with tvm.target.Target({"kind": "llvm", "mcpu": "znver5", "num-cores": 2}):
        assert x86_phase_tile.workspace_bytes(spec) == 2 * panel   # Cout fills the tiles


@pytest.mark.parametrize("stride", [2, 3])
def test_phase_tile_kernel_goes_through_the_tuner(stride, host_lanes, tmp_path):
    """MetaSchedule takes the kernel as the default space's candidate (its flop counter had no
    case for TIR's Shuffle, nor for a Ramp as a value, which neither write-back uses: stride 3
    is the permuted one) and verifies it."""
    from tvm_deconv import tuning  # pylint: disable=import-outside-toplevel

    if stride == 3 and x86_phase_tile.LANES != 16:
        pytest.skip("the stride-3 write-back's permutes are AVX-512's")
    spec = make_spec((1, 8, 4, 2 * x86_phase_tile.LANES), (8, 12, 3, 3), strides=stride,
                     padding=1, output_padding=stride - 1)
    tasks = tuning.make_tasks([spec], TARGET, spaces=["default"])
    assert [t.implementation for t in tasks] == [NAME]
    (result,) = tuning.tune(tasks, TARGET, tmp_path, trials=1, spaces=["default"],
                            cost_model="random", progress=False)
    assert result.best_ms is not None and result.rejected == 0


def test_a_declined_phase_tile_call_logs_why(caplog):
    """A U-Net-like call the kernel cannot take (width 20) goes to the next implementation,
    and the log says which kernel declined and why."""
    spec = make_spec((1, 8, 4, 20), (8, 8, 2, 2), strides=2)
    with caplog.at_level("INFO", logger="tvm_deconv"):
        tvm_deconv.transform.DecomposeTransposedConv(TARGET)(transposed_conv_module(spec))
    picked = strategy.select(strategy.CONV_TRANSPOSE, spec, TARGET).implementation.name
    assert picked != NAME
    line = next(r.getMessage() for r in caplog.records if f"uses {picked}" in r.getMessage())
    assert f"{NAME} declined: " in line
    assert "target keys" not in line  # the other targets' kernels are not listed
