"""The x86 interleaved kernel (``x86.interleaved``: phase GEMMs and one interleave, fused into
the interleave's parallel tasks, or dense accumulators and an interleave pass): which calls
it takes, numerics on awkward configs of both paths, fused epilogues, its fixed tiles and
task patches, where its accumulators are allocated, its workspace.

It takes 16-lane (AVX-512) targets only; the numerics tests lower its lane count to the host's,
so they run on any x86 machine (the compute and schedule do not depend on the width)."""

from __future__ import annotations

import re

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


# Input chunks (of 64 channels, the smallest) on small layers (a 1-byte weight-slice
# budget): ragged phases; one channel tile, so patches of rows make the parallel tasks;
# groups; 1-d (the dense path: its column tile does not divide the extent).
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
    # The chunk loop (64 channels) is the first loop under the parallel loop that is not a
    # unit loop (the fused path's image and group), above the spatial tiles.
    sch = tvm.s_tir.Schedule(x86_interleaved.interleaved_compute(spec))
    x86_interleaved.schedule_x86_interleaved(sch, TARGET)
    phase = sch.get_sblock(next(p.name for p in make_plan(spec).phases() if p.has_taps)
                           + "_update")  # decompose_reduction's name for the update
    loops = [sch.get(lp) for lp in sch.get_loops(phase)]
    assert loops[0].kind == tvm.tirx.ForKind.PARALLEL
    assert [int(lp.extent) for lp in loops[1:] if int(lp.extent) > 1][0] == (
        spec.in_per_group // 64)


@pytest.mark.parametrize("data_shape,weight_shape,attrs", [
    ((4, 8, 12, 12), (8, 16, 2, 2), dict(strides=2)),
    ((6, 8, 10, 9), (8, 12, 3, 3), dict(strides=2, padding=1, output_padding=1)),
    ((4, 8, 64), (8, 16, 5), dict(strides=3, padding=1, output_padding=1)),
])
@pytest.mark.parametrize("pad_in_tasks", [True, False])
def test_big_batches_go_through_the_passes_in_chunks(data_shape, weight_shape, attrs,
                                                     pad_in_tasks, host_lanes, monkeypatch):
    """An 8 KiB budget (over the weight, under the padded input of two images, and under an
    image's padded input and dense accumulators): chunks of the batch, every block under the
    chunk loop, the workspace one chunk's; but fused tasks that make their own padded copies
    (``PAD_IN_TASKS``) leave nothing to chunk: the whole batch in one task loop that holds
    every block.  The output (bias and ReLU fused) still matches float64."""
    monkeypatch.setattr(x86_interleaved, "PAD_IN_TASKS", pad_in_tasks)
    spec = make_spec(data_shape, weight_shape, **attrs)
    whole = x86_interleaved.workspace_bytes(spec)
    monkeypatch.setattr(x86_interleaved, "BATCH_CHUNK_BYTES", 8 << 10)
    data, weight, out = _run(spec, bias=np.ones(spec.out_channels, "float32"),
                             act=relax.op.nn.relu)
    ref = np.maximum(conv_transpose_reference(data, weight, spec,
                                              bias=np.ones(spec.out_channels)), 0)
    assert relative_error(out, ref) < 1e-5
    sch = tvm.s_tir.Schedule(x86_interleaved.interleaved_compute(spec))
    assert x86_interleaved.batch_chunk(sch, ("pad", "conv")) == 1
    roles = x86_interleaved.per_chunk_roles(
        bool(x86_interleaved.task_patches(sch)[1]),
        x86_interleaved.copies_in_tasks(spec.batch, x86_interleaved._cores()))
    images = x86_interleaved.batch_chunk(sch, roles)
    x86_interleaved.schedule_x86_interleaved(sch, TARGET)
    root = sch.get_child_blocks(sch.get_sblock("root"))
    firsts = [sch.get(sch.get_loops(b)[0]) for b in root]
    if not roles:  # fused, task copies: one parallel task loop holds every block
        assert images == spec.batch and len({lp.loop_var.name for lp in firsts}) == 1
        assert firsts[0].kind == tvm.tirx.ForKind.PARALLEL
        assert x86_interleaved.workspace_bytes(spec) == whole
        return
    assert images < spec.batch
    assert {lp.extent for lp in firsts} == {spec.batch // images}  # a loop over the chunks
    assert x86_interleaved.workspace_bytes(spec) < whole


def test_batches_whose_weight_outgrows_the_budget_stay_whole(monkeypatch):
    spec = make_spec((8, 64, 4, 4), (64, 32, 4, 4), strides=2, padding=1)
    monkeypatch.setattr(x86_interleaved, "BATCH_CHUNK_BYTES", 64 << 10)  # < the 128 KiB weight
    sch = tvm.s_tir.Schedule(x86_interleaved.interleaved_compute(spec))
    assert x86_interleaved.batch_chunk(sch, ("pad", "conv")) == 8
    assert x86_interleaved.batch_chunk(sch, ("pad",)) == 8


def test_workspace_counts_the_dense_phase_accumulators(monkeypatch):
    spec = make_spec((1, 64, 8, 8), (64, 32, 4, 4), strides=2, padding=1)
    monkeypatch.setattr(x86_interleaved, "TASK_ACC_BYTES", 0)  # no patch fits: dense path
    with resolve_target("llvm"):
        extra = x86_interleaved.workspace_bytes(spec) - x86.workspace_bytes(spec)
    # the four phase accumulators hold the whole output (32 channels, 16 x 16, no padding)
    assert extra >= 4 * 32 * 8 * 8 * 4


# The fused path (phases computed per task inside the interleave's parallel loop): stride-2
# k4 p1 convs (DCGAN, pose) of phase widths 4, 6, 8 and 12 with small channel counts; odd
# rows (1-row tiles), 3 channel vectors (1-vector tiles), Cout not a multiple of the vector
# width, a channels-last output, a pose-2048-like case in input chunks, 256 input channels
# (1 KiB apart: the task's copy gets the extra cache line), groups (a task copies its
# group's channels) and 4 channel tiles (at batch 3, two of them a task over one copy; also
# in input chunks).
FUSED = {
    "w4": ((16, 4, 4), (16, 32, 4, 4), {}),
    "w6_odd_rows": ((16, 5, 6), (16, 32, 4, 4), {}),
    "w8_three_vectors": ((24, 8, 8), (24, 48, 4, 4), {}),
    "w12_cout40": ((16, 6, 12), (16, 40, 4, 4), {}),
    "w6_nhwc": ((6, 6, 16), (4, 4, 32, 16), dict(data_layout="NHWC")),
    "w6_input_chunks": ((128, 8, 6), (128, 32, 4, 4), {}),
    "w8_cin256": ((256, 8, 8), (256, 32, 4, 4), {}),
    "w6_groups": ((32, 6, 6), (32, 16, 4, 4), dict(groups=2)),
    "w4_cout128": ((16, 4, 4), (16, 128, 4, 4), {}),
    "w6_cout128_input_chunks": ((128, 8, 6), (128, 128, 4, 4), {}),
}


def _fused_spec(name, batch):
    data, weight, attrs = FUSED[name]
    return make_spec((batch,) + data, weight, strides=2, padding=1, **attrs)


def _workspace(spec, monkeypatch, **knobs):
    """``x86_interleaved.workspace_bytes(spec)`` on the llvm target with module constants
    ``knobs`` set."""
    with monkeypatch.context() as m, resolve_target("llvm"):
        for name, value in knobs.items():
            m.setattr(x86_interleaved, name, value)
        return x86_interleaved.workspace_bytes(spec)


def _dense_workspace(spec, monkeypatch):
    return _workspace(spec, monkeypatch, TASK_ACC_BYTES=0)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("name", list(FUSED))
def test_fused_path_matches_reference_with_bias_and_relu(name, batch, host_lanes,
                                                         monkeypatch):
    spec = _fused_spec(name, batch)
    if name.endswith("input_chunks"):
        monkeypatch.setattr(x86_interleaved, "WEIGHT_SLICE_BYTES", 1)  # chunks of 64
    bias = np.random.default_rng(3).standard_normal(spec.out_channels).astype("float32")
    data, weight, out = _run(spec, bias=bias, act=relax.op.nn.relu)
    ref = np.maximum(conv_transpose_reference(data, weight, spec, bias=bias), 0)
    assert relative_error(out, ref) < 1e-5
    fused = _workspace(spec, monkeypatch)
    with TARGET:
        cores = max(1, x86_interleaved._cores())
    # One task's accumulators and padded input window per core, each window at most an
    # image's: less than one padded copy of the batch (and the dense accumulators) where the
    # batch has more images than there are cores.
    if batch > cores:
        assert fused < _workspace(spec, monkeypatch, PAD_IN_TASKS=False)
        assert fused < _dense_workspace(spec, monkeypatch)


@pytest.mark.parametrize("name", ["w8_three_vectors", "w6_input_chunks"])
def test_fused_path_with_channel_tiles_outside_the_batch(name, host_lanes, monkeypatch):
    """Weights over ``STREAMED_WEIGHT_BYTES`` (0 here): tasks ordered channel tile, image,
    patch, one tile a task, each making its own padded input copy (nothing allocated outside
    the task loop); bias and ReLU fused, batch 3."""
    monkeypatch.setattr(x86_interleaved, "STREAMED_WEIGHT_BYTES", 0)
    if name.endswith("input_chunks"):
        monkeypatch.setattr(x86_interleaved, "WEIGHT_SLICE_BYTES", 1)
    spec = _fused_spec(name, 3)
    bias = np.random.default_rng(4).standard_normal(spec.out_channels).astype("float32")
    data, weight, out = _run(spec, bias=bias, act=relax.op.nn.relu)
    ref = np.maximum(conv_transpose_reference(data, weight, spec, bias=bias), 0)
    assert relative_error(out, ref) < 1e-5
    inside, outside = _allocations(spec)
    assert outside == [] and inside


@pytest.mark.parametrize("tiles,qext,expected", [
    ([[None, 2], [None, 2], [None, 3], None], [8, 6], 3),     # 3 divides 6: as it is
    ([[None, 2], [None, 2], [None, 3], None], [8, 8], 4),     # DCGAN 256->128: 2 x 2 x 4
    ([[None, 2], [None, 2], [None, 3], None], [32, 32], 4),   # U-Net
    ([[None, 2], [None, 2], [None, 3], None], [7, 7], None),  # no divisor as wide: dense
    ([[None, 1], [None, 1], [None, 10], None], [9], 10),      # 1-d: the patch axis itself
])
def test_fused_tiles_cover_whole_rows(tiles, qext, expected):
    fused = x86_interleaved.fused_tiles(tiles, qext)
    assert (fused[2][1] if fused is not None else None) == expected
    if fused is not None and len(qext) > 1:
        assert qext[-1] % fused[2][1] == 0
        assert fused[0][1] * fused[1][1] * fused[2][1] <= x86_interleaved.FUSED_ACCUMULATORS


def test_channel_tiles_share_a_task_copy_where_tasks_and_weights_allow(monkeypatch):
    # pose 256->256 at batch 1: 8 tiles, 16 tasks of one tile; 4 tiles a task leave 4 tasks
    assert x86_interleaved.tiles_per_task(8, 16, cores=2, weight_streams=False) == 4
    assert x86_interleaved.tiles_per_task(8, 128, cores=2, weight_streams=False) == 8
    assert x86_interleaved.tiles_per_task(8, 4, cores=2, weight_streams=False) == 1
    assert x86_interleaved.tiles_per_task(3, 12, cores=2, weight_streams=False) == 3
    assert x86_interleaved.tiles_per_task(8, 128, cores=2, weight_streams=True) == 1
    # the copy is per chunk: nothing to share
    assert x86_interleaved.tiles_per_task(8, 128, cores=2, weight_streams=False,
                                          copies=False) == 1
    assert not x86_interleaved.copies_in_tasks(batch=2, cores=2)  # the batch's copy is smaller
    assert x86_interleaved.copies_in_tasks(batch=3, cores=2)
    monkeypatch.setattr(x86_interleaved, "PAD_IN_TASKS", False)
    assert not x86_interleaved.copies_in_tasks(batch=3, cores=2)


def test_patches_fit_the_budget_and_keep_the_cores_busy():
    tiles = [[None, 2], [None, 2], [None, 3], None]
    # pose 256->256: 6 KiB of accumulators a row (4 phases, 32 channels, 12 columns)
    sizes = x86_interleaved.patch_sizes(tiles, [16, 12], 4)
    assert sizes == [2, 4, 8]  # 16 rows: 96 KiB, over the 64 KiB budget
    assert x86_interleaved.patch_rows(sizes, 16, tasks=8, cores=2) == 8
    assert x86_interleaved.patch_rows(sizes, 16, tasks=1, cores=2) == 4  # 4 tasks
    assert x86_interleaved.patch_rows(sizes, 16, tasks=1, cores=8) == 2  # too few: smallest
    assert x86_interleaved.patch_sizes(tiles, [16, 1024], 4) == []  # a row pair is 128 KiB


def _allocations(spec) -> tuple:
    """Bytes of the buffers the scheduled kernel allocates after TIR's allocation planning
    and compaction: (inside a parallel loop, elsewhere)."""
    sch = tvm.s_tir.Schedule(x86_interleaved.interleaved_compute(spec))
    x86_interleaved.schedule_x86_interleaved(sch, TARGET)
    lower = tvm.transform.Sequential([
        tvm.s_tir.transform.LowerInitBlock(),
        tvm.s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
        tvm.s_tir.transform.ConvertBlocksToOpaque(),
        tvm.s_tir.transform.CompactBufferAllocation()])
    inside, outside, loop = [], [], None  # loop: indent of the open parallel loop
    for line in lower(sch.mod)["main"].script().splitlines():
        indent = len(line) - len(line.lstrip())
        if loop is not None and line.strip() and indent <= loop:
            loop = None
        if "T.parallel(" in line:
            loop = indent
            continue
        if "alloc_buffer(" in line:
            shape, _, strides = line.partition("strides=")
            shape = [int(v) for v in re.findall(r"T\.int64\((\d+)\)", shape)]
            strides = [int(v) for v in re.findall(r"T\.int64\((\d+)\)", strides)]
            elements = shape[0] * strides[0] if strides else int(np.prod(shape))
            (inside if loop is not None else outside).append(4 * elements)
    return inside, outside


@pytest.mark.parametrize("name,batch", [
    ("w6_odd_rows", 1), ("w12_cout40", 1), ("w6_input_chunks", 1), ("w8_cin256", 1),
    ("w6_groups", 1), ("w4_cout128", 3), ("w6_cout128_input_chunks", 3)])
def test_fused_buffers_are_allocated_per_task(name, batch, host_lanes, monkeypatch):
    """Each phase's accumulator and, where the batch has more images than there are cores,
    the task's padded input copy are allocated inside the task loop at the task's size (an
    accumulator: one channel tile, ``rows`` rows, every column; the copy: the input window of
    those rows, every column, the group's channels at the channels-last stride): nothing
    outside it, none whole-output or whole-input sized, and ``workspace_bytes`` counts what
    the IR allocates (less the register tiles).  At batch 1, and without ``PAD_IN_TASKS``,
    the copy is the batch's, allocated before the tasks."""
    if name.endswith("input_chunks"):
        monkeypatch.setattr(x86_interleaved, "WEIGHT_SLICE_BYTES", 1)
    spec = _fused_spec(name, batch)
    sch = tvm.s_tir.Schedule(x86_interleaved.interleaved_compute(spec))
    tiles, sizes = x86_interleaved.task_patches(sch)
    qext, phases = x86_interleaved._phase_extents(sch)
    with TARGET:
        cores = max(1, x86_interleaved._cores())
    tasks = x86_interleaved._tasks(sch, tiles)
    rows = x86_interleaved.patch_rows(sizes, qext[0], tasks, cores)
    per_phase = x86_interleaved.task_acc_bytes(tiles, qext, rows)
    pad = x86_interleaved.task_pad_bytes(spec, qext, rows)
    inside, outside = _allocations(spec)
    copy = 4 * spec.batch * x86.padded_image_elements(spec, x86_interleaved.space_layout(spec)[0])
    copies = batch > cores
    assert outside == ([] if copies else [copy])
    # Each phase's tile cache: the register tile, or in input chunks the task's region.
    chunked = tiles[3] is not None
    tile = tiles[0][1] * tiles[1][1] * tiles[2][1] * x86_interleaved.LANES * 4
    assert sorted(inside) == sorted([per_phase] * phases + [per_phase if chunked else tile]
                                    * phases + ([pad] if copies else []))
    monkeypatch.setattr(x86_interleaved, "PAD_IN_TASKS", False)
    assert _allocations(spec)[1] == [copy]
    monkeypatch.undo()
    if name.endswith("input_chunks"):
        monkeypatch.setattr(x86_interleaved, "WEIGHT_SLICE_BYTES", 1)
    fused = _workspace(spec, monkeypatch)
    chunk_copy = _workspace(spec, monkeypatch, PAD_IN_TASKS=False)
    tasks = tasks * qext[0] // rows
    group = x86_interleaved.tiles_per_task(x86_interleaved._channel_tiles(sch, tiles), tasks,
                                           cores, x86_interleaved._weight_streams(sch), copies)
    assert (group > 1) == (batch > 1)  # the batch-3 cases: channel tiles share a copy
    # (tasks at a time make their copies where ``copies``; else both are the batch's copy)
    assert chunk_copy - fused == (copy - min(tasks // group, cores) * pad if copies else 0)
    dense = int(np.prod(x86_interleaved._acc_shape(spec, *x86_interleaved.space_layout(spec))))
    task = (phases + chunked) * per_phase  # one phase's cache at a time
    assert _dense_workspace(spec, monkeypatch) - chunk_copy == (
        4 * dense * phases - task * min(tasks, cores))


@pytest.mark.parametrize("data_shape,weight_shape,attrs", CONFIGS,
                         ids=[f"cfg{i}" for i in range(len(CONFIGS))])
def test_dense_path_matches_reference(data_shape, weight_shape, attrs, host_lanes,
                                      monkeypatch):
    """The dense accumulators (where no task patch fits :data:`TASK_ACC_BYTES`)."""
    monkeypatch.setattr(x86_interleaved, "TASK_ACC_BYTES", 0)
    spec = make_spec(data_shape, weight_shape, **attrs)
    data, weight, out = _run(spec, bias=np.ones(spec.out_channels, "float32"),
                             act=relax.op.nn.relu)
    ref = np.maximum(conv_transpose_reference(data, weight, spec,
                                              bias=np.ones(spec.out_channels)), 0)
    assert relative_error(out, ref) < 1e-5
