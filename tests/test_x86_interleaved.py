"""The x86 interleaved kernel (``x86.interleaved``: dense phase GEMMs, then one interleave
pass): which calls it takes, numerics on awkward configs, fused epilogues, its fixed tiles.

It takes 16-lane (AVX-512) targets only; the numerics tests lower its lane count to the host's,
so they run on any x86 machine (the compute and schedule do not depend on the width)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

import tvm_deconv
from tvm_deconv import strategy
from tvm_deconv.plan import make_plan, make_spec
from tvm_deconv.schedules import x86, x86_interleaved
from tvm_deconv.targets import resolve_target
from tvm_deconv.testing import (conv_transpose_reference, relative_error, run_implementation,
                                transposed_conv_module)

TARGET = resolve_target("llvm")
NAME = "x86.interleaved"


@pytest.fixture
def host_lanes(monkeypatch):
    """The kernel takes the host's vector width (16 lanes on AVX-512 hosts already)."""
    monkeypatch.setattr(x86_interleaved, "LANES", x86.vector_lanes(TARGET))


def _run(spec, bias=None, act=None):
    return run_implementation(NAME, spec, TARGET, bias, act, seed=5)


# Many output channels and a stride > 1 (oc mode): uniform and ragged phases, k < s, groups,
# output padding, asymmetric padding, rectangular strides, odd extents (imperfect column tiles,
# 1-row tiles), batch > 1, 1-d and 3-d, Cout not a multiple of the vector width.
CONFIGS = [
    ((1, 16, 5, 5), (16, 16, 4, 4), dict(strides=2, padding=1)),
    ((2, 8, 6, 5), (8, 12, 3, 3), dict(strides=2, padding=1, output_padding=1)),
    ((1, 6, 4, 5), (6, 24, 2, 2), dict(strides=3, padding=0)),
    ((1, 8, 5, 4), (8, 20, 3, 3), dict(strides=2, padding=(0, 1, 2, 0), groups=2)),
    ((1, 10, 7, 5), (10, 20, 5, 3), dict(strides=(3, 2), padding=(2, 1), output_padding=(1, 0))),
    ((1, 8, 6, 6), (8, 9, 3, 3), dict(strides=2, padding=2, dilation=2)),
    ((2, 8, 9), (8, 16, 5), dict(strides=3, padding=1, output_padding=1)),
    ((1, 4, 3, 4, 3), (4, 8, 3, 2, 4), dict(strides=2, padding=1)),
    ((1, 64, 3, 5), (64, 40, 2, 2), dict(strides=2)),
]


@pytest.mark.parametrize("data_shape,weight_shape,attrs", CONFIGS,
                         ids=[f"cfg{i}" for i in range(len(CONFIGS))])
def test_interleaved_matches_reference(data_shape, weight_shape, attrs, host_lanes):
    spec = make_spec(data_shape, weight_shape, **attrs)
    data, weight, out = _run(spec)
    assert relative_error(out, conv_transpose_reference(data, weight, spec)) < 1e-5


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_interleaved_fuses_bias_and_activation_into_the_interleave(act, host_lanes):
    spec = make_spec((1, 8, 5, 6), (8, 16, 4, 4), strides=2, padding=1)
    bias = np.random.default_rng(2).standard_normal(16).astype("float32")
    relax_act, np_act = {"relu": (relax.op.nn.relu, lambda y: np.maximum(y, 0)),
                         "tanh": (relax.op.tanh, np.tanh)}[act]
    data, weight, out = _run(spec, bias=bias, act=relax_act)
    assert relative_error(out, np_act(conv_transpose_reference(data, weight, spec, bias=bias))
                          ) < 1e-5
    mod = tvm_deconv.transform.DecomposeTransposedConv(TARGET)(
        transposed_conv_module(spec, bias=True, activation=relax_act))
    with TARGET:
        fused = tvm.transform.Sequential([
            relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
            relax.transform.FuseOps(), relax.transform.FuseTIR()])(mod)
    kernels = [f for f in fused.functions.values()
               if isinstance(f, tvm.tirx.PrimFunc) and "interleave" in f.script()]
    assert len(kernels) == 1, "the epilogue did not fuse into the conv"
    sch = tvm.s_tir.Schedule(kernels[0])
    epilogues = [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))
                 if x86.ROLE not in sch.get(b).annotations]
    assert epilogues  # bias add, activation
    x86_interleaved.schedule_x86_interleaved(sch, TARGET)
    roots = [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))]
    assert not set(epilogues) & set(roots), roots  # inlined into the interleave: no own pass


def test_interleaved_declines_with_reasons():
    impl = strategy.get(NAME)
    oc = make_spec((1, 16, 4, 4), (16, 32, 4, 4), strides=2, padding=1)
    for spec, target, why in [
        (oc, resolve_target("cortex-a72"), "arm_cpu"),
        (make_spec((1, 16, 4, 4), (16, 32, 3, 3), padding=1), TARGET, "stride 1"),
        (make_spec((1, 16, 4, 4), (16, 3, 4, 4), strides=2, padding=1), TARGET,
         "output channels per group"),
        (make_spec((1, 16, 4, 4), (16, 32, 4, 4), strides=2, padding=1, dtype="float16"),
         TARGET, "float32"),
    ]:
        reason = impl.applies_to(spec, target)
        assert reason is not None and why in reason, (why, reason)
    avx2 = tvm.target.Target({"kind": "llvm", "mcpu": "znver3", "num-cores": 2})
    assert "16-lane" in impl.applies_to(oc, avx2)
    avx512 = tvm.target.Target({"kind": "llvm", "mcpu": "znver5", "num-cores": 2})
    assert impl.applies_to(oc, avx512) is None


@pytest.mark.parametrize("blocks,qext,reduction,expected", [
    (16, [8, 6], [256, 2, 2], (2, 2, 3)),   # pose 256->256: 12 accumulators, perfect tiles
    (16, [32, 32], [512, 1, 1], (2, 2, 3)),  # U-Net: 3 columns, 1 of 33 padded
    (16, [4, 4], [512, 2, 2], (2, 2, 2)),   # DCGAN 512->256: 3 columns would pad half
    (16, [128], [512, 2], (2, None, 6)),    # HiFi-GAN (1-d)
    (2, [7, 28], [21, 2, 2], (2, 1, 6)),    # odd rows: 1-row tiles
    (3, [16, 16], [64, 2, 2], (1, 2, 4)),   # an odd count of channel vectors: one per tile
])
def test_interleaved_tiles_fill_twelve_accumulators(blocks, qext, reduction, expected):
    tiles = x86_interleaved.interleaved_tiles(blocks, qext, reduction)
    got = (tiles[0][1], tiles[1][1] if tiles[1] is not None else None, tiles[2][1])
    assert got == expected
    assert got[0] * (got[1] or 1) * got[2] <= x86_interleaved.ACCUMULATORS
    assert tiles[3] is None  # weight slices of at most 256 KiB: no input chunks


@pytest.mark.parametrize("qext,reduction,chunk", [
    ([8, 6], [2048, 2, 2], 512),    # pose 2048->256: a 1 MiB slice, in 256 KiB chunks
    ([8, 6], [1024, 4, 4], 128),
    ([64, 64], [2048, 2, 2], None),  # the task's accumulators would not fit L1/L2
    ([8, 6], [1000, 4, 4], None),   # no chunk size splits 1000 channels
])
def test_interleaved_tiles_chunk_big_weight_slices(qext, reduction, chunk):
    tiles = x86_interleaved.interleaved_tiles(16, qext, reduction)
    assert tiles[3] == chunk
    if chunk:
        assert (chunk * 2 * 16 * int(np.prod(reduction[1:])) * 4
                <= x86_interleaved.WEIGHT_SLICE_BYTES)


# Input chunks (of 64 channels, the smallest) on small layers (a 1-byte weight-slice budget): ragged phases; one channel tile,
# so spatial tiles join the parallel loop; groups; 1-d.
CHUNKED = [
    ((1, 128, 5, 5), (128, 16, 3, 3), dict(strides=2, padding=1, output_padding=1)),
    ((2, 256, 4, 3), (256, 32, 4, 4), dict(strides=2, padding=1, groups=2)),
    ((1, 192, 9), (192, 32, 5), dict(strides=3, padding=1)),
]


@pytest.mark.parametrize("data_shape,weight_shape,attrs", CHUNKED,
                         ids=[f"cfg{i}" for i in range(len(CHUNKED))])
def test_input_chunks_match_reference_and_lead_the_spatial_tiles(
        data_shape, weight_shape, attrs, host_lanes, monkeypatch):
    monkeypatch.setattr(x86_interleaved, "WEIGHT_SLICE_BYTES", 1)
    spec = make_spec(data_shape, weight_shape, **attrs)
    data, weight, out = _run(spec)
    assert relative_error(out, conv_transpose_reference(data, weight, spec)) < 1e-5
    # The chunk loop (64 channels) sits right under the parallel loop, above the spatial
    # tiles that did not join it.
    sch = tvm.s_tir.Schedule(x86_interleaved.interleaved_compute(spec))
    x86_interleaved.schedule_x86_interleaved(sch, TARGET)
    phase = sch.get_sblock(next(p.name for p in make_plan(spec).phases() if p.has_taps)
                           + "_update")  # decompose_reduction's name for the update
    loops = [sch.get(lp) for lp in sch.get_loops(phase)]
    assert loops[0].kind == tvm.tirx.ForKind.PARALLEL
    assert int(loops[1].extent) == spec.in_per_group // 64


@pytest.mark.parametrize("data_shape,weight_shape,attrs", [
    ((4, 8, 12, 12), (8, 16, 2, 2), dict(strides=2)),
    ((6, 8, 10, 9), (8, 12, 3, 3), dict(strides=2, padding=1, output_padding=1)),
    ((4, 8, 64), (8, 16, 5), dict(strides=3, padding=1, output_padding=1)),
])
def test_big_batches_go_through_the_passes_in_chunks(data_shape, weight_shape, attrs,
                                                     host_lanes, monkeypatch):
    """An 8 KiB budget (over the weight, under an image's padded input and accumulators): one
    image per chunk, every block under the chunk loop, the workspace one chunk's; the output
    (bias and ReLU fused) still matches float64."""
    spec = make_spec(data_shape, weight_shape, **attrs)
    whole = x86_interleaved.workspace_bytes(spec)
    monkeypatch.setattr(x86_interleaved, "BATCH_CHUNK_BYTES", 8 << 10)
    data, weight, out = _run(spec, bias=np.ones(spec.out_channels, "float32"),
                             act=relax.op.nn.relu)
    ref = np.maximum(conv_transpose_reference(data, weight, spec,
                                              bias=np.ones(spec.out_channels)), 0)
    assert relative_error(out, ref) < 1e-5
    sch = tvm.s_tir.Schedule(x86_interleaved.interleaved_compute(spec))
    assert x86_interleaved.batch_chunk(sch) == 1
    x86_interleaved.schedule_x86_interleaved(sch, TARGET)
    root = sch.get_child_blocks(sch.get_sblock("root"))
    chunks = {sch.get(sch.get_loops(b)[0]).extent for b in root}
    assert chunks == {spec.batch}  # one loop over the images holds every block
    assert x86_interleaved.workspace_bytes(spec) < whole


def test_batches_whose_weight_outgrows_the_budget_stay_whole(monkeypatch):
    spec = make_spec((8, 64, 4, 4), (64, 32, 4, 4), strides=2, padding=1)
    monkeypatch.setattr(x86_interleaved, "BATCH_CHUNK_BYTES", 64 << 10)  # < the 128 KiB weight
    assert x86_interleaved.batch_chunk(
        tvm.s_tir.Schedule(x86_interleaved.interleaved_compute(spec))) == 8


def test_workspace_counts_the_dense_phase_accumulators():
    spec = make_spec((1, 64, 8, 8), (64, 32, 4, 4), strides=2, padding=1)
    with resolve_target("llvm"):
        extra = x86_interleaved.workspace_bytes(spec) - x86.workspace_bytes(spec)
    # the four phase accumulators hold the whole output (32 channels, 16 x 16, no padding)
    assert extra >= 4 * 32 * 8 * 8 * 4
