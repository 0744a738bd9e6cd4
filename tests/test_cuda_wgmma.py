"""The Hopper wgmma kernel (schedules/cuda_wgmma.py).

CPU: which calls it takes and why it declines the others; its GEMM geometry and weight pack
against the float64 reference (the kernel's index arithmetic, run in numpy); the Relax build
gives it an sm_90a kernel with wgmma, kept out of fusion.  GPU (``-m gpu``): random specs and
zoo layers against float64.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import re
import shutil
import subprocess

import numpy as np
import pytest
import tvm
from tvm import relax

import tvm_deconv
from tvm_deconv import strategy, zoo
from tvm_deconv.plan import make_spec
from tvm_deconv.schedules import cuda_wgmma
from tvm_deconv.targets import resolve_target
from tvm_deconv.testing import (conv_transpose_reference, cuda_sources, has_gpu, random_inputs,
                                relative_error, run_pack, tolerance, transposed_conv_module)

CUDA = resolve_target("cuda")
needs_gpu = pytest.mark.skipif(not has_gpu(), reason="no NVIDIA GPU (tvm.cuda(0) missing)")

# (data shape, weight shape, stride, padding[, output padding]): every phase-batched kernel /
# stride pairing the zoo has (k4 s2, k2 s2, k16 s8), one odd size, one 3-phase stride, one
# bn=64 tile; phases with different tap counts (CycleGAN's k3 s2, 1-d k5 s2, and k2 s3 whose
# third phase has none); Cin padded to a K step (FCN-8s' 21 channels, 1-d 40) and pixels that
# end inside a tile (192 = 1.5 tiles; 1-d 150); 3-d (the 3-D U-Net's k4 s2 and k2 s2).
SPECS = [
    ((2, 64, 8, 8), (64, 128, 4, 4), 2, 1),
    ((1, 128, 16, 8), (128, 256, 2, 2), 2, 0),
    ((4, 64, 8, 4), (64, 24, 16, 16), 8, 4),
    ((4, 64, 5, 9), (64, 64, 6, 6), 3, 3),
    ((8, 192, 4, 4), (192, 72, 4, 4), 2, 1),
    ((8, 64, 16), (64, 32, 16), 8, 4),
    ((2, 128, 8, 8), (128, 64, 3, 3), 2, 1, 1),
    ((8, 64, 16), (64, 40, 5), 2, 2, 1),
    ((4, 64, 4, 8), (64, 16, 2, 2), 3, 0, 1),
    ((2, 21, 8, 8), (21, 21, 16, 16), 8, 4),
    ((1, 64, 16, 12), (64, 64, 4, 4), 2, 1),
    ((3, 40, 50), (40, 16, 4), 2, 1),
    ((2, 64, 4, 4, 4), (64, 32, 4, 4, 4), 2, 1),
    ((2, 64, 4, 4, 8), (64, 16, 2, 2, 2), 2, 0),
    ((2, 64, 8, 8), (64, 64, 2, 2), 2, 0),
    ((2, 128, 4, 4, 8), (128, 16, 2, 2, 2), 2, 0),
]
WGMMA_ZOO = ["dcgan_512_256_k4s2", "dcgan_256_128_k4s2", "dcgan_128_64_k4s2",
             "pose_2048_256_k4s2", "pose_256_256_k4s2", "unet_512_256_k2s2",
             "hifigan_512_256_k16s8", "cyclegan_256_128_k3s2", "cyclegan_128_64_k3s2",
             "fcn8s_21_21_k16s8", "unet3d_64_32_k4s2", "unet3d_64_32_k2s2"]


DTYPES = ["float16", "float32"]


def _spec(data, weight, stride, padding, output_padding=0, dtype="float16"):
    return make_spec(data, weight, strides=stride, padding=padding,
                     output_padding=output_padding, dtype=dtype)


def tf32_round(x):
    """float32 ``x`` rounded to tf32 (10 mantissa bits), ties away from zero."""
    bits = np.asarray(x, "float32").view("uint32")
    return ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view("float32")


def is_tf32(x) -> bool:
    """Every value has zeros in the 13 mantissa bits wgmma ignores."""
    return not (np.asarray(x, "float32").view("uint32") & np.uint32(0x1FFF)).any()


def _id(case):
    data, weight, stride, padding = case[:4]
    extra = f"op{case[4]}" if len(case) > 4 else ""
    return f"{'x'.join(map(str, data))}_k{weight[-1]}s{stride}p{padding}{extra}_o{weight[1]}"



@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SPECS, ids=_id)
def test_wgmma_geometry_and_pack_match_the_reference(case, dtype):
    """The kernel's GEMM, run in numpy through the same Geometry (padded channels-last input
    rows per phase and tap, phase-interleaved output) and the packed weight, is the float64
    transposed conv: exactly for float16, and for float32 from the tf32 parts side by side
    along K (the input's (hi, hi, lo) as the copy kernel writes them, the pack's (hi, lo, hi)),
    within float32's accuracy."""
    spec = _spec(*case, dtype=dtype)
    assert cuda_wgmma.wgmma_reason(spec, CUDA) is None
    data, weight = random_inputs(spec, seed=3)
    geo = cuda_wgmma.Geometry(spec)
    packed = run_pack(cuda_wgmma.wgmma_pack(spec), weight)
    if dtype == "float32":
        assert is_tf32(packed)  # what wgmma reads of it is all of it
    packed = packed.astype("float64")
    n_, real_cin = spec.data_shape[:2]
    parts, channels, cin = geo.ops.parts, geo.channels, geo.cin
    # Cin rounded up to a K step (zero channels past it), per operand part
    assert cin == parts * channels and channels % geo.ops.bk == 0
    assert channels - real_cin < geo.ops.bk
    in_sizes = [ax.in_size for ax in geo.axes]
    x_cl = np.zeros((n_,) + geo.padded_size + (cin,))
    inside = tuple(slice(lo, lo + size) for (lo, _), size in zip(geo.pads, in_sizes))
    x = np.moveaxis(data.reshape([n_, real_cin] + in_sizes), 1, -1)
    high = tf32_round(x)
    for part, values in enumerate([x] if parts == 1 else [high, high, tf32_round(x - high)]):
        x_cl[(slice(None),) + inside + (slice(part * channels, part * channels + real_cin),)] \
            = values
    n, *qs = geo.pixel(np.arange(geo.pixels))
    out = np.zeros((n_, spec.out_channels) + tuple(ax.out_size for ax in geo.axes))
    written = np.zeros(out.shape, int)
    cols = np.arange(geo.columns)
    for g in range(geo.groups):
        r = geo.group_phase(g, 0)  # the group's input window and taps: its first phase's
        counts = [geo.tap_count(a, ra) for a, ra in enumerate(r)]
        taps = math.prod(counts)
        assert geo.phase_reduce(r) == taps * cin
        assert not packed[g, :, taps * cin:].any()  # zeros past the phase's reduction
        assert not packed[g, :, :taps * cin].reshape(
            geo.columns, taps, parts, channels)[..., real_cin:].any()
        acc = np.zeros((geo.pixels, geo.columns))
        for j in range(taps):
            js = geo.tap_digits(j, r)
            a = x_cl[(n,) + tuple(geo.padded_input(ax, ra, q, ja)
                                  for ax, (ra, q, ja) in enumerate(zip(r, qs, js)))]
            acc += a @ packed[g, :, j * cin:(j + 1) * cin].T
        col_r = geo.group_phase(g, cols)
        where = (n[:, None], cols[None, :] // geo.group_size) + tuple(
            q[:, None] * s + rc[None, :] for q, s, rc in zip(qs, geo.strides, col_r))
        out[where] = acc
        written[where] += 1
    assert (written == 1).all()  # every output once
    ref = conv_transpose_reference(data.astype("float64"), weight.astype("float64"), spec)
    assert relative_error(out.reshape(ref.shape), ref) < (1e-12 if dtype == "float16" else 5e-7)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SPECS, ids=_id)
def test_flat_input_offsets_are_the_geometry_s_indices(case, dtype):
    """The copies of A address the flat padded input as row_offset(p) + k_offset(k): for
    every row, tap and phase that is the element Geometry.padded_input names."""
    spec = _spec(*case, dtype=dtype)
    geo = cuda_wgmma.Geometry(spec)
    cin = geo.cin
    rows = np.arange(0, geo.pixels, 7)
    n, *qs = geo.pixel(rows)
    for r in itertools.product(*(range(s) for s in geo.strides)):
        for k in range(0, geo.phase_reduce(r), geo.ops.core * 3):
            js = geo.tap_digits(k // cin, r)
            want = n
            for ax, (size, ra, q, ja) in enumerate(zip(geo.padded_size, r, qs, js)):
                want = want * size + geo.padded_input(ax, ra, q, ja)
            got = geo.row_offset(rows, r) + geo.k_offset(k, r)
            assert (got == want * cin + k % cin).all()


@pytest.mark.parametrize("why, kwargs", [
    ("float32 -> float32 only", dict(dtype="float16", out_dtype="float32")),
    ("float32 -> float32 only", dict(dtype="bfloat16")),
    ("unequal sizes", dict(weight=(64, 64, 3, 3))),
    ("no whole pixel tile", dict(data=(1, 64, 4, 4))),
    ("(12) % 8", dict(weight=(64, 12, 4, 4))),
    ("groups", dict(data=(1, 128, 8, 8), weight=(128, 32, 4, 4), groups=2)),
])
def test_wgmma_declines_what_it_cannot_run(why, kwargs):
    args = dict(data=(2, 64, 8, 8), weight=(64, 64, 4, 4), strides=2, padding=1,
                dtype="float16")
    args.update(kwargs)
    spec = make_spec(args.pop("data"), args.pop("weight"), **args)
    reason = cuda_wgmma.wgmma_reason(spec, CUDA)
    assert reason is not None and why in reason


def test_wgmma_needs_hopper_a_full_enough_grid_and_the_switch_on():
    spec = zoo.get("dcgan_256_128_k4s2").spec(64, dtype="float16")
    ampere = tvm.target.Target({"kind": "cuda", "arch": "sm_80"})
    assert "not Hopper" in cuda_wgmma.wgmma_reason(spec, ampere)
    assert strategy.select(strategy.CONV_TRANSPOSE, spec, CUDA).implementation.name \
        == "cuda.wgmma"
    with cuda_wgmma.wgmma_kernel(False):
        assert "off" in cuda_wgmma.supports_cuda_wgmma(spec, CUDA)
        assert strategy.select(strategy.CONV_TRANSPOSE, spec, CUDA).implementation.name \
            == "cuda.decomposed"
    fp32 = zoo.get("dcgan_256_128_k4s2").spec(64)
    assert strategy.select(strategy.CONV_TRANSPOSE, fp32, CUDA).implementation.name \
        == "cuda.wgmma"
    with cuda_wgmma.wgmma_float32(False):
        assert "float32 off" in cuda_wgmma.supports_cuda_wgmma(fp32, CUDA)
        assert cuda_wgmma.supports_cuda_wgmma(spec, CUDA) is None
        assert strategy.select(strategy.CONV_TRANSPOSE, fp32, CUDA).implementation.name \
            == "cuda.decomposed"
    few = _spec(*SPECS[0])  # 128 pixels a phase, Cout 128: 8 thread blocks of BN 64
    assert cuda_wgmma.wgmma_reason(few, CUDA) is None
    assert "8 thread blocks" in cuda_wgmma.supports_cuda_wgmma(few, CUDA)
    assert strategy.select(strategy.CONV_TRANSPOSE, few, CUDA).implementation.name \
        == "cuda.decomposed"


@pytest.mark.parametrize("name, batch, bn, dtype", [
    ("pose_2048_256_k4s2", 64, 256, "float16"), ("dcgan_256_128_k4s2", 64, 128, "float16"),
    ("dcgan_512_256_k4s2", 64, 64, "float16"), ("hifigan_512_256_k16s8", 1, 64, "float16"),
    ("pose_2048_256_k4s2", 64, 128, "float32")])
def test_wgmma_tile_is_the_widest_that_fills_the_grid(name, batch, bn, dtype):
    """BN: the widest (64 to 256; float32, two sets of accumulators: 128) with FULL_GRID
    thread blocks (pose: 96 of BN 256; DCGAN 512->256: 32 of BN 256, 128 of BN 64), else the
    narrowest (HiFi-GAN at batch 1: 32)."""
    spec = zoo.get(name).spec(batch, dtype=dtype)
    tile = cuda_wgmma.choose_tile(spec)
    assert tile.bn == bn
    wider = [b for b in (128, 256) if b > bn and cuda_wgmma.Geometry(spec).columns % b == 0
             and b <= cuda_wgmma.OPERANDS[dtype].max_bn]
    assert all(cuda_wgmma.grid_blocks(spec, dataclasses.replace(tile, bn=b))
               < cuda_wgmma.FULL_GRID for b in wider)


@pytest.mark.parametrize("dtype", DTYPES)
def test_stage_tile_copies_fill_each_tile_once_without_bank_conflicts(dtype):
    """The 16-byte copies of a stage tile (BM rows x BK) land on distinct chunks covering
    it, each (row, chunk) where the 128-byte swizzle puts it (128-byte rows, the chunk at
    chunk ^ row % 8), and the 8 copies of a quarter warp (consecutive copy indices) read one
    whole 128-byte row into 8 distinct 16-byte bank groups."""
    ops = cuda_wgmma.OPERANDS[dtype]
    bk, core = ops.bk, ops.core
    assert bk * ops.bytes == 128 and core * ops.bytes == 16
    copies = cuda_wgmma.BM * bk // core
    offsets = [cuda_wgmma.tile_offset(c, ops) for c in range(copies)]
    assert sorted(offsets) == [c * core for c in range(copies)]
    for c, off in enumerate(offsets):
        row, chunk = cuda_wgmma.copy_row_chunk(c)
        assert off == row * bk + (chunk ^ row % 8) * core
    for first in range(0, copies, 8):
        banks = {offsets[c] * ops.bytes // 16 % 8 for c in range(first, first + 8)}
        assert len(banks) == 8
        assert len({cuda_wgmma.copy_row_chunk(c)[0] for c in range(first, first + 8)}) == 1


def test_sm90a_keeps_the_rest_of_the_target():
    target = cuda_wgmma.sm90a(CUDA)
    assert str(target.attrs["arch"]) == "sm_90a"
    assert int(target.attrs["max_shared_memory_per_block"]) == int(
        CUDA.attrs["max_shared_memory_per_block"])


def test_phases_reading_one_window_share_a_gemm():
    """U-Net's k2 s2 p0: all 4 phases read the same input, one group of 4 x 256 columns;
    HiFi-GAN's k16 s8 p4: two groups of 4 phases; pose's k4 s2 p1: 4 groups of one."""
    for name, runs, groups in [("unet_512_256_k2s2", (2, 2), 1),
                               ("hifigan_512_256_k16s8", (1, 4), 2),
                               ("pose_256_256_k4s2", (1, 1), 4)]:
        geo = cuda_wgmma.Geometry(zoo.get(name).spec(64, dtype="float16"))
        assert (geo.runs, geo.groups, geo.columns) == (runs, groups, 256 * math.prod(runs))
        phases = {geo.group_phase(g, n) for g in range(groups) for n in range(geo.group_size)}
        assert phases == {(ry, rx) for ry in range(geo.strides[0])
                          for rx in range(geo.strides[1])}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("form", [{}, {"warp_specialized": False}])
def test_paired_stores_read_every_accumulator_pair(form, dtype):
    """Each paired store of the epilogue (two neighbouring outputs) reads its own accumulator
    pair, also with one K step (k2 s2, Cin 64; float32: one step per tf32 part).  With the
    pair's index bound to a name, CUDA codegen printed every store's load alike and the
    warp-specialized kernel reused the first one's value (wrong outputs on the H100 where one
    K step left no loop before the stores)."""
    spec = _spec((2, 64, 8, 8), (64, 64, 2, 2), 2, 0, dtype=dtype)
    tile = dataclasses.replace(cuda_wgmma.choose_tile(spec), **form)
    func = cuda_wgmma.wgmma_conv_transpose(spec, tile).with_attr("global_symbol", "main")
    source = tvm.compile(func, cuda_wgmma.sm90a(CUDA)).mod.imports[0].inspect_source()
    # float32 stores the sums its steps were promoted into
    loads = re.findall(r"\*\(float2\*\)\((?:acc|sums)_ptr \+ (\d+)\)", source)
    assert sorted(int(x) for x in loads) == list(range(0, tile.bn // 2, 2))
    pair = {"float16": "half2", "float32": "float2"}[dtype]
    assert source.count(f"*({pair}*)(out_ptr") == tile.bn // 4


@pytest.mark.parametrize("name, batch, why", [
    ("unet_512_256_k2s2", 1, None), ("fcn8s_21_21_k16s8", 64, None),
    ("pose_256_256_k4s2", 1, "float32 in 32 thread blocks"),
    ("unet3d_64_32_k4s2", 64, "float32 tiles of 32 GEMM columns")])
def test_float32_takes_full_grids_of_wide_tiles(name, batch, why):
    """float32 takes the wgmma kernel where its grid has MIN_BLOCKS_FP32 thread blocks of
    MIN_BN_FP32 columns or more (elsewhere the FFMA kernels, split-K at batch 1, were
    faster); float16 keeps its own rules for the same layers."""
    reason = cuda_wgmma.supports_cuda_wgmma(zoo.get(name).spec(batch), CUDA)
    assert reason is None if why is None else why in reason
    half = zoo.get(name).spec(batch, dtype="float16")
    assert cuda_wgmma.supports_cuda_wgmma(half, CUDA) is None


def test_one_k_step_needs_a_full_wave():
    """The 3-D U-Net's k2 s2 (Cin 64, one tap: one K step) runs on the wgmma kernel at batch
    64 (2048 thread blocks), not at batch 1 (128: less than one wave, nothing to pipeline)."""
    one, many = (zoo.get("unet3d_64_32_k2s2").spec(b, dtype="float16") for b in (1, 64))
    assert "one K step in 128 thread blocks" in cuda_wgmma.supports_cuda_wgmma(one, CUDA)
    assert cuda_wgmma.supports_cuda_wgmma(many, CUDA) is None


def test_wgmma_tile_must_divide_the_gemm_columns():
    spec = _spec(*SPECS[4])  # Cout 72
    assert cuda_wgmma.choose_tile(spec).bn == 72
    wide = make_spec((2, 64, 8, 8), (64, 264, 4, 4), strides=2, padding=1, dtype="float16")
    assert cuda_wgmma.choose_tile(wide).bn == 88
    with pytest.raises(ValueError, match="must divide the 72 GEMM columns"):
        cuda_wgmma.wgmma_conv_transpose(spec, cuda_wgmma.WgmmaTile(bn=64))


def test_wgmma_forms_that_cannot_run_are_refused():
    spec = _spec(*SPECS[0])
    with pytest.raises(ValueError, match="CTA-barrier loop"):
        cuda_wgmma.wgmma_conv_transpose(spec, cuda_wgmma.WgmmaTile(bn=128, mma_in_flight=True))
    with pytest.raises(ValueError, match="no step to copy ahead"):
        cuda_wgmma.wgmma_conv_transpose(spec, cuda_wgmma.WgmmaTile(
            bn=128, stages=2, warp_specialized=False, mma_in_flight=True))
    fp32 = _spec(*SPECS[0], dtype="float32")
    with pytest.raises(ValueError, match="no step stays in flight"):
        cuda_wgmma.wgmma_conv_transpose(fp32, cuda_wgmma.WgmmaTile(
            bn=128, warp_specialized=False, mma_in_flight=True))
    with pytest.raises(ValueError, match="BN 256 > 128"):
        cuda_wgmma.wgmma_conv_transpose(_spec((8, 64, 8, 8), (64, 256, 4, 4), 2, 1,
                                              dtype="float32"), cuda_wgmma.WgmmaTile(bn=256))


def test_tiles_take_every_group_and_tile_once_phase_groups_first():
    """pixel tiles x column tiles x 6 phase groups: each coordinate tuple once, a region's
    groups on consecutive tiles."""
    coords = [cuda_wgmma.tile_coords(i, 3, 6) for i in range(3 * 5 * 6)]
    assert sorted(coords) == [(x, y, g) for x in range(3) for y in range(5) for g in range(6)]
    assert {c[:2] for c in coords[:6]} == {(0, 0)}
    assert [c[2] for c in coords[:6]] == list(range(6))


def test_tma_weight_tile_is_encoded_on_the_host_and_loaded_by_one_bulk_copy():
    """tma_b: the host code encodes the weight's tensor map (128-byte swizzle, BK x BN x 1
    boxes) and the GEMM kernel takes it as a grid constant and loads B with
    cp.async.bulk.tensor, completing on an mbarrier."""
    spec = zoo.get("pose_2048_256_k4s2").spec(64, dtype="float16")
    func = cuda_wgmma.wgmma_conv_transpose(spec, cuda_wgmma.WgmmaTile(bn=256, tma_b=True))
    assert "tensormap_encode_tiled" in func.script() and "swizzle=3" in func.script()
    ex = tvm.compile(func.with_attr("global_symbol", "main"), cuda_wgmma.sm90a(CUDA))
    source = ex.mod.imports[0].inspect_source()
    assert "const __grid_constant__ CUtensorMap w_map" in source
    assert "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes" in source
    assert "mbarrier.arrive.expect_tx" in source


@pytest.mark.parametrize("name, dtype", [
    ("dcgan_128_64_k4s2", "float16"), ("unet_512_256_k2s2", "float16"),
    ("cyclegan_256_128_k3s2", "float16"), ("unet_512_256_k2s2", "float32"),
    ("fcn8s_21_21_k16s8", "float32")])
def test_build_gives_an_sm90a_wgmma_kernel(name, dtype, caplog):
    """Through tvm_deconv.build (bias + ReLU after it: the kernel is opaque, so they stay
    separate kernels): the conv's CUDA source issues wgmma from shared-memory descriptors
    (float32: tf32 ones)."""
    spec = zoo.get(name).spec(64, dtype=dtype)
    b = relax.Var("b", relax.TensorType((1, spec.out_channels, 1, 1), dtype))
    mod = transposed_conv_module(spec, extra_args=[b], epilogue=lambda bb, y: bb.emit(
        relax.op.nn.relu(relax.op.add(y, b))))
    with cuda_wgmma.wgmma_kernel(True), caplog.at_level(logging.INFO, "tvm_deconv"):
        ex = tvm_deconv.build(mod, "cuda")
    assert "uses cuda.wgmma" in caplog.text
    sources = [s for s in cuda_sources(ex.mod) if "wgmma.mma_async" in s]
    assert len(sources) == 1
    assert "cp.async.cg.shared.global" in sources[0]
    assert "fence.proxy.async.shared::cta" in sources[0]
    assert (".f32.tf32.tf32" in sources[0]) == (dtype == "float32")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH: cannot assemble "
                    "the kernel for sm_90a")
@pytest.mark.parametrize("name, form, dtype", [
    (name, {}, dtype) for dtype in DTYPES for name in WGMMA_ZOO] + [
    ("pose_2048_256_k4s2", form, "float16") for form in (
        {"warp_specialized": False}, {"warp_specialized": False, "mma_in_flight": True},
        {"warp_specialized": False, "mma_in_flight": True, "tma_b": True},
        {"tiled_copy": True}, {"tma_b": True})] + [
    ("hifigan_512_256_k16s8", {"warp_specialized": False, "mma_in_flight": True,
                               "tma_b": True}, "float16")] + [
    ("hifigan_512_256_k16s8", {"warp_specialized": False, "tma_b": True}, "float32"),
    ("pose_2048_256_k4s2", {"tma_b": True}, "float32")])
def test_wgmma_zoo_kernels_assemble_without_spills_or_serialized_wgmma(name, form, dtype,
                                                                       tmp_path):
    """ptxas (sm_90a) takes each zoo kernel (default tile in both dtypes, and pose 2048->256
    and HiFi-GAN in the other forms) with no local-memory spills and without serializing its
    wgmmas (C7514: other instructions touching the accumulators between a wgmma and its
    wait); float32 multiplies on tf32 wgmmas."""
    spec = zoo.get(name).spec(64, dtype=dtype)
    tile = dataclasses.replace(cuda_wgmma.choose_tile(spec), **form)
    func = cuda_wgmma.wgmma_conv_transpose(spec, tile).with_attr("global_symbol", "main")
    source = tvm.compile(func, cuda_wgmma.sm90a(CUDA)).mod.imports[0].inspect_source()
    (tmp_path / "k.cu").write_text(source)
    done = subprocess.run(["nvcc", "-arch=sm_90a", "-cubin", "-O3", "--resource-usage", "-o",
                           str(tmp_path / "k.cubin"), str(tmp_path / "k.cu")],
                          capture_output=True, text=True, check=True)
    log = done.stdout + done.stderr
    assert "wgmma.mma_async instructions are serialized" not in log
    assert " 0 bytes spill stores" in log and "bytes spill stores" in log
    assert all(line.strip().startswith("0 bytes stack frame, 0 bytes spill stores")
               for line in log.splitlines() if "spill stores" in line)
    mma = {"float16": ".f32.f16.f16", "float32": ".f32.tf32.tf32"}[dtype]
    assert f"wgmma.mma_async.sync.aligned.m64n{tile.bn}k" in source and mma in source


FORMS = {"ws": {}, "ws_tma": {"tma_b": True}, "ws_tiled_copy": {"tiled_copy": True},
         "sync": {"warp_specialized": False},
         "sync_tma": {"warp_specialized": False, "tma_b": True},
         "sync_in_flight": {"warp_specialized": False, "mma_in_flight": True},
         "sync_in_flight_tma": {"warp_specialized": False, "mma_in_flight": True, "tma_b": True}}
# float32 has no step in flight (each step's sums are promoted) and no tiled input copy
FORMS_BY_DTYPE = [(form, dtype) for dtype in DTYPES for form in FORMS
                  if dtype == "float16" and form != "sync_tma"
                  or dtype == "float32" and not {"mma_in_flight", "tiled_copy"} & set(FORMS[form])]


def _gpu_error(spec, seed, form, monkeypatch):
    """Relative error of the build's output (the wgmma kernel switched on, its tile in
    ``form``) against float64; fails if the build did not run the wgmma kernel."""
    choose = cuda_wgmma.choose_tile
    monkeypatch.setattr(cuda_wgmma, "choose_tile",
                        lambda s: dataclasses.replace(choose(s), **FORMS[form]))
    # small specs too: grids of any size, one K step or more, narrow float32 tiles
    for rule in ("MIN_BLOCKS", "SMS", "MIN_BLOCKS_FP32", "MIN_BN_FP32"):
        monkeypatch.setattr(cuda_wgmma, rule, 1)
    data, weight = random_inputs(spec, seed=seed)
    with cuda_wgmma.wgmma_kernel(True):
        ex = tvm_deconv.build(transposed_conv_module(spec), "cuda")
    assert any("wgmma.mma_async" in src for src in cuda_sources(ex.mod))
    dev = tvm.cuda(0)
    out = relax.VirtualMachine(ex, dev)["main"](
        *(tvm.runtime.tensor(a, dev) for a in (data, weight))).numpy()
    ref = conv_transpose_reference(data.astype("float64"), weight.astype("float64"), spec)
    return relative_error(out.astype("float64"), ref)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("form, dtype", FORMS_BY_DTYPE)
@pytest.mark.parametrize("case", SPECS, ids=_id)
def test_gpu_wgmma_kernel(case, form, dtype, monkeypatch):
    """Random specs (1-d, 2-d and 3-d; strides 2, 3 and 8; ragged phases, padded Cin, a cut
    last pixel tile, phase groups of 1 to 16; BN from 16 to 112) in every form of the
    kernel: the default tile (warp-specialized), the weight by TMA, the tiled input copy
    (float16), the CTA-barrier loop (float32: also with the weight by TMA), one step's
    wgmmas in flight and that with the weight by TMA (float16); float16, and float32 as
    3xTF32 within float32's error bound."""
    error = _gpu_error(_spec(*case, dtype=dtype), 5, form, monkeypatch)
    assert error < tolerance(dtype)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", WGMMA_ZOO)
def test_gpu_wgmma_zoo_layer(name, dtype, monkeypatch):
    error = _gpu_error(zoo.get(name).spec(64, dtype=dtype), 6, "ws", monkeypatch)
    assert error < tolerance(dtype)
