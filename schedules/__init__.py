"""Per-target schedules of the decomposed computes (installed as ``tvm_deconv.schedules``).

Importing this package registers the built-in implementations with
:mod:`tvm_deconv.strategy`.
"""

from tvm_deconv.compute import decomposed_conv_transpose, decomposed_pack
from tvm_deconv.dilated import untangled_dilated_conv
from tvm_deconv.strategy import CONV_TRANSPOSE, DILATED_CONV, Implementation, register

from . import arm
from .common import supports_dtype
from .cuda import (cuda_compute, cuda_pack, schedule_cuda, schedule_cuda_space, supports_cuda,
                   workspace_bytes as cuda_workspace_bytes)
from .cuda_padded_taps import (padded_taps_compute, padded_taps_pack, supports_cuda_padded_taps,
                               workspace_bytes as padded_taps_workspace_bytes)
from . import cuda_wgmma
from .cuda_direct import (cuda_direct_compute, direct_space_compute, schedule_cuda_direct,
                          schedule_direct_space, supports_cuda_direct)
from .generic_cpu import schedule_generic_cpu
from .single_pixel import (gpu_single_pixel_compute, schedule_single_pixel, single_pixel_compute,
                           supports_gpu_single_pixel, supports_single_pixel)
from .x86 import schedule_x86, supports_x86, workspace_bytes, x86_compute, x86_pack
from . import x86_dilated, x86_positions
from . import x86_interleaved, x86_phase_tile
from .x86_space import schedule_x86_space, x86_space_compute

# Transposed convolution.
# AArch64 NEON: the x86 pack/compute/schedule with NEON vector and register-tile sizes
# (schedules/arm.py); 32-bit ARM and non-float32 calls fall through to cpu.generic.
register(CONV_TRANSPOSE, Implementation(
    name="arm_cpu.decomposed", target_keys=("arm_cpu",), priority=20, compute=arm.neon_compute,
    schedule=arm.schedule_neon, pack=arm.neon_pack, predicate=arm.supports_neon,
    workspace=arm.neon_workspace_bytes))
register(CONV_TRANSPOSE, Implementation(
    name="cpu.single_pixel", target_keys=("cpu",), priority=15,
    compute=single_pixel_compute, schedule=schedule_single_pixel,
    predicate=supports_single_pixel))
# Every phase one output per input position (out = stride x in: DCGAN, CycleGAN, U-Net,
# HiFi-GAN) on AVX-512: the channels-first input read as it is, every phase of an output patch
# in one register tile, the phases interleaved in registers (schedules/x86_phase_tile.py).
register(CONV_TRANSPOSE, Implementation(
    name="x86.phase_tile", target_keys=("cpu",), priority=13,
    compute=x86_phase_tile.phase_tile_compute, schedule=x86_phase_tile.schedule_phase_tile,
    pack=x86_phase_tile.phase_tile_pack, predicate=x86_phase_tile.supports_x86_phase_tile,
    workspace=x86_phase_tile.workspace_bytes))
# Strided convs with many output channels on AVX-512: phase GEMMs and one interleave, fused
# into the interleave's parallel tasks (schedules/x86_interleaved.py); the same tuning space
# as x86.decomposed.
register(CONV_TRANSPOSE, Implementation(
    name="x86.interleaved", target_keys=("cpu",), priority=12,
    compute=x86_interleaved.interleaved_compute, schedule=x86_interleaved.schedule_x86_interleaved,
    pack=x86_pack, space_compute=x86_space_compute, space=schedule_x86_space,
    predicate=x86_interleaved.supports_x86_interleaved,
    workspace=x86_interleaved.workspace_bytes))
register(CONV_TRANSPOSE, Implementation(
    name="x86.decomposed", target_keys=("cpu",), priority=10, compute=x86_compute,
    schedule=schedule_x86, pack=x86_pack, space_compute=x86_space_compute,
    space=schedule_x86_space, predicate=supports_x86, workspace=workspace_bytes))
register(CONV_TRANSPOSE, Implementation(
    name="cpu.generic", target_keys=("cpu",), priority=0,
    compute=decomposed_conv_transpose, schedule=schedule_generic_cpu, predicate=supports_dtype))
# Few output channels per group (FSRCNN 56->1, DCGAN 64->3): a direct kernel, every phase of
# a dense output patch per thread (schedules/cuda_direct.py); the implicit GEMM's channel tile
# would be mostly idle there.  Its tuning space is a list of tiles, one kernel each.
register(CONV_TRANSPOSE, Implementation(
    name="cuda.direct", target_keys=("cuda", "gpu"), priority=30,
    compute=cuda_direct_compute, schedule=schedule_cuda_direct, pack=decomposed_pack,
    space_compute=direct_space_compute, space=schedule_direct_space,
    predicate=supports_cuda_direct))
# A 1-pixel input (DCGAN's projection) is a plain GEMM / GEMV: dlight's rules schedule it.
register(CONV_TRANSPOSE, Implementation(
    name="gpu.single_pixel", target_keys=("cuda", "gpu"), priority=25,
    compute=gpu_single_pixel_compute, schedule=None, predicate=supports_gpu_single_pixel))
# Ragged layers with zero taps added, so the phase-batched kernel (and for float16 the tensor
# cores) takes them (schedules/cuda_padded_taps.py).
register(CONV_TRANSPOSE, Implementation(
    name="cuda.padded_taps", target_keys=("cuda", "gpu"), priority=22,
    compute=padded_taps_compute, schedule=schedule_cuda, pack=padded_taps_pack,
    space_compute=padded_taps_compute, space=schedule_cuda_space,
    predicate=supports_cuda_padded_taps, workspace=padded_taps_workspace_bytes))
# float16 and float32 (3xTF32) layers on Hopper whose phases are of one size: a hand-laid
# wgmma kernel (schedules/cuda_wgmma.py), compiled for sm_90a; ragged phases (CycleGAN's k3 s2)
# as exact GEMMs of their own lengths, before cuda.padded_taps' zero taps.
register(CONV_TRANSPOSE, Implementation(
    name="cuda.wgmma", target_keys=("cuda",), priority=23,
    compute=cuda_wgmma.wgmma_conv_transpose, pack=cuda_wgmma.wgmma_pack,
    predicate=cuda_wgmma.supports_cuda_wgmma, workspace=cuda_wgmma.workspace_bytes,
    scheduled=True, kernel_target=cuda_wgmma.sm90a))
# Tiled implicit GEMM per phase (schedules/cuda.py); dlight schedules only what is left.
register(CONV_TRANSPOSE, Implementation(
    name="cuda.decomposed", target_keys=("cuda", "gpu"), priority=20,
    compute=cuda_compute, schedule=schedule_cuda, pack=cuda_pack, space_compute=cuda_compute,
    space=schedule_cuda_space, predicate=supports_cuda, workspace=cuda_workspace_bytes))

# Dilated convolution, untangled into dense per-phase convolutions.
# Packed weights + register tiles (schedules/x86_dilated.py), x86 and AArch64 NEON sizes;
# depthwise / few channels per group and non-float32 calls fall through to cpu.dilated.
register(DILATED_CONV, Implementation(
    name="arm_cpu.dilated", target_keys=("arm_cpu",), priority=20,
    compute=x86_dilated.neon_dilated_compute, schedule=x86_dilated.schedule_dilated,
    pack=x86_dilated.neon_dilated_pack, predicate=x86_dilated.supports_neon_dilated))
# Stride-1 1-d convs into NCW outputs (WaveNet, HiFi-GAN): lanes over output positions
# (schedules/x86_positions.py), no channels-last copy, whole-vector stores.
register(DILATED_CONV, Implementation(
    name="x86.conv1d_positions", target_keys=("cpu",), priority=15,
    compute=x86_positions.positions_compute, schedule=x86_positions.schedule_positions,
    pack=x86_positions.positions_pack, predicate=x86_positions.supports_x86_positions))
register(DILATED_CONV, Implementation(
    name="x86.dilated", target_keys=("cpu",), priority=10,
    compute=x86_dilated.dilated_compute, schedule=x86_dilated.schedule_dilated,
    pack=x86_dilated.dilated_pack, predicate=x86_dilated.supports_x86_dilated))
register(DILATED_CONV, Implementation(
    name="cpu.dilated", target_keys=("cpu",), priority=0,
    compute=untangled_dilated_conv, schedule=schedule_generic_cpu, predicate=supports_dtype))
register(DILATED_CONV, Implementation(
    name="gpu.dilated", target_keys=("gpu",), priority=0,
    compute=untangled_dilated_conv, schedule=None, predicate=supports_dtype))
