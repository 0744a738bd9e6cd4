"""The CUDA default schedule (schedules/cuda.py).

CPU-side (CI, no GPU):
* every zoo layer builds for CUDA through ``tvm_deconv.build`` with our schedule applied (no
  fallback, no schedule failure) and yields CUDA kernels.  ``tvm.compile`` only *generates*
  CUDA C here: the kernels are compiled by NVRTC when the module is loaded on a GPU machine,
  so building needs neither nvcc nor NVRTC;
* the generated CUDA C compiles with ``nvcc -arch=sm_90`` (skipped when nvcc is missing);
* the schedule's loop structure, run on LLVM with global scratch buffers instead of
  shared/local memory and no thread binding, matches the float64 reference on random specs.

GPU (``-m gpu``, skipped without an NVIDIA GPU): random specs vs the float64 reference,
rel. error < 1e-5 in float32 (our kernels are plain FFMA: no TF32), and whole Relax layers with
bias + ReLU.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import shutil

import numpy as np
import pytest
import tvm
from tvm import relax, s_tir
from tvm.s_tir import meta_schedule as ms

import tvm_deconv
from tvm_deconv import strategy, tuning, zoo
from tvm_deconv.plan import PlanError, make_plan, make_spec, stride_multiple_kernel
from tvm_deconv.compute import decomposed_pack
from tvm_deconv.schedules import cuda as cuda_sched
from tvm_deconv.schedules import cuda_direct, cuda_padded_taps, cuda_tensorcore, cuda_wgmma
from tvm_deconv.targets import resolve_target
from tvm_deconv.testing import (conv_transpose_reference, cuda_sources, has_gpu, nvcc_errors,
                                random_inputs, relative_error, run_pack,
                                transposed_conv_module)

CUDA = resolve_target("cuda")


@pytest.fixture(autouse=True)
def _without_wgmma():
    """These tests are of the kernels for every CUDA GPU (the WMMA tensor-core kernel on
    float16, FFMA on float32); tests/test_cuda_wgmma.py has the Hopper wgmma kernel that takes
    float16 and float32 layers on sm_90 targets by default."""
    with cuda_wgmma.wgmma_kernel(False):
        yield


def one_layer(spec, bias: bool = False) -> tvm.IRModule:
    """A Relax module ``main(x, w[, b])`` with one transposed conv (+ bias + ReLU)."""
    if not bias:
        return transposed_conv_module(spec)
    b = relax.Var("b", relax.TensorType((1, spec.out_channels) + (1,) * spec.ndim,
                                        spec.out_dtype))
    return transposed_conv_module(
        spec, extra_args=[b], epilogue=lambda bb, y: bb.emit(relax.op.nn.relu(relax.op.add(y, b))))


def scheduled_primfunc(spec, knobs=cuda_sched.GPU):
    sch = s_tir.Schedule(cuda_sched.cuda_compute(spec))
    cuda_sched.schedule_cuda(sch, CUDA, knobs)
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


def random_specs(count: int, seed: int, max_size: int = 6):
    """Random valid specs covering k<s, k%s!=0, groups, output_padding, dilation, batch>1,
    1-d/2-d/3-d and channels-last layouts."""
    rng = np.random.default_rng(seed)
    specs = []
    while len(specs) < count:
        nd = int(rng.choice([1, 2, 2, 3]))
        groups = int(rng.choice([1, 1, 2, 3]))
        cin = groups * int(rng.integers(1, 5))
        cout_g = int(rng.integers(1, 6))
        s = [int(rng.integers(1, 5)) for _ in range(nd)]
        k = [int(rng.integers(1, 6)) for _ in range(nd)]
        d = [int(rng.choice([1, 1, 2])) for _ in range(nd)]
        pad = [int(rng.integers(0, kk)) for kk in k] + [int(rng.integers(0, kk)) for kk in k]
        op = [int(rng.integers(0, max(si, di))) for si, di in zip(s, d)]
        size = [int(rng.integers(1, max_size + 1)) for _ in range(nd)]
        batch = int(rng.integers(1, 4))
        channels_last = nd == 2 and rng.random() < 0.25
        sp = "W" if nd == 1 else ("HW" if nd == 2 else "DHW")
        if channels_last:
            data = [batch] + size + [cin]
            weight = k + [cout_g, cin]
            layouts = dict(data_layout="NHWC", kernel_layout="HWOI")
        else:
            data = [batch, cin] + size
            weight = [cin, cout_g] + k
            layouts = dict(data_layout="NC" + sp, kernel_layout="IO" + sp)
        try:
            spec = make_spec(data, weight, strides=s, padding=pad, output_padding=op,
                             dilation=d, groups=groups, **layouts)
        except PlanError:
            continue
        specs.append(spec)
    return specs


# Hand-picked corner cases on top of the random ones.
CORNER_SPECS = [
    make_spec((2, 3, 5, 4), (3, 2, 1, 1), strides=3),                         # k < s: zero phases
    make_spec((1, 4, 6, 5), (4, 3, 3, 3), strides=2, padding=1, output_padding=1),  # k%s != 0
    make_spec((3, 6, 4, 4), (6, 2, 4, 4), strides=2, padding=1, groups=3),    # groups
    make_spec((2, 4, 7), (4, 5, 16), strides=8, padding=4),                   # 1-d, many phases
    make_spec((1, 4, 3, 4, 3), (4, 2, 4, 4, 4), strides=2, padding=1),        # 3-d
    make_spec((2, 5, 6, 3), (3, 3, 4, 3), strides=2, padding=1,               # NHWC / HWOI
              data_layout="NHWC", kernel_layout="HWOI"),
    make_spec((1, 37, 9, 11), (37, 21, 5, 5), strides=3, padding=2, dilation=2),  # odd sizes
]


# ---------------------------------------------------------------------------------------------
# CPU-side: builds and emulated numerics
# ---------------------------------------------------------------------------------------------

# FCN-8s (64 phases) takes minutes to schedule on 2 cores: in the slow set.
ZOO_BUILD = [pytest.param(l, marks=pytest.mark.slow) if l.name.startswith("fcn8s") else l
             for l in zoo.LAYERS]


@pytest.mark.parametrize("layer", ZOO_BUILD, ids=lambda l: l.name)
def test_cuda_build_zoo_layer(layer, caplog):
    spec = layer.spec(1)
    with caplog.at_level(logging.WARNING, logger="tvm_deconv"):
        ex = tvm_deconv.build(one_layer(spec, bias=True), "cuda")
    problems = [r.getMessage() for r in caplog.records if "tvm_deconv" in r.getMessage()]
    assert not problems, problems  # no fallback, no failed schedule
    sources = cuda_sources(ex.mod)
    assert sources and "__global__" in sources[0]
    assert "conv" in sources[0] and "__shared__" in sources[0]


def test_cuda_schedule_is_applied_not_dlight():
    """The decomposed PrimFunc is scheduled by schedules/cuda.py (shared-memory tiles)."""
    func = scheduled_primfunc(zoo.get("dcgan_512_256_k4s2").spec(1))
    script = func.script()
    assert 'scope="shared"' in script and 'scope="local"' in script
    assert "blockIdx.x" in script and "threadIdx.y" in script


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH: cannot check that "
                    "the generated CUDA C compiles (building itself needs no compiler)")
@pytest.mark.parametrize("name", ["dcgan_512_256_k4s2", "hifigan_512_256_k16s8",
                                  "unet3d_64_32_k4s2", "fsrcnn_x3_56_1_k9s3"])
def test_cuda_source_compiles_with_nvcc(name, tmp_path):
    ex = tvm_deconv.build(one_layer(zoo.get(name).spec(2), bias=True), "cuda")
    assert nvcc_errors("\n".join(cuda_sources(ex.mod)), tmp_path) is None


def poisoned_run_error(func, spec, pack, seed, gpu=False) -> float:
    """Relative error of ``func(data, packed_weight, out)`` against float64, the weight
    through ``pack`` (if any).  The output and the pack's unwritten elements start as NaN, so
    an output element nothing writes counts as wrong.  On the CPU (LLVM) or, ``gpu``, the GPU.
    ``func``: a PrimFunc, or the executable ``tvm.compile`` already made of one."""
    ex = func if isinstance(func, tvm.runtime.Executable) else tvm.compile(
        func, CUDA if gpu else "llvm")
    data, weight = random_inputs(spec, seed)
    dev = tvm.cuda(0) if gpu else tvm.cpu()
    packed = weight if pack is None else run_pack(pack, weight, fill=np.nan)
    out = tvm.runtime.tensor(np.full(spec.out_shape, np.nan, spec.out_dtype), dev)
    ex(tvm.runtime.tensor(data, dev), tvm.runtime.tensor(packed, dev), out)
    dev.sync()
    return relative_error(out.numpy(), conv_transpose_reference(data, weight, spec))


def _emulate(spec, seed=0, knobs=cuda_sched.CPU_EMULATION):
    return poisoned_run_error(scheduled_primfunc(spec, knobs), spec, cuda_sched.cuda_pack(spec),
                              seed)


@pytest.mark.parametrize("spec", CORNER_SPECS + random_specs(10, seed=4),
                         ids=lambda s: f"{s.ndim}d_s{s.strides}_k{s.kernel}_g{s.groups}"
                                       f"_{s.data_layout}")
def test_cuda_schedule_structure_cpu_emulation(spec):
    """Same tiles, reindex write-back, K loop and cache copies as on the GPU, run on LLVM."""
    assert _emulate(spec) < 1e-5


BATCHED_SPECS = [
    make_spec((2, 6, 4, 5), (6, 5, 4, 4), strides=2, padding=1),               # DCGAN-like
    # groups (5 output channels per group: with 4 or fewer cuda.direct takes the call)
    make_spec((1, 6, 4, 4), (6, 5, 4, 4), strides=2, padding=1, groups=3),
    make_spec((1, 4, 5, 6), (4, 5, 4, 6), strides=(2, 3), padding=(1, 2),      # s differs per axis
              output_padding=(0, 1)),
    make_spec((2, 4, 7), (4, 5, 16), strides=8, padding=4),                    # 1-d, 8 phases
    make_spec((1, 4, 3, 4, 3), (4, 2, 4, 4, 4), strides=2, padding=1),         # 3-d
    make_spec((1, 3, 3, 5), (4, 4, 5, 5), strides=2, padding=1,                # NHWC / HWOI
              data_layout="NHWC", kernel_layout="HWOI"),
    make_spec((1, 5, 3, 3), (5, 5, 9, 9), strides=3, padding=4, output_padding=2),  # FSRCNN x3
    # (5 channels: 1-4 take cuda.direct); split-K (few output pixels, many input channels):
    make_spec((1, 128, 2, 3), (128, 16, 4, 4), strides=2, padding=1),
    make_spec((2, 128, 3), (128, 16, 16), strides=8, padding=4),                # 1-d
    make_spec((1, 64, 1, 2, 2), (64, 16, 4, 4, 4), strides=2, padding=1),       # 3-d
]
SPLIT_SPECS = BATCHED_SPECS[-3:]


@pytest.mark.parametrize("spec", BATCHED_SPECS, ids=lambda s: f"{s.ndim}d_s{s.strides}_k{s.kernel}")
def test_phase_batched_is_one_kernel_with_fused_epilogue(spec):
    """k % s == 0 and s | out: all phases (and bias + ReLU) run in ONE kernel — with
    split-K two, the GEMM and the sum of its slices, the epilogue inside the sum — and the
    same loop structure on LLVM matches the reference."""
    assert cuda_sched.cuda_compute(spec).attrs["op_pattern"] == 4  # epilogues may fuse
    channels_first = spec.out_layout.index("C") == 1  # one_layer's bias is NC...-shaped
    _, weight = random_inputs(spec, 0)
    # A constant weight: its packing runs at compile time (FoldConstant), no kernel of its own.
    ex = tvm_deconv.build(one_layer(spec, bias=channels_first), "cuda", params={"w": weight})
    kernels = [k for src in cuda_sources(ex.mod) for k in src.split("__global__")[1:]
               if "{" in k]  # definitions, in launch order
    split = cuda_sched.split_k(spec) > 1
    assert len(kernels) == 1 + split, kernels
    if channels_first:
        assert "max(" in kernels[-1]  # the ReLU is inside the (last) conv kernel
    assert _emulate(spec) < 1e-5


@pytest.mark.parametrize("tile", cuda_sched.TILE_CHOICES, ids=lambda t: "x".join(map(str, t)))
@pytest.mark.parametrize("spec", [BATCHED_SPECS[0], CORNER_SPECS[1]], ids=["batched", "ragged"])
def test_every_tuning_space_tile_is_correct_cpu_emulation(spec, tile):
    """The start tiles the CUDA tuning space offers all give the reference's numbers."""
    knobs = dataclasses.replace(cuda_sched.CPU_EMULATION, start_tile=tile)
    assert _emulate(spec, knobs=knobs) < 1e-5


@pytest.mark.parametrize("knob", [{"threads_first": True}, {"bk_cap": 4}, {"bk_cap": 32}],
                         ids=lambda k: "_".join(f"{a}{v}" for a, v in k.items()))
@pytest.mark.parametrize("spec", [BATCHED_SPECS[0], CORNER_SPECS[1]], ids=["batched", "ragged"])
def test_tile_ab_knobs_are_correct_cpu_emulation(spec, knob):
    """The knobs benchmarks/cuda_tile_ab.py times (smaller grids shrink threads first, other
    K steps) give the reference's numbers."""
    assert _emulate(spec, knobs=dataclasses.replace(cuda_sched.CPU_EMULATION, **knob)) < 1e-5


def test_cuda_tuning_space_designs_build():
    """``ours`` on CUDA: distinct designs per start tile, each sampling the unroll step; a
    design with its sampled decision replayed builds to CUDA source."""
    spec = zoo.get("dcgan_512_256_k4s2").spec(64)
    sch = s_tir.Schedule(cuda_sched.cuda_compute(spec))
    designs = cuda_sched.schedule_cuda_space(sch, CUDA)
    assert 1 < len(designs) <= len(cuda_sched.TILE_CHOICES)
    for design in designs:
        decisions = [int(d) for d in design.trace.decisions.values()]
        assert decisions and all(0 <= d < len(cuda_sched.UNROLL_STEPS) for d in decisions)
    replayed = s_tir.Schedule(sch.mod)
    designs[-1].trace.apply_to_schedule(replayed, remove_postproc=False)
    func = replayed.mod["main"].with_attr("tirx.is_scheduled", True)
    assert "__global__" in tvm.compile(func, CUDA).mod.imports[0].inspect_source()


@pytest.mark.parametrize("layer", ["pose_256_256_k4s2", "unet_512_256_k2s2",
                                   "pose_2048_256_k4s2"])
def test_cuda_tuning_space_offers_the_tensor_core_variants(layer, tmp_path):
    """``ours`` for the tensor-core form: one design per (K pipeline, input gather) variant
    whose shared memory launches (U-Net's tile doubles its staging only with the accumulator
    tile's rows lengthened past 48 KiB of dynamic shared memory, the opt-in TVM makes; pose
    2048->256 and 256->256 take the channels-last input copy, which has no gather variants);
    each, its sampled unroll replayed and MetaSchedule's postprocessor applied,
    builds as the tuner builds it to WMMA code that nvcc accepts, cp.async in "async"."""
    from tvm.s_tir import meta_schedule as ms  # pylint: disable=import-outside-toplevel

    spec = zoo.get(layer).spec(64, dtype="float16")
    sch = s_tir.Schedule(cuda_sched.cuda_compute(spec))
    assert cuda_tensorcore.is_tensor_core_func(sch)
    designs = cuda_sched.schedule_cuda_space(sch, CUDA)
    g = cuda_tensorcore.gemm_shape(spec)
    tile = cuda_tensorcore.choose_tile(g)
    doubled = cuda_tensorcore._launches(tile, stages=2)  # pylint: disable=protected-access
    expected = [v for v in cuda_tensorcore.TUNING_VARIANTS
                if doubled or v[0] not in ("double_buffer", "async")]
    if cuda_tensorcore.input_copy(spec) == "channels_last":
        expected = list(dict.fromkeys(pipeline for pipeline, _ in expected))
    assert len(designs) == len(expected)
    assert doubled
    stride = cuda_tensorcore._accumulator_stride(tile, 2)  # pylint: disable=protected-access
    assert (stride > tile.bn + 4) == (layer == "unet_512_256_k2s2"), stride
    assert stride * tile.bm * 4 > 48 * 1024
    postproc = ms.postproc.RewriteParallelVectorizeUnroll()
    async_copies = 0
    for i, design in enumerate(designs):
        replayed = s_tir.Schedule(sch.mod)
        design.trace.apply_to_schedule(replayed, remove_postproc=False)
        postproc._initialize_with_tune_context(  # pylint: disable=protected-access
            ms.TuneContext(mod=replayed.mod, target=CUDA))
        assert postproc.apply(replayed)
        func = replayed.mod["main"].with_attr("tirx.is_scheduled", True)
        with tvm_deconv.kernel_context(CUDA):
            src = tvm.compile(func, CUDA).mod.imports[0].inspect_source()
        assert "mma_sync" in src
        async_copies += "cp.async" in src
        assert nvcc_errors(src, tmp_path / str(i)) is None
    assert async_copies == doubled  # the "async" design, where its staging launches


def test_full_grids_take_128_thread_blocks():
    """Where the start tile's 256-thread blocks fill the chip, blocks of 128 threads with the
    same per-thread tile (twice the blocks); short grids shrink as before."""
    def threads(t):
        return t.ty * math.prod(t.tiles) // t.vw

    full = cuda_sched._choose_tiles(256, [64, 32, 32], 512, num_sms=132,  # U-Net batch 64
                                    halve_full_blocks=True)
    assert (full.vo, full.vw, threads(full)) == (8, 4, 128)
    kept = cuda_sched._choose_tiles(256, [64, 32, 32], 512, num_sms=132)
    assert (kept.vo, kept.vw, threads(kept)) == (8, 4, 256)
    short = cuda_sched._choose_tiles(128, [1, 64, 64], 256, num_sms=132,  # CycleGAN batch 1
                                     halve_full_blocks=True)
    assert threads(short) == 256 and short.vo * short.vw < 32


def test_per_phase_form_follows_output_channels():
    """Ragged layers read a packed weight and padded input, except with few output channels
    (FSRCNN's one), where the plain weight and guarded reads measured faster."""
    few = make_spec((1, 5, 4, 4), (5, 1, 9, 9), strides=2, padding=4, output_padding=1)
    many = make_spec((1, 5, 4, 4), (5, 8, 3, 3), strides=2, padding=1, output_padding=1)
    assert cuda_sched.cuda_pack(few) is None
    assert [int(d) for d in cuda_sched.cuda_compute(few).params[1].shape] == \
        list(few.weight_shape)
    packed = cuda_sched.cuda_pack(many)
    assert packed is not None
    assert [int(d) for d in cuda_sched.cuda_compute(many).params[1].shape] == \
        [int(d) for d in packed.params[-1].shape]


def test_ragged_phases_keep_one_kernel_per_phase():
    spec = make_spec((1, 4, 6, 5), (4, 3, 3, 3), strides=2, padding=1, output_padding=1)
    assert cuda_sched.cuda_compute(spec).attrs["op_pattern"] == cuda_sched.OP_PATTERN_OPAQUE


def test_float16_accumulates_in_float32():
    """fp16 convs: float32 accumulators (one rounding at the store); cuda.decomposed declines
    ragged fp16 the tensor cores decline, saying why (cuda.padded_taps takes it where zero
    taps cost at most 2x)."""
    spec = make_spec((1, 64, 4, 4), (64, 32, 4, 4), strides=2, padding=1, dtype="float16")
    script = cuda_sched.cuda_compute(spec).script()
    assert '"float32"' in script and "T.Cast(\"float16\"" in script.replace("'", '"')
    ragged = make_spec((1, 4, 6, 5), (4, 3, 3, 3), strides=2, padding=1, output_padding=1,
                       dtype="float16")
    assert "float32 only in the phase-batched" in cuda_sched.supports_cuda(ragged, CUDA)


def few_channel_specs(count: int, seed: int, max_size: int = 7, max_out: int = 4):
    """Random 2-d specs with 1..``max_out`` output channels per group: k % s != 0, k < s,
    output_padding, groups, dilation, batch 1-3, channels-last."""
    rng = np.random.default_rng(seed)
    specs = []
    while len(specs) < count:
        groups = int(rng.choice([1, 1, 1, 2]))
        cin = groups * int(rng.integers(1, 7))
        cout_g = int(rng.integers(1, max_out + 1))
        s = [int(rng.integers(1, 4)) for _ in range(2)]
        k = [int(rng.integers(1, 10)) for _ in range(2)]
        d = [int(rng.choice([1, 1, 1, 2])) for _ in range(2)]
        pad = [int(rng.integers(0, kk)) for kk in k] * 2
        op = [int(rng.integers(0, si)) for si in s]  # Relax: output_padding < stride
        size = [int(rng.integers(1, max_size + 1)) for _ in range(2)]
        batch = int(rng.choice([1, 3]))
        if rng.random() < 0.25:
            layouts = dict(data_layout="NHWC", kernel_layout="HWOI")
            data, weight = [batch] + size + [cin], k + [cout_g, cin]
        else:
            layouts = {}
            data, weight = [batch, cin] + size, [cin, cout_g] + k
        try:
            specs.append(make_spec(data, weight, strides=s, padding=pad, output_padding=op,
                                   dilation=d, groups=groups, **layouts))
        except PlanError:
            continue
    return specs


DIRECT_SPECS = [
    make_spec((1, 5, 6, 7), (5, 1, 9, 9), strides=2, padding=4, output_padding=1),  # FSRCNN x2
    make_spec((3, 4, 5, 6), (4, 1, 9, 9), strides=3, padding=4, output_padding=2),  # FSRCNN x3
    make_spec((1, 6, 5, 4), (6, 2, 3, 3), strides=2, padding=1, output_padding=1, groups=2),
    make_spec((1, 3, 5, 4), (3, 2, 1, 2), strides=3),                                 # k < s
    make_spec((1, 6, 5, 3), (3, 3, 2, 3), strides=2, dilation=2, padding=1,          # NHWC
              data_layout="NHWC", kernel_layout="HWOI"),
] + few_channel_specs(10, seed=21, max_out=cuda_direct.DIRECT_MAX_OUT_CHANNELS)
# (None: the chosen tile, which splits channels over kz = 2 / 4 thread groups on the specs
# whose grid is short: see test_direct_kernel_splits_channels_where_the_grid_is_short.)
DIRECT_TILES = [None, cuda_direct.DirectTile(2, 4, 2, 4, 1), cuda_direct.DirectTile(1, 2, 4, 2, 1)]


def _spec_id(s):
    return (f"n{s.batch}_c{s.in_channels}_o{s.out_channels}_s{s.strides}_k{s.kernel}"
            f"_g{s.groups}_{s.data_layout}")


@pytest.mark.parametrize("tile", DIRECT_TILES, ids=lambda t: "chosen" if t is None else
                         f"{t.vy}x{t.vx}x{t.ty}x{t.tx}")
@pytest.mark.parametrize("spec", DIRECT_SPECS, ids=_spec_id)
def test_direct_kernel_cpu_emulation(spec, tile):
    """The direct kernel's loop nest (serial loops, global scratch) matches the reference;
    every output element is written (NaN-poisoned output)."""
    tile = tile or cuda_direct.choose_tile(spec)
    func = cuda_direct.direct_conv_transpose(spec, tile, bind=False)
    assert poisoned_run_error(func, spec, decomposed_pack(spec), seed=3) < 1e-5


def test_direct_kernel_splits_channels_where_the_grid_is_short():
    """At batch 1 FSRCNN's grid leaves the SMs few threads: the chosen tile splits each K step's
    channels over thread groups (kz > 1, partial sums in shared memory); at batch 64 it does
    not; the direct-kernel tests' chosen tiles include both group counts.  The split kernel
    matches the reference (CPU emulation, 8 channels, 2 groups)."""
    for name in ("fsrcnn_x2_56_1_k9s2", "fsrcnn_x3_56_1_k9s3"):
        tile = cuda_direct.choose_tile(zoo.get(name).spec(1))
        assert tile.kz > 1 and tile.ck % tile.kz == 0, tile
        assert cuda_direct.choose_tile(zoo.get(name).spec(64)).kz == 1
    # DCGAN 64->3's 32x32 phase grid: blocks of 2x4 positions fill the chip, 8 groups each.
    tile = cuda_direct.choose_tile(zoo.get("dcgan_64_3_k4s2").spec(1))
    assert (tile.ty * tile.tx, tile.kz) == (cuda_direct.MIN_BLOCK_POSITIONS, 8), tile
    chosen = {cuda_direct.choose_tile(s).kz
              for s in DIRECT_SPECS + few_channel_specs(12, seed=5, max_size=20)}
    assert {2, 4} <= chosen, chosen
    spec = make_spec((1, 8, 5, 6), (8, 1, 9, 9), strides=3, padding=4, output_padding=2)
    tile = cuda_direct.with_channel_step(spec, 1, 1, 2, 4, kz=2)
    assert tile.kz == 2
    func = cuda_direct.direct_conv_transpose(spec, tile, bind=False)
    assert poisoned_run_error(func, spec, decomposed_pack(spec), seed=3) < 1e-5


# More than CHANNEL_STEP input channels on a short grid: the space's deep K steps and
# prefetching tiles (k9's 25/20/20/16-tap phases with aligned weights too; k4's 4-tap phases
# are aligned as they are).
DEEP_STEP_SPECS = [
    make_spec((1, 24, 6, 7), (24, 1, 9, 9), strides=2, padding=4, output_padding=1),
    make_spec((2, 20, 5, 4), (20, 3, 4, 4), strides=2, padding=1),
]
DIRECT_SPACE_SPECS = DIRECT_SPECS + DEEP_STEP_SPECS


@pytest.mark.parametrize("spec", DIRECT_SPACE_SPECS, ids=_spec_id)
def test_every_direct_space_tile_is_correct_cpu_emulation(spec):
    """Every tile of the direct kernel's tuning space matches the reference (CPU emulation,
    NaN-poisoned output)."""
    pack = decomposed_pack(spec)
    tiles = cuda_direct.candidate_tiles(spec)
    if spec in DEEP_STEP_SPECS:
        assert max(t.ck for t in tiles) > cuda_direct.CHANNEL_STEP, tiles
        assert any(t.prefetch for t in tiles), tiles
        assert (any(t.vector_weights and t.prefetch for t in tiles)
                == cuda_direct._aligned_differs(spec)), tiles
    for tile in tiles:
        func = cuda_direct.direct_conv_transpose(spec, tile, bind=False)
        assert poisoned_run_error(func, spec, pack, seed=3) < 1e-5, tile


def test_direct_tuning_space_tiles():
    """The space starts at the chosen tile and keeps each tile once, within the budgets; around
    the rule's 2 x 2 positions a thread it offers 1 to 8 (FSRCNN at batch 1), deeper K steps
    and prefetching there, and aligned weights in every tile where the phases' taps are not
    aligned (as in the rule's); tile codes and labels (A/B scripts) round-trip, and a field
    without a code or a malformed label is an error."""
    for name in ("fsrcnn_x2_56_1_k9s2", "fsrcnn_x3_56_1_k9s3", "dcgan_64_3_k4s2"):
        for batch in (1, 64):
            spec = zoo.get(name).spec(batch)
            tiles = cuda_direct.candidate_tiles(spec)
            assert tiles[0] == cuda_direct.choose_tile(spec) and len(set(tiles)) == len(tiles)
            assert len(tiles) > 1
            for tile in tiles:
                assert cuda_direct.decode_tile(cuda_direct.encode_tile(tile)) == tile
                label = cuda_direct.tile_label(tile)
                assert cuda_direct.tile_of_label(spec, label) == tile, label
                assert tile.threads <= cuda_direct.MAX_THREADS_PER_BLOCK
                assert cuda_direct._shared_bytes(spec, tile) <= cuda_direct.SHARED_BYTES
                assert cuda_direct._accumulators(spec, tile) <= cuda_direct.MAX_ACCUMULATORS
    fsrcnn = zoo.get("fsrcnn_x2_56_1_k9s2").spec(1)
    chosen = cuda_direct.choose_tile(fsrcnn)
    assert (chosen.vy, chosen.vx) == (2, 2)
    tiles = cuda_direct.candidate_tiles(fsrcnn)
    assert {t.vy * t.vx for t in tiles} == {1, 2, 4, 8}
    assert chosen.ck <= cuda_direct.CHANNEL_STEP < max(t.ck for t in tiles)
    assert not chosen.prefetch and any(t.prefetch for t in tiles)
    # FSRCNN's 25/20/20/16-tap phases: 16-byte aligned (84 taps) in every tile
    assert all(t.vector_weights for t in tiles)
    assert cuda_direct._tap_layout(fsrcnn, True)[1] == 84
    dcgan = zoo.get("dcgan_64_3_k4s2").spec(64)  # (4 taps a phase: already aligned)
    assert not any(t.vector_weights for t in cuda_direct.candidate_tiles(dcgan))
    assert cuda_direct.encode_tile(cuda_direct.DirectTile(1, 2, 8, 16, 8)) == 134080
    widest = cuda_direct.DirectTile(2, 4, 128, 128, 32, 8, True, True)
    assert cuda_direct.decode_tile(cuda_direct.encode_tile(widest)) == widest
    assert cuda_direct.encode_tile(widest) < 2 ** 31
    with pytest.raises(ValueError, match="no tile code"):
        cuda_direct.encode_tile(cuda_direct.DirectTile(1, 1, 4, 12, 8))
    for corrupt in (110008081, 1234567890, 12345678901):
        with pytest.raises(ValueError, match="tune again"):
            cuda_direct.decode_tile(corrupt)
    for label in ("2x2x0x4", "2x2x4x4x8q", "2x2x4x4x8vp"):
        with pytest.raises(ValueError, match="e.g. 2x2x4x4x8"):
            cuda_direct.tile_of_label(fsrcnn, label)


def test_direct_staging_rounds_cover_each_element_once():
    """A K step's staging rounds load every element of each operand once, at most
    STAGE_REGISTERS a round; with prefetch, one round of everything (the next step's
    registers)."""
    for loads in ([9, 6], [40, 30], [32, 1], [1, 1], [100, 0]):
        rounds = cuda_direct._stage_rounds(loads, prefetch=False)
        assert all(sum(n for _, _, n in parts) <= cuda_direct.STAGE_REGISTERS
                   for parts in rounds), rounds
        for operand, count in enumerate(loads):
            covered = [first + i for parts in rounds for k, first, n in parts if k == operand
                       for i in range(n)]
            assert covered == list(range(count)), (loads, rounds)
        assert cuda_direct._stage_rounds(loads, prefetch=True) == [
            [(k, 0, n) for k, n in enumerate(loads)]]
    assert len(cuda_direct._stage_rounds([40, 30], prefetch=False)) == 3


@pytest.mark.parametrize("name", ["fsrcnn_x2_56_1_k9s2", "fsrcnn_x3_56_1_k9s3"])
def test_direct_kernel_aligned_weights_keep_int32_indices(name):
    """FSRCNN's taps staged 16-byte aligned (a shift per phase start) still let TVM narrow the
    kernel's indices to int32: its CUDA source casts nothing to int64_t (a select there kept
    the whole kernel in 64-bit index arithmetic)."""
    spec = zoo.get(name).spec(1)
    tile = cuda_direct.choose_tile(spec)
    assert tile.vector_weights
    func = cuda_direct.direct_conv_transpose(spec, tile)
    source = tvm.compile(func, CUDA).mod.imports[0].inspect_source()
    assert "__global__" in source and "(int64_t)" not in source


def _direct_space_schedule(task, tile):
    """The direct space's design with its sample decided for ``tile``."""
    sch = s_tir.Schedule(task.mod)
    cuda_direct.schedule_direct_space(sch, CUDA)
    spec = task.spec
    index = cuda_direct.candidate_tiles(spec, cuda_sched._num_sms(CUDA)).index(tile)
    trace = sch.trace.with_decision(sch.trace.insts[0], index, remove_postproc=True)
    chosen = s_tir.Schedule(task.mod)
    trace.apply_to_schedule(chosen, remove_postproc=True)
    return chosen


def _block_sizes(sources) -> list[int]:
    return [int(n) for src in sources for n in re.findall(r"__launch_bounds__\((\d+)\)", src)]


def test_direct_tuning_record_builds_its_tile(tmp_path, caplog):
    """A record of the direct kernel's space builds the tile its trace chose, in the tuner's
    candidate build and in tvm_deconv.build (which picks it over a slower default record);
    the workload itself stays the chosen tile's kernel."""
    spec = zoo.get("dcgan_64_3_k4s2").spec(1)
    default, ours = tuning.make_tasks([spec], CUDA, spaces=["default", "ours"])
    assert ours.implementation == "cuda.direct"
    chosen = cuda_direct.choose_tile(spec)
    tile = next(t for t in cuda_direct.candidate_tiles(spec) if t.threads != chosen.threads)
    sch = _direct_space_schedule(ours, tile)
    assert set(_block_sizes([tuning.build_candidate(ours.mod, CUDA).imports[0]
                             .inspect_source()])) == {chosen.threads}
    assert set(_block_sizes([tuning.build_candidate(sch.mod, CUDA).imports[0]
                             .inspect_source()])) == {tile.threads}

    database = tuning.open_database(tmp_path)
    for task, trace, secs in ((default, s_tir.Schedule(default.mod).trace, 1e-3),
                              (ours, sch.trace, 1e-4)):
        database.commit_tuning_record(ms.database.TuningRecord(
            trace, database.commit_workload(task.mod), [secs], CUDA,
            ms.arg_info.ArgInfo.from_prim_func(task.func)))
    with caplog.at_level(logging.INFO, logger="tvm_deconv"):
        ex = tvm_deconv.build(one_layer(spec), CUDA, tuning_logs=str(tmp_path))
    assert any("uses its tuned cuda.direct schedule (ours space" in r.getMessage()
               for r in caplog.records)
    assert tile.threads in _block_sizes(cuda_sources(ex.mod))
    assert chosen.threads not in _block_sizes(cuda_sources(ex.mod))


def test_direct_kernel_takes_few_output_channels_only():
    """FSRCNN's 56->1 and DCGAN's 64->3 layers (fp32 and fp16, batch 1 and 64) take
    cuda.direct; every other zoo layer keeps its implicit-GEMM path."""
    for layer in zoo.LAYERS:
        for batch in (1, 64):
            for dtype in ("float32", "float16"):
                spec = layer.spec(batch, dtype=dtype)
                chosen = strategy.select(strategy.CONV_TRANSPOSE, spec, CUDA).implementation
                name = chosen.name if chosen is not None else None  # None: TVM's default
                direct = layer.name.startswith("fsrcnn") or layer.name == "dcgan_64_3_k4s2"
                assert (name == "cuda.direct") == direct, (layer.name, batch, dtype, name)
    many = make_spec((1, 8, 4, 4), (8, cuda_direct.DIRECT_MAX_OUT_CHANNELS + 1, 3, 3), strides=2)
    assert "output channels per group" in cuda_direct.supports_cuda_direct(many, CUDA)
    three_d = make_spec((1, 4, 3, 3, 3), (4, 1, 3, 3, 3), strides=2)
    assert "2-d only" in cuda_direct.supports_cuda_direct(three_d, CUDA)


def test_direct_kernel_builds_for_ragged_float16():
    """FSRCNN x2 (ragged phases) in float16 builds through cuda.direct (float32
    accumulators), where the implicit GEMM falls back to TVM's default."""
    spec = zoo.get("fsrcnn_x2_56_1_k9s2").spec(2, dtype="float16")
    func = cuda_direct.direct_conv_transpose(spec)
    script = func.script()
    assert 'T.alloc_local' in script and '"float32"' in script.replace("'", '"')
    ex = tvm_deconv.build(one_layer(spec), "cuda")
    kernel = next(k for src in cuda_sources(ex.mod) for k in src.split("__global__")[1:]
                  if "__shared__" in k)
    assert "half" in kernel and "float" in kernel


# ---------------------------------------------------------------------------------------------
# GPU
# ---------------------------------------------------------------------------------------------

needs_gpu = pytest.mark.skipif(not has_gpu(), reason="no NVIDIA GPU (tvm.cuda(0) missing)")


def _run_primfunc_gpu(spec, seed):
    return poisoned_run_error(scheduled_primfunc(spec), spec, cuda_sched.cuda_pack(spec), seed,
                              gpu=True)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("spec", CORNER_SPECS + random_specs(24, seed=11, max_size=9),
                         ids=lambda s: f"{s.ndim}d_s{s.strides}_k{s.kernel}_g{s.groups}"
                                       f"_{s.data_layout}")
def test_gpu_random_specs(spec):
    assert _run_primfunc_gpu(spec, seed=1) < 1e-5


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("layer", zoo.LAYERS, ids=lambda l: l.name)
@pytest.mark.parametrize("batch", [1, 3])
def test_gpu_zoo_layer_with_bias_relu(layer, batch):
    _check_gpu_layer_with_bias_relu(layer.spec(batch), seed=batch)


def _check_gpu_layer_with_bias_relu(spec, seed):
    ex = tvm_deconv.build(one_layer(spec, bias=True), "cuda")
    dev = tvm.cuda(0)
    vm = relax.VirtualMachine(ex, dev)
    data, weight = random_inputs(spec, seed=seed)
    bias = np.random.default_rng(7).standard_normal(
        (1, spec.out_channels) + (1,) * spec.ndim).astype("float32")
    out = vm["main"](*(tvm.runtime.tensor(a, dev) for a in (data, weight, bias))).numpy()
    ref = np.maximum(conv_transpose_reference(data, weight, spec, bias=bias.reshape(-1)), 0)
    assert relative_error(out, ref) < 1e-5


# 1-pixel inputs (gpu.single_pixel): kernel >, = and < stride, padding, output_padding, 1-3 d.
SINGLE_PIXEL_SPECS = [
    make_spec((1, 8, 1, 1), (8, 16, 4, 4), strides=1),
    make_spec((5, 7, 1, 1), (7, 12, 4, 4), strides=2, padding=1),
    make_spec((2, 6, 1, 1), (6, 5, 3, 5), strides=(2, 3), padding=(1, 2), output_padding=(1, 0)),
    make_spec((3, 4, 1, 1), (4, 32, 2, 2), strides=2),
    make_spec((2, 16, 1), (16, 8, 7), strides=3, padding=2),
    make_spec((2, 3, 1, 1, 1), (3, 5, 2, 3, 2), strides=1),
]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_single_pixel_inputs_are_dlight_gemms_with_fused_epilogues(dtype):
    """A 1-pixel input takes ``gpu.single_pixel`` (dlight: Matmul at batch > 1, Reduction at
    batch 1), bias + ReLU fused into its one kernel; float16 accumulates in float32."""
    for batch in (1, 64):
        spec = zoo.get("dcgan_100_512_k4s1").spec(batch, dtype=dtype)
        assert strategy.select(strategy.CONV_TRANSPOSE, spec, CUDA).implementation.name == (
            "gpu.single_pixel")
        (source,) = cuda_sources(tvm_deconv.build(one_layer(spec, bias=True), "cuda").mod)
        kernels = set(re.findall(r"__global__ void __launch_bounds__\(\d+\) (\w+)", source))
        assert len(kernels) == 1 and "max(" in source, kernels
        if dtype == "float16":
            assert re.search(r"float[24]? \w+\[", source), "no float32 accumulator"
    for spec in SINGLE_PIXEL_SPECS:
        assert strategy.select(strategy.CONV_TRANSPOSE, spec, CUDA).implementation.name == (
            "gpu.single_pixel")
    # Nothing of ours to tune there: only MetaSchedule's stock space is a task.
    assert [t.space for t in tuning.make_tasks(SINGLE_PIXEL_SPECS[:1], CUDA)] == ["stock"]


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("spec", SINGLE_PIXEL_SPECS,
                         ids=lambda s: f"{s.ndim}d_n{s.batch}_k{s.kernel}")
def test_gpu_single_pixel_with_bias_relu(spec):
    _check_gpu_layer_with_bias_relu(spec, seed=spec.batch)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("batch", [1, 64])
def test_gpu_single_pixel_float16(batch):
    """DCGAN's projection in float16 (gpu.single_pixel, float32 accumulators)."""
    assert _float16_error(zoo.get("dcgan_100_512_k4s1").spec(batch, dtype="float16")) < 2e-3


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("spec", BATCHED_SPECS, ids=lambda s: f"{s.ndim}d_s{s.strides}_k{s.kernel}")
def test_gpu_phase_batched(spec):
    assert _run_primfunc_gpu(spec, seed=2) < 1e-5


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("layer", [l for l in zoo.LAYERS if make_plan(l.spec(1)).phase_batched],
                         ids=lambda l: l.name)
def test_gpu_float16_zoo_layer(layer):
    """fp16 in and out, float32 accumulation: within 2e-3 of the float64 result of the same
    (fp16-rounded) inputs."""
    assert _float16_error(layer.spec(2, dtype="float16")) < 2e-3


def _float16_error(spec) -> float:
    """Relative error of the built fp16 layer against the float64 result of its inputs."""
    ex = tvm_deconv.build(one_layer(spec), "cuda")
    dev = tvm.cuda(0)
    data, weight = random_inputs(spec, seed=5)
    out = relax.VirtualMachine(ex, dev)["main"](tvm.runtime.tensor(data, dev),
                                                tvm.runtime.tensor(weight, dev)).numpy()
    ref = conv_transpose_reference(data.astype("float64"), weight.astype("float64"), spec)
    return relative_error(out.astype("float64"), ref)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("tile", DIRECT_TILES, ids=lambda t: "chosen" if t is None else
                         f"{t.vy}x{t.vx}x{t.ty}x{t.tx}")
@pytest.mark.parametrize("spec", DIRECT_SPECS + few_channel_specs(12, seed=5, max_size=20),
                         ids=_spec_id)
def test_gpu_direct_kernel(spec, tile):
    assert poisoned_run_error(cuda_direct.direct_conv_transpose(spec, tile), spec,
                              decomposed_pack(spec), seed=4, gpu=True) < 1e-5


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("spec", DIRECT_SPACE_SPECS, ids=_spec_id)
def test_gpu_every_direct_space_tile(spec):
    """Every tile of the direct kernel's tuning space on the GPU (NaN-poisoned output)."""
    for tile in cuda_direct.candidate_tiles(spec):
        assert poisoned_run_error(cuda_direct.direct_conv_transpose(spec, tile), spec,
                                  decomposed_pack(spec), seed=4, gpu=True) < 1e-5, tile


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("spec", few_channel_specs(12, seed=9, max_size=12), ids=_spec_id)
def test_gpu_few_channels_with_bias_relu(spec):
    """1-4 output channels through tvm_deconv.build (cuda.direct up to its threshold, the
    implicit GEMM above it), bias + ReLU, float64 reference."""
    channels_first = spec.out_layout.index("C") == 1
    ex = tvm_deconv.build(one_layer(spec, bias=channels_first), "cuda")
    dev = tvm.cuda(0)
    data, weight = random_inputs(spec, seed=6)
    args = [data, weight]
    bias = None
    if channels_first:
        bias = np.random.default_rng(8).standard_normal(
            (1, spec.out_channels) + (1,) * spec.ndim).astype("float32")
        args.append(bias)
    out = relax.VirtualMachine(ex, dev)["main"](*(tvm.runtime.tensor(a, dev) for a in args))
    ref = conv_transpose_reference(data, weight, spec,
                                   bias=None if bias is None else bias.reshape(-1))
    if channels_first:
        ref = np.maximum(ref, 0)
    assert relative_error(out.numpy(), ref) < 1e-5


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("name", ["fsrcnn_x2_56_1_k9s2", "fsrcnn_x3_56_1_k9s3"])
def test_gpu_direct_float16(name):
    """FSRCNN in float16 through cuda.direct (x2 has ragged phases): float32 accumulation,
    within 2e-3 of the float64 result of the same fp16 inputs."""
    assert _float16_error(zoo.get(name).spec(2, dtype="float16")) < 2e-3


# ---------------------------------------------------------------------------------------------
# Tensor cores (float16, schedules/cuda_tensorcore.py)
# ---------------------------------------------------------------------------------------------


def tensor_core_specs(count: int, seed: int, max_size: int = 6, ragged: bool = False):
    """Random float16 specs the tensor-core path takes: 1-d/2-d/3-d, k = s*t, strides 1-4 per
    axis, padding and output_padding, batch 1-4, channel counts 16-48, NC.. and NHWC.
    ``ragged``: k = s*t + e (0 <= e < s, k % s != 0 on some axis: a GEMM per phase), batch
    16 (every phase's pixels a multiple of 16, whatever its extent)."""
    rng = np.random.default_rng(seed)
    specs = []
    while len(specs) < count:
        nd = int(rng.choice([1, 2, 2, 3]))
        s = [int(rng.integers(2 if ragged else 1, 5)) for _ in range(nd)]
        k = [si * int(rng.integers(1, 3)) + (int(rng.integers(0, si)) if ragged else 0)
             for si in s]
        pad = [int(rng.integers(0, kk)) for kk in k]
        op = [int(rng.integers(0, si)) for si in s]
        size = [int(rng.integers(1, max_size + 1)) for _ in range(nd)]
        cin, cout = (16 * int(rng.integers(1, 4)) for _ in range(2))
        batch = 16 if ragged else int(rng.choice([1, 2, 4]))
        if nd == 2 and rng.random() < 0.25:
            data, weight = [batch] + size + [cin], k + [cout, cin]
            layouts = dict(data_layout="NHWC", kernel_layout="HWOI")
        else:
            sp = "W" if nd == 1 else ("HW" if nd == 2 else "DHW")
            data, weight = [batch, cin] + size, [cin, cout] + k
            layouts = dict(data_layout="NC" + sp, kernel_layout="IO" + sp)
        try:
            spec = make_spec(data, weight, strides=s, padding=pad + pad, output_padding=op,
                             dtype="float16", **layouts)
        except PlanError:
            continue
        if (cuda_tensorcore.tensor_core_reason(spec, CUDA) is None
                and make_plan(spec).phase_batched != ragged):
            specs.append(spec)
    return specs


TC_SPECS = [
    make_spec((2, 32, 4, 4), (32, 16, 4, 4), strides=2, padding=1, dtype="float16"),  # DCGAN
    make_spec((1, 16, 4, 8), (16, 32, 2, 2), strides=2, dtype="float16"),             # U-Net
    make_spec((2, 32, 8), (32, 16, 16), strides=8, padding=4, dtype="float16"),       # HiFi-GAN
    make_spec((1, 16, 2, 2, 4), (16, 16, 4, 4, 4), strides=2, padding=1, dtype="float16"),  # 3-d
    make_spec((4, 2, 2, 16), (4, 4, 16, 16), strides=(2, 2), padding=1, dtype="float16",
              data_layout="NHWC", kernel_layout="HWOI"),                              # NHWC
    make_spec((1, 16, 4, 4), (16, 16, 4, 4), strides=2, padding=1, dtype="float16",
              out_dtype="float32"),                                                   # fp16->fp32
    make_spec((2, 32, 4, 4), (32, 16, 3, 3), strides=2, padding=1, output_padding=1,
              dtype="float16"),                                     # CycleGAN: a GEMM per phase
    make_spec((2, 4, 4, 16), (3, 3, 16, 16), strides=2, padding=1, output_padding=1,
              dtype="float16", data_layout="NHWC", kernel_layout="HWOI"),    # ragged NHWC
] + tensor_core_specs(6, seed=31) + tensor_core_specs(3, seed=37, ragged=True)


def _tc_id(s):
    return ("" if make_plan(s).phase_batched else "ragged_") + \
        f"{s.ndim}d_n{s.batch}_c{s.in_channels}_o{s.out_channels}_s{s.strides}_k{s.kernel}" \
        f"_{s.data_layout}_{s.out_dtype}"


@pytest.mark.parametrize("input_copy", ["none", "channels_last"])
@pytest.mark.parametrize("spec", TC_SPECS, ids=_tc_id)
def test_tensor_core_compute_cpu(spec, input_copy, monkeypatch):
    """The tensor-core compute (per-phase GEMM over gathered input and packed weight; with
    INPUT_COPY "channels_last", gathered from a zero-padded channels-last copy), run
    unscheduled on LLVM, matches the float64 reference of the same fp16 inputs; every output
    element is written (NaN-poisoned output)."""
    monkeypatch.setattr(cuda_tensorcore, "INPUT_COPY", input_copy)
    assert cuda_tensorcore.input_copy(spec) == input_copy  # TC_SPECS' channels: 8s
    assert cuda_tensorcore.tensor_core_reason(spec, CUDA) is None
    func = cuda_sched.cuda_compute(spec)
    assert cuda_tensorcore.is_tensor_core_func(s_tir.Schedule(func))
    assert poisoned_run_error(func, spec, decomposed_pack(spec), seed=3) < 2e-3


TC_ZOO = [l.name for l in zoo.LAYERS if make_plan(l.spec(1)).phase_batched
          and not l.name.startswith(("fsrcnn", "fcn8s", "dcgan_64_3"))]


def test_ragged_float16_runs_a_tensor_core_gemm_per_phase(tmp_path):
    """CycleGAN 256->128 (k3 s2) in float16: a tensor-core GEMM and kernel per phase with
    exactly its taps (K = 1, 2, 2, 4 x Cin: the multiply-adds of the plan, no zero taps), the
    PrimFunc opaque (several stores write the output); its CUDA C compiles.  The build picks
    it where cuda.padded_taps declines."""
    spec = zoo.get("cyclegan_256_128_k3s2").spec(64, dtype="float16")
    assert cuda_tensorcore.tensor_core_reason(spec, CUDA) is None
    assert cuda_sched.supports_cuda(spec, CUDA) is None
    gemms = cuda_tensorcore.phase_gemms(spec)
    assert sorted(g.shape.reduce // 256 for g in gemms) == [1, 2, 2, 4]
    assert sum(g.shape.pixels * g.shape.reduce * g.shape.channels
               for g in gemms) == make_plan(spec).macs()
    func = cuda_sched.cuda_compute(spec)
    assert func.attrs["op_pattern"] == cuda_sched.OP_PATTERN_OPAQUE
    sch = s_tir.Schedule(func)
    cuda_sched.schedule_cuda(sch, CUDA)
    with tvm_deconv.kernel_context(CUDA):
        ex = tvm.compile(sch.mod["main"].with_attr("tirx.is_scheduled", True), CUDA)
    source = ex.mod.imports[0].inspect_source()
    kernels = re.findall(r"__global__ void __launch_bounds__\(\d+\) (\w+)\(", source)
    assert len(set(kernels)) == len(gemms) and source.count("mma_sync") >= len(gemms)
    if shutil.which("nvcc"):
        assert nvcc_errors(source, tmp_path) is None
    # cuda.padded_taps goes first for float16 (faster on CycleGAN); the exact GEMMs take what
    # it declines, here a k5 s4 layer whose zero taps would cost 2.56x the MACs.
    wide = make_spec((16, 16, 4, 4), (16, 16, 5, 5), strides=4, padding=1, output_padding=1,
                     dtype="float16")
    assert "2.56x" in cuda_padded_taps.supports_cuda_padded_taps(wide, CUDA)
    assert strategy.select(strategy.CONV_TRANSPOSE, wide, CUDA).implementation.name == \
        "cuda.decomposed"
    assert cuda_tensorcore.is_tensor_core_func(s_tir.Schedule(cuda_sched.cuda_compute(wide)))


def test_tensor_core_path_chosen_for_zoo_float16():
    """Every phase-batched fp16 zoo layer with channel counts of 16s fits the tensor cores;
    DCGAN 64->3 and FCN-8s 21->21 do not, saying why; fp32 never (batch 1 and 64 alike)."""
    for layer in zoo.LAYERS:
        if not make_plan(layer.spec(1)).phase_batched or layer.name.startswith("fsrcnn"):
            continue
        for batch in (1, 64):
            spec = layer.spec(batch, dtype="float16")
            why = cuda_tensorcore.tensor_core_reason(spec, CUDA)
            assert (why is None) == (layer.name in TC_ZOO), (layer.name, batch, why)
            assert cuda_tensorcore.tensor_core_reason(layer.spec(batch), CUDA) is not None
            assert cuda_tensorcore.uses_tensor_cores(spec, CUDA) == (layer.name in TC_ZOO)
    assert "output channels = 3" in cuda_tensorcore.tensor_core_reason(
        zoo.get("dcgan_64_3_k4s2").spec(64, dtype="float16"), CUDA)
    assert "21" in cuda_tensorcore.tensor_core_reason(
        zoo.get("fcn8s_21_21_k16s8").spec(64, dtype="float16"), CUDA)
    grouped = make_spec((1, 32, 4, 4), (32, 16, 4, 4), strides=2, padding=1, groups=2,
                        dtype="float16")
    assert "groups" in cuda_tensorcore.tensor_core_reason(grouped, CUDA)
    old = resolve_target({"kind": "cuda", "arch": "sm_61"})
    assert "sm_70" in cuda_tensorcore.tensor_core_reason(TC_SPECS[0], old)


def test_tensor_core_tile_rule():
    """128-channel tiles where the channels allow (64 pixels where K is short), shrunk
    channels first while the grid is smaller than the chip; every tile divides its GEMM and
    launches (shared memory within 48 KiB, or a dynamic part above it)."""
    tile = cuda_tensorcore.choose_tile
    gemm = cuda_tensorcore.GemmShape
    assert (tile(gemm(4, 3072, 8192, 256)).bm, tile(gemm(4, 3072, 8192, 256)).bn) == (128, 128)
    assert (tile(gemm(4, 65536, 512, 256)).bm, tile(gemm(4, 65536, 512, 256)).bn) == (64, 128)
    assert (tile(gemm(4, 4096, 1024, 128)).bm, tile(gemm(4, 4096, 1024, 128)).bn) == (128, 64)
    rng = np.random.default_rng(0)
    for _ in range(300):
        g = gemm(int(rng.choice([1, 4, 8, 27])), 16 * int(rng.integers(1, 4097)),
                 16 * int(rng.integers(1, 513)), 16 * int(rng.integers(1, 65)))
        t = tile(g)
        assert t.divides(g), (g, t)
        assert cuda_tensorcore._launches(t), (g, t)


def _grid_extents(spec) -> dict:
    """{grid dimension: extent} of the scheduled phase-batched kernel."""
    sch = s_tir.Schedule(cuda_sched.cuda_compute(spec))
    cuda_sched.schedule_cuda(sch, CUDA)
    found = re.findall(r'thread_binding\(T\.int64\((\d+)\), thread="(blockIdx\.[xyz])"',
                       sch.mod.script())
    return {axis: int(extent) for extent, axis in found}


@pytest.mark.parametrize("name,batch,dtype,fastest", [
    ("fcn8s_21_21_k16s8", 64, "float32", True),     # 270 MB of output, 0.5 MB of weights
    ("fcn8s_21_21_k16s8", 64, "float16", True),
    ("unet_512_256_k2s2", 64, "float16", True),     # tensor cores
    ("pose_2048_256_k4s2", 1, "float32", False),    # 34 MB of weights, 0.2 MB of output
    ("pose_2048_256_k4s2", 64, "float16", False),
])
def test_phase_grid_order_follows_output_and_weight_bytes(name, batch, dtype, fastest):
    spec = zoo.get(name).spec(batch, dtype=dtype)
    phase_extents = set(spec.strides) | {math.prod(spec.strides)}  # per axis, or flattened
    grid = _grid_extents(spec)
    assert (grid["blockIdx.x"] in phase_extents) == fastest, grid


# (DCGAN's 1-pixel projection takes gpu.single_pixel, a dlight GEMM, in float16 too.)
@pytest.mark.parametrize("name", [n for n in TC_ZOO if zoo.get(n).in_size != (1, 1)])
def test_tensor_core_zoo_layer_builds(name, caplog):
    """fp16 zoo layers build through tvm_deconv.build into ONE kernel issuing wmma::mma_sync,
    bias + ReLU fused into it (batch 64: the tiles the benchmark runs), after the
    channels-last input copy's kernel where the layer takes it."""
    spec = zoo.get(name).spec(64, dtype="float16")
    _, weight = random_inputs(spec, 0)
    with caplog.at_level(logging.INFO, logger="tvm_deconv"):  # constant weight: packed at build
        ex = tvm_deconv.build(one_layer(spec, bias=True), "cuda", params={"w": weight})
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert "not tensor cores" not in caplog.text
    kernels = [k for src in cuda_sources(ex.mod) for k in src.split("__global__")[1:]
               if "{" in k]
    copied = cuda_tensorcore.input_copy(spec) == "channels_last"
    assert len(kernels) == 1 + copied
    assert "mma_sync" in kernels[-1] and "max(" in kernels[-1]


def test_tensor_core_fallback_logs_why(caplog):
    """fp16 layers the tensor cores do not take (and any, with them switched off) build the
    FFMA kernel, with one INFO line giving the reason."""
    spec = zoo.get("dcgan_64_3_k4s2").spec(2, dtype="float16")
    cuda_tensorcore._LOGGED.clear()  # pylint: disable=protected-access
    with caplog.at_level(logging.INFO, logger="tvm_deconv"):
        func = cuda_sched.cuda_compute(spec)
    assert not cuda_tensorcore.is_tensor_core_func(s_tir.Schedule(func))
    assert "FFMA kernel, not tensor cores: output channels = 3" in caplog.text
    small = zoo.get("dcgan_128_64_k4s2").spec(1, dtype="float16")  # 4 split-K slices: TC
    assert cuda_tensorcore.is_tensor_core_func(s_tir.Schedule(cuda_sched.cuda_compute(small)))
    short = zoo.get("dcgan_512_256_k4s2").spec(1, dtype="float16")  # 16 slices: split FFMA
    with caplog.at_level(logging.INFO, logger="tvm_deconv"):
        assert not cuda_tensorcore.is_tensor_core_func(
            s_tir.Schedule(cuda_sched.cuda_compute(short)))
    assert "FFMA kernel, not tensor cores: its grid is short" in caplog.text
    big = zoo.get("pose_256_256_k4s2").spec(64, dtype="float16")
    with cuda_tensorcore.tensor_cores(False):
        func = cuda_sched.cuda_compute(big)
    assert not cuda_tensorcore.is_tensor_core_func(s_tir.Schedule(func))
    assert cuda_tensorcore.is_tensor_core_func(s_tir.Schedule(cuda_sched.cuda_compute(big)))


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
def test_tensor_core_source_compiles_with_nvcc(tmp_path):
    ex = tvm_deconv.build(one_layer(zoo.get("pose_256_256_k4s2").spec(64, dtype="float16"),
                                    bias=True), "cuda")
    assert nvcc_errors("\n".join(cuda_sources(ex.mod)), tmp_path) is None


def _shared_halves(src: str) -> int:
    return sum(int(n) for n in re.findall(r"__shared__[^;]*?half\s+\w+\[(\d+)\]", src))


@pytest.mark.parametrize("pipeline,gather,input_copy,copy_lanes", [
    ("double_buffer", "pixels", "none", "rows"), ("rotate", "pixels", "none", "rows"),
    ("async", "pixels", "none", "rows"), ("off", "tiles", "none", "rows"),
    ("off", "pixels", "channels_last", "rows"), ("async", "pixels", "channels_last", "rows"),
    ("async", "pixels", "channels_last", "channels")])
def test_tensor_core_ab_knobs_build(pipeline, gather, input_copy, copy_lanes, monkeypatch,
                                    tmp_path):
    """benchmarks/cuda_tc_variants_ab.py's variants generate the kernels they name, and nvcc
    accepts them: double-buffered staging doubles the float16 shared memory, "async" issues
    cp.async (for the weight; with the channels-last input copy, a kernel of its own, for
    both staging copies), the others keep one buffer."""
    spec = zoo.get("pose_256_256_k4s2").spec(64, dtype="float16")

    def source():
        sch = s_tir.Schedule(cuda_tensorcore.tensor_core_conv_transpose(spec))
        cuda_tensorcore.schedule_tensor_core(sch, CUDA)
        with tvm_deconv.kernel_context(CUDA):  # cp.async lowered as tvm_deconv.build does
            ex = tvm.compile(sch.mod["main"].with_attr("tirx.is_scheduled", True), CUDA)
        return ex.mod.imports[0].inspect_source()

    monkeypatch.setattr(cuda_tensorcore, "INPUT_COPY", "none")
    monkeypatch.setattr(cuda_tensorcore, "K_PIPELINE", "off")
    plain = source()  # no pipeline, the shipped gather, no input copy: one buffer
    monkeypatch.setattr(cuda_tensorcore, "K_PIPELINE", pipeline)
    monkeypatch.setattr(cuda_tensorcore, "COPY_PIPELINE", pipeline)
    monkeypatch.setattr(cuda_tensorcore, "X_GATHER", gather)
    monkeypatch.setattr(cuda_tensorcore, "INPUT_COPY", input_copy)
    monkeypatch.setattr(cuda_tensorcore, "COPY_LANES", copy_lanes)
    src = source()
    assert src != plain
    doubled = pipeline in ("double_buffer", "async")
    assert _shared_halves(src) == _shared_halves(plain) * (2 if doubled else 1)
    copies = len(re.findall(r"ptx_cp_async\w*\(_shared_ptr(_1)?,", src))
    async_copies = {_shared_ptr for _shared_ptr in
                    re.findall(r"ptx_cp_async\w*\((_shared_ptr\w*),", src)}
    assert (copies > 0) == pipeline.startswith("async")
    if pipeline.startswith("async"):  # the input copy makes the input gather async too
        assert len(async_copies) == (2 if input_copy == "channels_last" else 1), async_copies
    assert src.count("__global__") // 2 == (2 if input_copy == "channels_last" else 1)
    assert nvcc_errors(src, tmp_path) is None


def test_narrow_or_reused_inputs_take_the_channels_last_copy_with_cp_async():
    """float16 NC.. inputs with rows narrower than NARROW_ROW (DCGAN 512->256: 4, pose
    2048->256: 6) or each element feeding COPY_REUSE multiply-adds (pose 256->256, HiFi-GAN:
    256 channels x 16 taps) get the channels-last input copy, the other tensor-core zoo
    layers (U-Net: 256 x 4) and channels-last inputs do not; built through
    tvm_deconv.build, the copy is a kernel of its own and both staging copies of the GEMM are
    cp.async."""
    copied = {"dcgan_512_256_k4s2", "pose_2048_256_k4s2", "pose_256_256_k4s2",
              "hifigan_512_256_k16s8"}
    for name in TC_ZOO:
        spec = zoo.get(name).spec(64, dtype="float16")
        assert (cuda_tensorcore.input_copy(spec) == "channels_last") == (name in copied), name
    nhwc = zoo.get("dcgan_512_256_k4s2").spec(64, dtype="float16", layout="NHWC")
    assert cuda_tensorcore.input_copy(nhwc) == "none"
    spec = zoo.get("dcgan_512_256_k4s2").spec(64, dtype="float16")
    assert cuda_sched.workspace_bytes(spec) == 64 * 6 * 6 * 512 * 2  # padded by 1 per side
    ex = tvm_deconv.build(one_layer(spec), "cuda", params={"w": random_inputs(spec, 0)[1]})
    src = "\n".join(cuda_sources(ex.mod))
    assert src.count("__global__") // 2 == 2 and "mma_sync" in src
    assert len(set(re.findall(r"ptx_cp_async\w*\((_shared_ptr\w*),", src))) == 2


def test_tall_tensor_core_tiles_rotate_their_k_loop():
    """Without the input copy, tiles of 128 pixels x 64+ channels take the "rotate" K
    pipeline (the next step's global loads hoisted above this step's MMAs) from batch 2, the
    others none; the kernel source shows it: a rotated loop stages its first step before the
    loop.  At batch 1, the same 128 x 64 tiles of CycleGAN 256->128 do not rotate."""
    tile = cuda_tensorcore.TensorCoreTile
    assert cuda_tensorcore.default_k_pipeline(tile(2, 2, 4, 2, 2), 64) == "rotate"  # 128 x 64
    assert cuda_tensorcore.default_k_pipeline(tile(2, 2, 4, 4, 2), 2) == "rotate"   # 128 x 128
    assert cuda_tensorcore.default_k_pipeline(tile(2, 2, 4, 4, 2), 1) == "off"
    assert cuda_tensorcore.default_k_pipeline(tile(2, 2, 2, 4, 2), 64) == "off"     # 64 x 128
    assert cuda_tensorcore.default_k_pipeline(tile(2, 2, 4, 1, 2), 64) == "off"     # 128 x 32

    def syncs(spec, pipeline):
        sch = s_tir.Schedule(cuda_tensorcore.tensor_core_conv_transpose(spec))
        cuda_tensorcore.schedule_tensor_core(sch, CUDA, pipeline=pipeline)
        with tvm_deconv.kernel_context(CUDA):
            ex = tvm.compile(sch.mod["main"].with_attr("tirx.is_scheduled", True), CUDA)
        return ex.mod.imports[0].inspect_source().count("__syncthreads()")

    for spec, rotates in ((zoo.get("dcgan_256_128_k4s2").spec(64, dtype="float16"), True),
                          (stride_multiple_kernel(zoo.get("cyclegan_256_128_k3s2").spec(
                              1, dtype="float16")), False)):
        assert cuda_tensorcore.input_copy(spec) == "none"
        chosen = cuda_tensorcore.choose_tile(cuda_tensorcore.gemm_shape(spec))
        assert (chosen.bm, chosen.bn) == (128, 64)
        assert (syncs(spec, None) == syncs(spec, "rotate" if rotates else "off")
                != syncs(spec, "off" if rotates else "rotate"))


TC_TILES = [None, cuda_tensorcore.TensorCoreTile(1, 1, 1, 1, 1),
            cuda_tensorcore.TensorCoreTile(2, 1, 1, 2, 2)]


def _tile_fits(spec, tile) -> bool:
    return tile is None or all(tile.divides(gemm.shape)
                               for gemm in cuda_tensorcore.phase_gemms(spec))


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("tile", TC_TILES, ids=lambda t: "chosen" if t is None else
                         f"{t.wp}x{t.wo}x{t.fp}x{t.fo}x{t.fk}")
@pytest.mark.parametrize("spec", TC_SPECS + tensor_core_specs(6, seed=41, max_size=10),
                         ids=_tc_id)
@pytest.mark.parametrize("pipeline,input_copy,copy_lanes", [
    ("off", "none", "rows"), ("async", "channels_last", "rows"),
    ("async", "channels_last", "channels"), ("rotate", "none", "rows")])
def test_gpu_tensor_core_kernel(spec, tile, pipeline, input_copy, copy_lanes, monkeypatch):
    """The WMMA kernel (chosen and forced tiles; as shipped, with the channels-last input
    copy and cp.async pipelines, and with the rotated K loop) vs the float64 reference of the
    same fp16 inputs; NaN-poisoned output, so every element must be written."""
    if not _tile_fits(spec, tile):
        pytest.skip("tile does not divide this GEMM")
    monkeypatch.setattr(cuda_tensorcore, "INPUT_COPY", input_copy)
    monkeypatch.setattr(cuda_tensorcore, "COPY_LANES", copy_lanes)
    sch = s_tir.Schedule(cuda_tensorcore.tensor_core_conv_transpose(spec))
    cuda_tensorcore.schedule_tensor_core(sch, CUDA, tile, pipeline=pipeline)
    with tvm_deconv.kernel_context(CUDA):
        ex = tvm.compile(sch.mod["main"].with_attr("tirx.is_scheduled", True), CUDA)
    assert "mma_sync" in ex.mod.imports[0].inspect_source()
    assert poisoned_run_error(ex, spec, decomposed_pack(spec), seed=4, gpu=True) < 2e-3


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("spec", [s for s in TC_SPECS + tensor_core_specs(6, seed=43, max_size=10)
                                  if s.out_layout.index("C") == 1], ids=_tc_id)
def test_gpu_tensor_core_with_bias_relu(spec):
    """Whole Relax layer through tvm_deconv.build: conv (tensor cores) + bias + ReLU fused
    into one kernel, vs the float64 reference of the same fp16 inputs."""
    ex = tvm_deconv.build(one_layer(spec, bias=True), "cuda")
    assert any("mma_sync" in src for src in cuda_sources(ex.mod))
    dev = tvm.cuda(0)
    data, weight = random_inputs(spec, seed=6)
    bias = np.random.default_rng(8).standard_normal(
        (1, spec.out_channels) + (1,) * spec.ndim).astype(spec.out_dtype)
    out = relax.VirtualMachine(ex, dev)["main"](
        *(tvm.runtime.tensor(a, dev) for a in (data, weight, bias))).numpy()
    ref = np.maximum(conv_transpose_reference(data, weight, spec,
                                              bias=bias.reshape(-1).astype("float64")), 0)
    assert relative_error(out.astype("float64"), ref) < 2e-3


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("name", TC_ZOO)
@pytest.mark.parametrize("batch", [1, 64])
def test_gpu_tensor_core_zoo_layer(name, batch):
    """fp16 zoo layers at batch 64 and 1 (tensor cores; at batch 1 the split FFMA kernel or
    gpu.single_pixel where they take them), within 2e-3 of float64."""
    assert _float16_error(zoo.get(name).spec(batch, dtype="float16")) < 2e-3


def test_split_k_fills_the_chip_where_the_start_tile_leaves_it_empty():
    """Split-K where the FFMA phase-batched start tile makes fewer blocks than SMs and
    each slice stays deep enough; never at batch 64 on the large layers, with groups, or on
    few output channels."""
    def slices(name, batch, dtype="float32"):
        return cuda_sched.split_k(zoo.get(name).spec(batch, dtype=dtype))

    assert slices("pose_2048_256_k4s2", 1) == 32
    assert slices("dcgan_512_256_k4s2", 1) == 16
    assert slices("unet3d_64_32_k2s2", 1) == 1       # 64 channels x 1 tap: too shallow
    assert slices("dcgan_64_3_k4s2", 1) == 1         # 3 output channels
    assert slices("pose_2048_256_k4s2", 64) == 1
    assert slices("pose_2048_256_k4s2", 1, "float16") == 32
    grouped = make_spec((1, 256, 2, 2), (256, 8, 4, 4), strides=2, padding=1, groups=2)
    assert cuda_sched.split_k(grouped) == 1
    assert all(cuda_sched.split_k(spec) > 1 for spec in SPLIT_SPECS)  # emulated above
    for spec in BATCHED_SPECS:
        k = cuda_sched.split_k(spec)
        assert spec.in_channels % k == 0 and spec.in_channels // k >= min(
            spec.in_channels, cuda_sched.MIN_SPLIT_CHANNELS)


def test_float16_takes_split_k_over_tensor_cores_where_the_grid_is_short():
    """float16 layers whose split-K would make >= SPLIT_K_OVER_TENSOR_CORES slices (batch-1
    pose, DCGAN 512->256) run the split FFMA kernel (two kernels, float32 partial sums in the
    reported workspace); fewer slices, or batch 64, keep the tensor cores (one kernel, after
    the channels-last input copy's where the layer takes it: its workspace is the copy)."""
    for name, batch in (("pose_2048_256_k4s2", 1), ("dcgan_512_256_k4s2", 1),
                        ("unet_512_256_k2s2", 1), ("pose_2048_256_k4s2", 64)):
        spec = zoo.get(name).spec(batch, dtype="float16")
        split = cuda_sched.split_k(spec) >= cuda_tensorcore.SPLIT_K_OVER_TENSOR_CORES
        assert cuda_sched.uses_tensor_core_kernel(spec) == (not split), (name, batch)
        copied = not split and cuda_tensorcore.input_copy(spec) == "channels_last"
        assert (cuda_sched.workspace_bytes(spec) > 0) == (split or copied)
        _, weight = random_inputs(spec, 0)
        ex = tvm_deconv.build(one_layer(spec), "cuda", params={"w": weight})
        kernels = [k for src in cuda_sources(ex.mod) for k in src.split("__global__")[1:]
                   if "{" in k]
        assert len(kernels) == 1 + split + copied
        assert ("wmma" in "".join(kernels)) == (not split)


@pytest.mark.parametrize("spec", SPLIT_SPECS, ids=lambda s: f"{s.ndim}d")
def test_float16_split_k_cpu_emulation(spec):
    """float16 split-K: float32 partial sums, rounded once in the summing kernel."""
    half = dataclasses.replace(spec, dtype="float16", out_dtype="float16")
    assert cuda_sched.split_k(half) > 1
    assert _emulate(half) < 1e-3


# ---------------------------------------------------------------------------------------------
# Ragged layers through zero taps (cuda.padded_taps, schedules/cuda_padded_taps.py)
# ---------------------------------------------------------------------------------------------

# (phase pixels, channels and taps x channels multiples of 16: the float16 tensor-core form)
RAGGED_SPECS = [
    make_spec((2, 16, 4, 4), (16, 16, 3, 3), strides=2, padding=1, output_padding=1),  # CycleGAN
    make_spec((1, 16, 4, 4), (16, 32, 9, 9), strides=2, padding=4, output_padding=1),  # FSRCNN x2
    make_spec((1, 16, 16), (16, 16, 5), strides=3, padding=1),                         # 1-d
    make_spec((1, 2, 4, 2, 16), (3, 3, 3, 32, 16), strides=(2, 2, 1), padding=1,       # 3-d NDHWC
              output_padding=(1, 1, 0), data_layout="NDHWC", kernel_layout="DHWOI"),
]


def _padded(spec, dtype):
    return dataclasses.replace(spec, dtype=dtype, out_dtype=dtype)


@pytest.mark.parametrize("spec", RAGGED_SPECS, ids=lambda s: f"{s.ndim}d_s{s.strides}_k{s.kernel}")
def test_padded_taps_is_the_same_conv_cpu(spec):
    """The zero-tap conv (phase-batched compute of the padded spec, weight packed with zeros
    for the added taps) matches the ORIGINAL conv's float64 reference: float32 through the
    FFMA schedule's loop structure on LLVM, float16 through the tensor-core compute as is."""
    assert not make_plan(spec).phase_batched
    assert cuda_padded_taps.zero_tap_ratio(spec) <= cuda_padded_taps.MAX_ZERO_TAP_RATIO
    fp32 = _padded(spec, "float32")
    sch = s_tir.Schedule(cuda_padded_taps.padded_taps_compute(fp32))
    cuda_sched.schedule_cuda(sch, CUDA, cuda_sched.CPU_EMULATION)
    assert poisoned_run_error(sch.mod["main"], fp32, cuda_padded_taps.padded_taps_pack(fp32),
                              seed=2) < 1e-5
    fp16 = _padded(spec, "float16")
    assert strategy.select(strategy.CONV_TRANSPOSE, fp16, CUDA).implementation.name == \
        "cuda.padded_taps"
    func = cuda_padded_taps.padded_taps_compute(fp16)
    assert cuda_tensorcore.is_tensor_core_func(s_tir.Schedule(func))
    assert poisoned_run_error(func, fp16, cuda_padded_taps.padded_taps_pack(fp16), seed=2) < 2e-3


def test_padded_taps_takes_ragged_float16_zoo_layers_and_says_why_not_others():
    """CycleGAN's float16 layers (they had no kernel of ours) build into ONE tensor-core
    kernel with bias + ReLU (after the input copy's, for narrow rows); float32 takes zero
    taps at batch 1 only (above it the exact per-phase kernels, saying why); too many zero
    taps (k1 s2 in 2-d: 4x the multiply-adds) is declined, naming the ratio."""
    for name in ("cyclegan_256_128_k3s2", "cyclegan_128_64_k3s2"):
        for batch in (1, 64):
            chosen = strategy.select(strategy.CONV_TRANSPOSE,
                                     zoo.get(name).spec(batch, dtype="float16"), CUDA)
            assert chosen.implementation.name == "cuda.padded_taps", chosen.reason()
            chosen = strategy.select(strategy.CONV_TRANSPOSE, zoo.get(name).spec(batch), CUDA)
            assert chosen.implementation.name == (
                "cuda.padded_taps" if batch == 1 else "cuda.decomposed")
            if batch > 1:
                assert "float32 at batch 64 > 1" in chosen.reason()
    spec = RAGGED_SPECS[0]
    fp16 = _padded(spec, "float16")
    _, weight = random_inputs(fp16, 0)
    ex = tvm_deconv.build(one_layer(fp16, bias=True), "cuda", params={"w": weight})
    kernels = [k for src in cuda_sources(ex.mod) for k in src.split("__global__")[1:] if "{" in k]
    copied = cuda_tensorcore.input_copy(fp16) == "channels_last"  # its rows are narrow
    assert len(kernels) == 1 + copied and "wmma" in kernels[-1] and "max(" in kernels[-1]
    wide = make_spec((1, 16, 4, 4), (16, 16, 1, 1), strides=2, output_padding=1,
                     dtype="float16")
    why = cuda_padded_taps.supports_cuda_padded_taps(wide, CUDA)
    assert "4.00x the multiply-adds" in why


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("spec", RAGGED_SPECS, ids=lambda s: f"{s.ndim}d_s{s.strides}_k{s.kernel}")
def test_gpu_padded_taps_float16(spec):
    fp16 = _padded(spec, "float16")
    ex = tvm.compile(tvm.IRModule({"main": _scheduled(cuda_padded_taps.padded_taps_compute(fp16))}),
                     CUDA)
    assert poisoned_run_error(ex, fp16, cuda_padded_taps.padded_taps_pack(fp16), seed=5,
                              gpu=True) < 2e-3


def _scheduled(func):
    sch = s_tir.Schedule(func)
    cuda_sched.schedule_cuda(sch, CUDA)
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)
