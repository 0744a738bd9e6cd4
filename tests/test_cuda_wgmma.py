"""The Hopper wgmma kernel (schedules/cuda_wgmma.py).

CPU: which calls it takes and why it declines the others; its GEMM geometry and weight pack
against the float64 reference (the kernel's index arithmetic, run in numpy); the Relax build
gives it an sm_90a kernel with wgmma, kept out of fusion.  GPU (``-m gpu``): random specs and
zoo layers against float64.
"""

from __future__ import annotations

import dataclasses
import logging
import math
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
                                relative_error, run_pack, transposed_conv_module)

CUDA = resolve_target("cuda")
needs_gpu = pytest.mark.skipif(not has_gpu(), reason="no NVIDIA GPU (tvm.cuda(0) missing)")

# (data shape, weight shape, stride, padding): every phase-batched kernel / stride pairing the
# zoo has (k4 s2, k2 s2, k16 s8), one odd size, one 3-phase stride, one bn=64 tile.
SPECS = [
    ((2, 64, 8, 8), (64, 128, 4, 4), 2, 1),
    ((1, 128, 16, 8), (128, 256, 2, 2), 2, 0),
    ((4, 64, 8, 4), (64, 24, 16, 16), 8, 4),
    ((4, 64, 5, 9), (64, 64, 6, 6), 3, 3),
    ((8, 192, 4, 4), (192, 72, 4, 4), 2, 1),
    ((8, 64, 16), (64, 32, 16), 8, 4),
]
WGMMA_ZOO = ["dcgan_512_256_k4s2", "dcgan_256_128_k4s2", "dcgan_128_64_k4s2",
             "pose_2048_256_k4s2", "pose_256_256_k4s2", "unet_512_256_k2s2",
             "hifigan_512_256_k16s8"]


def _spec(data, weight, stride, padding):
    return make_spec(data, weight, strides=stride, padding=padding, dtype="float16")


def _id(case):
    data, weight, stride, padding = case
    return f"{'x'.join(map(str, data))}_k{weight[-1]}s{stride}p{padding}_o{weight[1]}"



@pytest.mark.parametrize("case", SPECS, ids=_id)
def test_wgmma_geometry_and_pack_match_the_reference(case):
    """The kernel's GEMM, run in numpy through the same Geometry (padded channels-last input
    rows per phase and tap, phase-interleaved output) and the packed weight, is the float64
    transposed conv."""
    spec = _spec(*case)
    assert cuda_wgmma.wgmma_reason(spec, CUDA) is None
    data, weight = random_inputs(spec, seed=3)
    geo = cuda_wgmma.Geometry(spec)
    packed = run_pack(cuda_wgmma.wgmma_pack(spec), weight).astype("float64")
    (py0, _), (px0, _) = geo.pads
    hp, wp = geo.padded_size
    n_, cin = spec.data_shape[:2]
    hin, win = (ax.in_size for ax in geo.axes)
    x_cl = np.zeros((n_, hp, wp, cin))
    x_cl[:, py0:py0 + hin, px0:px0 + win] = data.reshape(n_, cin, hin, win).transpose(0, 2, 3, 1)
    sy, sx = geo.strides
    th, tw = geo.taps
    rows = np.arange(geo.pixels)
    n, qy, qx = geo.pixel(rows)
    out = np.zeros((n_, spec.out_channels) + tuple(ax.out_size for ax in geo.axes))
    for r in range(sy * sx):
        ry, rx = divmod(r, sx)
        acc = np.zeros((geo.pixels, spec.out_channels))
        for j in range(th * tw):
            a = x_cl[n, geo.padded_input(0, ry, qy, j // tw), geo.padded_input(1, rx, qx, j % tw)]
            acc += a @ packed[r, :, j * cin:(j + 1) * cin].T
        out[n, :, qy * sy + ry, qx * sx + rx] = acc
    ref = conv_transpose_reference(data.astype("float64"), weight.astype("float64"), spec)
    assert relative_error(out.reshape(ref.shape), ref) < 1e-12


@pytest.mark.parametrize("case", SPECS, ids=_id)
def test_flat_input_offsets_are_the_geometry_s_indices(case):
    """The copies of A address the flat padded input as row_offset(p) + k_offset(k): for
    every row, tap and phase that is the element Geometry.padded_input names."""
    spec = _spec(*case)
    geo = cuda_wgmma.Geometry(spec)
    hp, wp = geo.padded_size
    cin, tw = spec.in_channels, geo.taps[1]
    rows = np.arange(0, geo.pixels, 7)
    n, qy, qx = geo.pixel(rows)
    for r in range(math.prod(geo.strides)):
        ry, rx = divmod(r, geo.strides[1])
        for k in range(0, geo.reduce, cuda_wgmma.CORE * 3):
            j = k // cin
            want = ((n * hp + geo.padded_input(0, ry, qy, j // tw)) * wp
                    + geo.padded_input(1, rx, qx, j % tw)) * cin + k % cin
            got = geo.row_offset(rows, ry, rx) + geo.k_offset(k, ry, rx)
            assert (got == want).all()


@pytest.mark.parametrize("why, kwargs", [
    ("float16", dict(dtype="float32")),
    ("Cin % 64", dict(data=(1, 96, 8, 8), weight=(96, 64, 4, 4))),
    ("phases differ", dict(weight=(64, 64, 3, 3), output_padding=1)),
    ("% 128", dict(data=(1, 64, 4, 4))),
    ("Cout % 8", dict(weight=(64, 12, 4, 4))),
    ("groups", dict(data=(1, 128, 8, 8), weight=(128, 32, 4, 4), groups=2)),
])
def test_wgmma_declines_what_it_cannot_run(why, kwargs):
    args = dict(data=(2, 64, 8, 8), weight=(64, 64, 4, 4), strides=2, padding=1,
                dtype="float16")
    args.update(kwargs)
    spec = make_spec(args.pop("data"), args.pop("weight"), **args)
    reason = cuda_wgmma.wgmma_reason(spec, CUDA)
    assert reason is not None and why in reason


def test_wgmma_needs_hopper_and_is_off_unless_switched_on():
    spec = _spec(*SPECS[0])
    ampere = tvm.target.Target({"kind": "cuda", "arch": "sm_80"})
    assert "not Hopper" in cuda_wgmma.wgmma_reason(spec, ampere)
    with cuda_wgmma.wgmma_kernel(False):
        assert "off" in cuda_wgmma.supports_cuda_wgmma(spec, CUDA)
        assert strategy.select(strategy.CONV_TRANSPOSE, spec, CUDA).implementation.name \
            == "cuda.decomposed"
    with cuda_wgmma.wgmma_kernel(True):
        assert strategy.select(strategy.CONV_TRANSPOSE, spec, CUDA).implementation.name \
            == "cuda.wgmma"


@pytest.mark.parametrize("swizzle", [False, True])
def test_stage_tile_copies_fill_each_tile_once_without_bank_conflicts(swizzle):
    """The 16-byte copies of a stage tile (BM rows x BK) land on distinct chunks covering
    it, each row's chunks within its own 128 bytes, and the 8 copies of a quarter warp
    (consecutive copy indices) in 8 distinct 16-byte bank groups."""
    copies = cuda_wgmma.BM * cuda_wgmma.BK // cuda_wgmma.CORE
    offsets = [cuda_wgmma.tile_offset(c, swizzle) for c in range(copies)]
    assert sorted(offsets) == [c * cuda_wgmma.CORE for c in range(copies)]
    for c, off in enumerate(offsets):
        row = c // 64 * 8 + c % 8
        assert off // cuda_wgmma.BK == row or not swizzle
    for first in range(0, copies, 8):
        banks = {offsets[c] * 2 // 16 % 8 for c in range(first, first + 8)}
        assert len(banks) == 8


def test_sm90a_keeps_the_rest_of_the_target():
    target = cuda_wgmma.sm90a(CUDA)
    assert str(target.attrs["arch"]) == "sm_90a"
    assert int(target.attrs["max_shared_memory_per_block"]) == int(
        CUDA.attrs["max_shared_memory_per_block"])


def test_wgmma_tile_must_divide_the_output_channels():
    spec = _spec(*SPECS[4])  # Cout 72
    assert cuda_wgmma.choose_tile(spec).bn == 72
    wide = make_spec((2, 64, 8, 8), (64, 264, 4, 4), strides=2, padding=1, dtype="float16")
    assert cuda_wgmma.choose_tile(wide).bn == 88
    with pytest.raises(ValueError, match="must divide Cout"):
        cuda_wgmma.wgmma_conv_transpose(spec, cuda_wgmma.WgmmaTile(bn=64))


@pytest.mark.parametrize("name", ["dcgan_128_64_k4s2", "unet_512_256_k2s2"])
def test_build_gives_an_sm90a_wgmma_kernel(name, caplog):
    """Through tvm_deconv.build (bias + ReLU after it: the kernel is opaque, so they stay
    separate kernels): the conv's CUDA source issues wgmma from shared-memory descriptors."""
    spec = zoo.get(name).spec(64, dtype="float16")
    b = relax.Var("b", relax.TensorType((1, spec.out_channels, 1, 1), "float16"))
    mod = transposed_conv_module(spec, extra_args=[b], epilogue=lambda bb, y: bb.emit(
        relax.op.nn.relu(relax.op.add(y, b))))
    with cuda_wgmma.wgmma_kernel(True), caplog.at_level(logging.INFO, "tvm_deconv"):
        ex = tvm_deconv.build(mod, "cuda")
    assert "uses cuda.wgmma" in caplog.text
    sources = [s for s in cuda_sources(ex.mod) if "wgmma.mma_async" in s]
    assert len(sources) == 1
    assert "cp.async.cg.shared.global" in sources[0]
    assert "fence.proxy.async.shared::cta" in sources[0]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH: cannot assemble "
                    "the kernel for sm_90a")
@pytest.mark.parametrize("name, form", [(name, {}) for name in WGMMA_ZOO] + [
    ("pose_2048_256_k4s2", form) for form in (
        {"swizzle": True}, {"warp_specialized": True},
        {"swizzle": True, "warp_specialized": True, "tiled_copy": True})])
def test_wgmma_zoo_kernels_assemble_without_spills_or_serialized_wgmma(name, form, tmp_path):
    """ptxas (sm_90a) takes each zoo kernel (default tile, and pose 2048->256 in the other
    forms) with no local-memory spills and without serializing its wgmmas (C7514: other
    instructions touching the accumulators between a wgmma and its wait)."""
    spec = zoo.get(name).spec(64, dtype="float16")
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


FORMS = {"sync": {}, "sync_swizzled": {"swizzle": True}, "ws": {"warp_specialized": True},
         "ws_swizzled_tiled_copy": {"warp_specialized": True, "swizzle": True,
                                    "tiled_copy": True}}


def _gpu_error(spec, seed, form, monkeypatch):
    """Relative error of the build's output (the wgmma kernel switched on, its tile in
    ``form``) against float64; fails if the build did not run the wgmma kernel."""
    choose = cuda_wgmma.choose_tile
    monkeypatch.setattr(cuda_wgmma, "choose_tile",
                        lambda s: dataclasses.replace(choose(s), **FORMS[form]))
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
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("case", SPECS, ids=_id)
def test_gpu_wgmma_kernel(case, form, monkeypatch):
    """Random specs (1-d and 2-d, strides 2, 3 and 8, BN from 24 to 128) in every form of the
    kernel: the default tile, the swizzled tiles, the warp-specialized loop, the tiled copy."""
    assert _gpu_error(_spec(*case), 5, form, monkeypatch) < 2e-3


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("name", WGMMA_ZOO)
def test_gpu_wgmma_zoo_layer(name, monkeypatch):
    assert _gpu_error(zoo.get(name).spec(64, dtype="float16"), 6, "sync", monkeypatch) < 2e-3
