"""The x86 default schedule (no tuning): register-blocked, vectorised, packed weights.

Compute (:func:`x86_compute`), per output phase with taps, is a small GEMM
``acc[oc, q] += dpad[ic, q + in_start - j*in_step] * w[ic, tap(j), oc]`` over a *dense*
per-phase accumulator ``acc_<phase>``; a write-back block per phase copies it to the strided
output positions ``o = q*s + r`` (it is the only block touching the interleaved output, so
the register tile never covers another phase's elements: the "one-phase tile + cache_write"
corruption of the prototype cannot happen).  Two vector modes, picked from the spec and the
target's vector width ``L``:

* ``oc`` (``out_channels/groups >= L/2``): lanes are ``L`` output channels.  Packed weight
  ``[G, ceil(Cog/L), Icg*prod(k), L]``, each phase's sub-kernel contiguous (``ic`` outer,
  taps inner); data is repacked once per call to a zero-padded channels-last copy so the
  sub-kernel taps need no bounds checks.  Register tile: ``OBT`` channel vectors x ``CW``
  output columns.
* ``w`` (few output channels: FSRCNN, RGB heads, depthwise): lanes are ``L`` output columns
  of one phase.  Packed weight ``[G, Icg*prod(k), Cog]``, zero-padded channels-first data.
  Register tile: ``OT`` channels x ``RH`` rows x ``V`` column vectors.

Ragged phases (``k % s != 0``) each get their own block with their own tap count, so no MAC
is spent on padding taps; the per-phase sub-kernels are concatenated in the packed weight
(its size equals the original weight's, up to channel padding to ``L``).  Phase arithmetic
comes from :mod:`tvm_deconv.plan` only.  Tapless phases (``k < s``) get ``zero_*`` blocks.

On 16-lane (AVX-512) targets, strided ``oc``-mode calls go to :mod:`.x86_interleaved` (phase
accumulators per parallel task, interleaved into the output by the same task) instead: there
the strided scalar stores of this kernel's write-back cost more than that interleave.

The vector width and register-tile sizes come from a :class:`VectorISA`: :data:`X86` (width
from the target's features, 16 vector registers) by default; :mod:`.arm` passes :data:`NEON`
(128-bit, 32 registers) to the same pack / compute / schedule.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Optional

from tvm import s_tir, tirx
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as T
from tvm.target import Target

from tvm_deconv.compute import (INDEX_DTYPE, OUT_ELEMWISE_FUSABLE, PHASE_ANNOTATION,
                                 flat_index, pack_signature)
from tvm_deconv.plan import ConvTransposeSpec, TransposedConvPlan, make_plan
from tvm_deconv.targets import resolve_target

from .common import CPU_TILE_SCOPE, store_where

ROLE = "tvm_deconv.x86.role"   # "pad" | "conv" | "wb" | "zero"
TILE = "tvm_deconv.x86.tile"   # conv blocks: the register tile the schedule applies
CHANNELS_LAST = "tvm_deconv.x86.channels_last"  # pad block: it transposes NC.. to N..C
L2_WEIGHT_BYTES = 256 * 1024  # a phase sub-kernel this small stays in L2
BATCH_CHUNK_BYTES = 4 * 1024 * 1024  # padded input all phases re-read: a last-level cache share
OC_TILE_COLS = 6               # oc mode, 2 channel vectors: output columns per tile
ACC_BUDGET = 12                # w mode: accumulator vector registers of a tile (32 registers)
# w mode with 16 vector registers (AVX2): 12 accumulators + the 9-81 broadcast weights of the
# unrolled taps spilled 32 accumulators per input channel (FSRCNN x3); 8 measured 1.12-1.16x
# faster on FSRCNN x2 / x3 and 1.09-1.32x on DCGAN 64->3, side by side on a Zen 4 (AVX2).
AVX2_W_ACCUMULATORS = 8
PAD_ROW_BLOCK = 64             # 1-d channels-last copy: positions per parallel step


@dataclass(frozen=True)
class VectorISA:
    """Vector width and register-tile sizes of a CPU family.

    ``bits=None`` reads the width from the target's features (:func:`vector_lanes`); a fixed
    width makes the layout independent of the current target (cross-compiling, tuning).
    """

    name: str                  # used in the PrimFunc names
    bits: Optional[int]        # vector width, or None: from the target's features
    oc_cols: tuple             # oc mode: (columns per tile with OBT == i+1) ...
    oc_max_vectors: int        # oc mode: most channel vectors (OBT) per tile
    acc_budget: int            # w mode: accumulator vector registers of a tile

    def obt(self, ob: int) -> int:
        """Channel vectors per oc-mode tile: the most (a power of two) dividing ``ob``."""
        best, obt = 1, 2
        while obt <= self.oc_max_vectors:
            if ob % obt == 0:
                best = obt
            obt *= 2
        return best

    def w_accumulators(self, lanes: int, dtype: str) -> int:
        """w mode: accumulator vector registers of a tile (fewer with AVX2's 16 registers)."""
        if self.bits is None and lanes * itemsize(dtype) * 8 < 512:
            return min(self.acc_budget, AVX2_W_ACCUMULATORS)
        return self.acc_budget

    def cols(self, obt: int) -> int:
        return self.oc_cols[obt - 1]

    @property
    def accumulators(self) -> int:
        """Accumulator vector registers of the largest oc-mode tile."""
        return max(i * cols for i, cols in enumerate(self.oc_cols, start=1))


# x86: 2 channel vectors x 6 columns: 12 accumulators + 2 weight vectors + 1 broadcast = 15 of
# the 16 ymm registers (the FMA loop order and serial reuse taps in _conv_blocks keep LLVM from
# spilling; before those, 2x6 spilled and ran 1.2-1.7x slower than 2x4).  2x6 measured 1.1-1.4x
# faster than 2x4 on CycleGAN and the pose heads, the same elsewhere.
X86 = VectorISA("x86", None, oc_cols=(8, OC_TILE_COLS), oc_max_vectors=2,
                acc_budget=ACC_BUDGET)
# AVX-512: 32 vector registers.  The dilated / ordinary-conv kernel (x86_dilated) takes up to
# 12 positions per tile with 2 channel vectors (24 accumulators; its FMAs broadcast the input
# from memory): side by side on an Ice Lake server 1.06-1.26x faster than 2x6 on ASPP and
# pix2pix's / CycleGAN's convs, WaveNet the same.  The transposed-conv kernel keeps X86: 2x12
# there measured 0.82-1.13x on the zoo (FSRCNN's w-mode tile slower).
X86_AVX512 = VectorISA("x86", None, oc_cols=(8, 12), oc_max_vectors=2, acc_budget=ACC_BUDGET)
# AArch64 NEON: 128-bit (4 fp32 lanes), 32 vector registers.  oc mode: 4 channel vectors x 5
# columns = 20 accumulators + 4 weight vectors + broadcasts (fmla by element) stay within 32
# (4x6 spills q registers to the stack in the cortex-a72 assembly; 4x5 does not).  w mode:
# 8 accumulators (e.g. 4 rows x 2 column vectors); 12 (6 rows x 2 vectors, the x86 choice)
# spills ~350 q registers on FSRCNN's 9x9 kernel because the unrolled ky taps keep input rows
# live.  Chosen from the assembly, not timed on a board yet.
NEON = VectorISA("neon", 128, oc_cols=(8, 8, 5, 5), oc_max_vectors=4, acc_budget=8)


def _i64(value: int) -> tirx.IntImm:
    return tirx.IntImm(INDEX_DTYPE, int(value))


def _index(layout: str, by_axis: dict) -> list:
    return [by_axis[a] for a in layout]


def itemsize(dtype: str) -> int:
    """Bytes per element of a float dtype (anything else counted as float32)."""
    return {"float32": 4, "float16": 2, "float64": 8}.get(dtype, 4)


def lanes_of(bits: int, dtype: str) -> int:
    """Elements of ``dtype`` in a ``bits``-wide vector register."""
    return max(1, bits // (8 * itemsize(dtype)))


def vector_lanes(target: Optional[Target] = None, dtype: str = "float32") -> int:
    """float32 lanes of the target's widest vector unit (from its features, not its name).

    ``llvm_get_vector_width`` answers 512 even on AVX2-only CPUs, so read the features.
    """
    if target is None:
        target = Target.current(allow_none=True) or resolve_target("llvm")
    bits = 128
    if is_aarch64(target):  # NEON (SVE lengths are not known at compile time)
        return lanes_of(bits, dtype)
    try:
        has = tirx_features(target)
        if has("avx512f"):
            bits = 512
        elif has("avx") or has("avx2"):
            bits = 256
    except Exception:  # pylint: disable=broad-except
        bits = 128
    return lanes_of(bits, dtype)


def is_aarch64(target: Target) -> bool:
    """An LLVM target generating AArch64 code (NEON is part of the base ISA)."""
    if target.kind.name != "llvm":
        return False
    if bool(target.attrs.get("feature.is_aarch64", False)):
        return True
    return str(target.attrs.get("mtriple", "")).startswith(("aarch64", "arm64"))


def tirx_features(target: Target):
    from tvm.target import codegen  # pylint: disable=import-outside-toplevel

    return lambda feature: bool(codegen.target_has_features(feature, target))


# ---------------------------------------------------------------------------------------------
# Layout: every size the pack, the compute and the schedule must agree on.


def _best_tile(extent: int, cap: int) -> int:
    """Tile size <= cap for an axis of ``extent``: few padded (wasted) columns, big tiles."""
    cap = max(1, min(cap, extent))
    best, best_score = 1, -1.0
    for c in range(1, cap + 1):
        padded = -(-extent // c) * c
        score = (extent / padded) * (c / (c + 2.0))
        if score > best_score + 1e-9:
            best, best_score = c, score
    return best


@dataclass(frozen=True)
class X86Layout:
    mode: str            # "oc" or "w"
    lanes: int           # L
    groups: int
    in_per_group: int
    out_per_group: int
    ob: int              # oc mode: channel blocks of L (padded); w mode: == out_per_group
    tile: tuple          # oc: (OBT, CW); w: (OT, RH, V, L)
    lo: tuple            # zero padding before, per spatial axis
    hi: tuple            # zero padding after, per spatial axis
    tap_offsets: dict    # phase index -> offset of its sub-kernel in the packed tap axis
    total_taps: int      # Icg * prod(kernel)

    def padded_extent(self, axis: int, ndim: int, extent: int) -> int:
        """Per-phase q extent the conv block iterates (tiled axes rounded up to the tile)."""
        if self.mode == "oc":
            step = self.tile[1] if axis == ndim - 1 else 1
        else:
            step = (self.tile[2] * self.lanes if axis == ndim - 1
                    else self.tile[1] if axis == ndim - 2 else 1)
        return -(-extent // step) * step

    def packed_index(self, g, ob, tap, lane) -> list:
        """oc mode: where channel vector ``ob``'s lane of packed tap ``tap`` lives.  The tile's
        ``OBT`` channel vectors of one tap are adjacent (one 64-byte line for 2 x 8 fp32), so
        a tile streams one weight sequence, not ``OBT`` sequences a whole sub-kernel apart
        (which share L1 sets)."""
        obt = _i64(self.tile[0])
        return [g, tirx.floordiv(ob, obt), tap, tirx.floormod(ob, obt), lane]

    @property
    def packed_shape(self) -> tuple:
        if self.mode == "oc":
            obt = self.tile[0]
            return (self.groups, self.ob // obt, self.total_taps, obt, self.lanes)
        return (self.groups, self.total_taps, self.out_per_group)


def x86_layout(spec: ConvTransposeSpec, lanes: Optional[int] = None,
               isa: Optional[VectorISA] = None) -> X86Layout:
    plan = make_plan(spec)
    isa = isa or X86
    if lanes is None and isa.bits is not None:
        lanes = lanes_of(isa.bits, spec.dtype)
    lanes = lanes or vector_lanes(dtype=spec.dtype)
    nd = spec.ndim
    cog = spec.out_per_group
    # Widest phase extents per axis decide the tiles.
    ext = [max(p.extent for p in ax.phases) for ax in plan.axes]
    if 2 * cog >= lanes:
        mode = "oc"
        ob = -(-cog // lanes)
        obt = isa.obt(ob)   # x86: 2 if ob is even, else 1
        cw = _best_tile(ext[-1], isa.cols(obt))
        tile = (obt, cw)
    else:
        mode = "w"
        ob = cog
        ot = max(d for d in range(1, min(cog, 4) + 1) if cog % d == 0)
        v = 2 if ext[-1] >= 2 * lanes and ot <= 3 else 1
        budget = isa.w_accumulators(lanes, spec.dtype)
        rh = _best_tile(ext[-2], max(1, budget // (ot * v))) if nd >= 2 else 1
        tile = (ot, rh, v, lanes)
    lay = X86Layout(mode, lanes, spec.groups, spec.in_per_group, cog, ob, tile, (), (), {}, 0)
    pads = [ax.input_pads(lambda ap, a=a: lay.padded_extent(a, nd, ap.extent))
            for a, ax in enumerate(plan.axes)]
    offsets, total = plan.tap_offsets()
    return X86Layout(mode, lanes, spec.groups, spec.in_per_group, cog, ob, tile,
                     tuple(lo for lo, _ in pads), tuple(hi for _, hi in pads),
                     {k: spec.in_per_group * v for k, v in offsets.items()},
                     spec.in_per_group * total)


# ---------------------------------------------------------------------------------------------
# Pack: weight (any kernel layout) -> packed weight.


def x86_pack(spec: ConvTransposeSpec, isa: Optional[VectorISA] = None) -> tirx.PrimFunc:
    """PrimFunc ``(weight, packed_weight)``; FoldConstant runs it at compile time."""
    plan, lay = make_plan(spec), x86_layout(spec, isa=isa)
    nd, sp = spec.ndim, spec.spatial_axes
    with IRBuilder() as builder:
        with T.prim_func(s_tir=True):
            weight, packed = pack_signature(f"{(isa or X86).name}_pack_weight", spec,
                                            lay.packed_shape)
            for phase in plan.phases():
                if not phase.has_taps:
                    continue
                taps = phase.num_taps
                prod_t = math.prod(taps)
                if lay.mode == "oc":
                    extents = [lay.groups, lay.ob, lay.in_per_group] + list(taps) + [lay.lanes]
                else:
                    extents = [lay.groups, lay.in_per_group] + list(taps) + [lay.out_per_group]
                with T.grid(*[_i64(e) for e in extents]) as loops:
                    with T.sblock("pack_" + phase.name):
                        it = T.axis.remap("S" * len(extents), loops, dtype=INDEX_DTYPE)
                        if lay.mode == "oc":
                            g, ob, ric, js, l = it[0], it[1], it[2], it[3:3 + nd], it[-1]
                            oc = ob * _i64(lay.lanes) + l
                        else:
                            g, ric, js, oc = it[0], it[1], it[2:2 + nd], it[-1]
                        tap = _i64(lay.tap_offsets[phase.index]) + ric * _i64(prod_t) + flat_index(
                            js, taps)
                        kidx = {a: _i64(ap.tap_start) + j * _i64(ap.tap_step)
                                for a, ap, j in zip(sp, phase.axes, js)}
                        ocl = tirx.min(oc, _i64(lay.out_per_group - 1))
                        kidx.update(I=g * _i64(lay.in_per_group) + ric, O=ocl)
                        val = weight[tuple(_index(spec.kernel_layout, kidx))]
                        if lay.mode == "oc":
                            if lay.ob * lay.lanes != lay.out_per_group:
                                val = tirx.if_then_else(oc < _i64(lay.out_per_group), val,
                                                        tirx.const(0, spec.dtype))
                            T.buffer_store(packed, val, lay.packed_index(g, ob, tap, l))
                        else:
                            T.buffer_store(packed, val, [g, tap, oc])
    return builder.get()


# ---------------------------------------------------------------------------------------------
# Compute: (data, packed_weight, out).


def x86_compute(spec: ConvTransposeSpec, isa: Optional[VectorISA] = None) -> tirx.PrimFunc:
    plan, lay = make_plan(spec), x86_layout(spec, isa=isa)
    nd = spec.ndim
    with IRBuilder() as builder:
        with T.prim_func(s_tir=True):
            T.func_name(f"conv{nd}d_transpose_{(isa or X86).name}")
            T.func_attr({"tirx.noalias": True, "op_pattern": OUT_ELEMWISE_FUSABLE})
            phases = [p for p in plan.phases() if not p.is_empty]
            chunk = batch_chunk(spec, plan, lay)
            chunked = chunk < spec.batch
            data, packed, out, dpad = compute_args_and_padded_data(
                spec, lay, lay.packed_shape, pad=not chunked)
            for phase in phases:
                if not phase.has_taps:
                    _zero_block(spec, phase, out)
            with (T.serial(_i64(spec.batch // chunk)) if chunked
                  else contextlib.nullcontext()) as chunk_index:
                batch_chunk_of = (chunk_index, chunk) if chunked else None
                if chunked:
                    _pad_block(spec, lay, data, dpad, [int(d) for d in dpad.shape],
                               batch_chunk_of)
                for phase in phases:
                    if phase.has_taps:
                        _conv_blocks(plan, lay, phase, dpad, packed, out, batch_chunk_of)
    return builder.get()


def batch_chunk(spec: ConvTransposeSpec, plan: TransposedConvPlan, lay: X86Layout) -> int:
    """Images per pass of all phases over the batch.  Every phase reads the whole padded
    input; a batch whose padded copy outgrows the last-level cache share
    (:data:`BATCH_CHUNK_BYTES`) then streamed it from memory once per phase (FSRCNN x3, 9
    phases, batch 8: 3x the time per image of batch 4), so such batches go through the
    phases a chunk of images at a time — unless a phase puts its channel tiles outside the
    batch (:func:`tile_order`), whose weights would then stream once per chunk."""
    if any(_weights_outside_batch(phase_weight_bytes(spec, lay, phase), image_bytes(spec))
           for phase in plan.phases() if phase.has_taps):
        return spec.batch
    return images_per_chunk(spec.batch, padded_image_elements(spec, lay) * itemsize(spec.dtype),
                            BATCH_CHUNK_BYTES)


def images_per_chunk(batch: int, image: int, budget: int) -> int:
    """Images per chunk of a batch of ``image`` bytes each: the whole batch where it fits
    ``budget``, else the most images that fit it (at least one) and divide the batch."""
    if batch * image <= budget:
        return batch
    fits = max(1, budget // image)
    return max(d for d in range(1, batch + 1) if batch % d == 0 and d <= fits)


def padded_image_elements(spec: ConvTransposeSpec, lay: X86Layout) -> int:
    """Elements of one image's zero-padded data copy (channels-last stride in oc mode)."""
    channels = (channels_last_stride(spec.in_channels, spec.dtype) if lay.mode == "oc"
                else spec.in_channels)
    return channels * math.prod(n + lo + hi for n, lo, hi in zip(spec.in_size, lay.lo, lay.hi))


def image_bytes(spec: ConvTransposeSpec) -> int:
    """Bytes of one image of the input."""
    return spec.in_channels * math.prod(spec.in_size) * itemsize(spec.dtype)


def phase_weight_bytes(spec: ConvTransposeSpec, lay: X86Layout, phase) -> int:
    """Bytes of one phase's packed sub-kernel (one group)."""
    return (lay.in_per_group * math.prod(phase.num_taps) * lay.ob
            * (lay.lanes if lay.mode == "oc" else 1) * itemsize(spec.dtype))


def compute_args_and_padded_data(spec, lay, packed_shape, pad: bool = True) -> tuple:
    """Inside a PrimFunc being built: the ``(data, packed_weight, out)`` arguments and the
    zero-padded data copy (channels-last in oc mode) with its ``pad_data`` block (``pad``
    False: the caller emits it, see :func:`_pad_block`).  ``lay``: an :class:`X86Layout` or
    any layout with ``mode``, ``lo`` and ``hi`` (the dilated one)."""
    data = T.arg("data", T.buffer([_i64(d) for d in spec.data_shape], spec.dtype))
    packed = T.arg("packed_weight", T.buffer([_i64(d) for d in packed_shape], spec.dtype))
    out = T.arg("out", T.buffer([_i64(d) for d in spec.out_shape], spec.out_dtype))
    psizes = [n + lo + hi for n, lo, hi in zip(spec.in_size, lay.lo, lay.hi)]
    if lay.mode == "oc":
        dshape = [spec.batch] + psizes + [channels_last_stride(spec.in_channels, spec.dtype)]
    else:
        dshape = [spec.batch, spec.in_channels] + psizes
    dpad = T.sblock_alloc_buffer([_i64(d) for d in dshape], spec.dtype)
    if pad:
        _pad_block(spec, lay, data, dpad, dshape)
    return data, packed, out, dpad


def channels_last_stride(channels: int, dtype: str) -> int:
    """Elements between neighbouring pixels of the channels-last data copy.  A multiple of
    1 KiB puts the pixels a register tile reads (and the rows of its taps) into the same few
    L1 sets, which thrash: 1024 channels ran at 10 GFLOP/s.  Such strides get one extra
    cache line (its channels are zeros, never read)."""
    item = itemsize(dtype)
    return channels + (64 // item if (channels * item) % 1024 == 0 else 0)


def _pad_block(spec, lay, data, dpad, dshape, batch_chunk=None) -> None:
    """The ``pad_data`` block; ``batch_chunk`` = ``(loop var, images)``: that chunk's images
    only (inside the loop over chunks, so each chunk's copy is still in cache for its
    phases)."""
    nd = spec.ndim
    extents = list(dshape) if batch_chunk is None else [batch_chunk[1]] + list(dshape[1:])
    with T.grid(*[_i64(e) for e in extents]) as loops:
        with T.sblock("pad_data"):
            if batch_chunk is None:
                it = T.axis.remap("S" * len(dshape), loops, dtype=INDEX_DTYPE)
            else:
                first = batch_chunk[0] * _i64(batch_chunk[1]) + loops[0]
                it = [T.axis.spatial(_i64(dshape[0]), first, dtype=INDEX_DTYPE)] + list(
                    T.axis.remap("S" * (len(dshape) - 1), loops[1:], dtype=INDEX_DTYPE))
            T.sblock_attr({PHASE_ANNOTATION: [], ROLE: "pad",
                           CHANNELS_LAST: lay.mode == "oc"})
            if lay.mode == "oc":
                n, ps, c = it[0], it[1:1 + nd], it[-1]
            else:
                n, c, ps = it[0], it[1], it[2:]
            guards, idx = [], {}
            for a, p, lo, hi, size in zip(spec.spatial_axes, ps, lay.lo, lay.hi, spec.in_size):
                idx[a] = p - _i64(lo)
                if lo:
                    guards.append(p >= _i64(lo))
                if hi:
                    guards.append(p < _i64(lo + size))
            if dshape[-1] != spec.in_channels and lay.mode == "oc":  # the stride's extra line
                guards.append(c < _i64(spec.in_channels))
                c = tirx.min(c, _i64(spec.in_channels - 1))
            idx.update(N=n, C=c)
            # Clamp the read so the region analysis never sees an out-of-range access.
            for a, size, lo, hi in zip(spec.spatial_axes, spec.in_size, lay.lo, lay.hi):
                if lo or hi:
                    idx[a] = tirx.max(tirx.min(idx[a], _i64(size - 1)), _i64(0))
            val = data[tuple(_index(spec.data_layout, idx))]
            if guards:
                val = tirx.if_then_else(tirx.all(*guards), val, tirx.const(0, spec.dtype))
            T.buffer_store(dpad, val, list(it))


def _tiles(lay: X86Layout, nd: int, sshape: list) -> list:
    """Per accumulator dim: the inner loops ``[(extent, kind, multiplier)]`` of its tile."""
    tiles = [[] for _ in sshape]
    if lay.mode == "oc":
        obt, cw = lay.tile
        tiles[2] = [(obt, "unroll", 1)]
        tiles[2 + nd] = [(cw, "unroll", 1)]
        tiles[3 + nd] = [(lay.lanes, "vector", 1)]
    else:
        ot, rh, v, lanes = lay.tile
        tiles[2] = [(ot, "unroll", 1)]
        if nd >= 2:
            tiles[1 + nd] = [(rh, "unroll", 1)]
        tiles[2 + nd] = [(v, "unroll", lanes), (lanes, "vector", 1)]
    return tiles


def _tap_reuse_axes(lay: X86Layout, nd: int) -> set:
    """Spatial axes whose register tile spans several scalar output positions."""
    if lay.mode == "oc":
        return {nd - 1} if lay.tile[1] > 1 else set()
    # w mode: rows reuse input rows across ky taps too, but a serial ky loop costs a 32-bit
    # address computation + sign extension per load (NarrowDataType), which measured slower
    # (FSRCNN 2x) than the spills of the fully unrolled taps.
    return set()


def _inner_loops(tiles, kinds_for_vector="vector"):
    loops = []
    for d, tile in enumerate(tiles):
        for extent, kind, mult in tile:
            loops.append((d, extent, kind if kind != "vector" else kinds_for_vector, mult))
    # the vector loop innermost
    loops.sort(key=lambda x: x[2] == "vector")
    return loops


def _for(extent: int, kind: str):
    if kind == "unroll":
        return T.unroll(_i64(extent))
    if kind == "vector":
        return T.vectorized(_i64(extent))
    return T.serial(_i64(extent))


def tile_order(dims: int, weight_bytes: int, image_bytes: int) -> list:
    """Order of the tile dims ``[batch, group, channel tile, spatial...]`` in the fused
    parallel loop (outermost first), from the bytes of a phase's packed sub-kernel and of one
    image's input.  Sub-kernel in L2: channel tiles innermost, so every input patch is read
    once from memory for all output channels.  Otherwise channel tiles go outside the
    spatial tiles, so each weight slice is reused by all of them while it is hot, and, when
    the weights outweigh an image, outside the batch too: with the batch outermost, every
    image streamed all the weights again (pose 2048->256 at batch 16: 1.16x, DCGAN 512->256
    1.06x), while an image that outweighs the weights is better streamed once per channel
    tile from cache than the whole batch from memory (U-Net 512->256 on 32x32: 0.72x)."""
    spatial = list(range(3, dims))
    if weight_bytes <= L2_WEIGHT_BYTES:
        return [0, 1] + spatial + [2]
    if _weights_outside_batch(weight_bytes, image_bytes):
        return [1, 2, 0] + spatial
    return [0, 1, 2] + spatial


def _weights_outside_batch(weight_bytes: int, image_bytes: int) -> bool:
    return weight_bytes > L2_WEIGHT_BYTES and weight_bytes > image_bytes


def _conv_blocks(plan: TransposedConvPlan, lay: X86Layout, phase, dpad, packed, out,
                 batch_chunk=None) -> None:
    """One phase: a register-tiled loop nest, already scheduled (the tile sizes come from
    :func:`x86_layout`).  Under one parallel loop over the tiles: zero the tile of the dense
    accumulator, accumulate over input channels (taps unrolled, vector lanes innermost), then
    copy the tile to this phase's output positions.  ``batch_chunk`` = ``(loop var, images)``
    of an enclosing loop over chunks of the batch: the nest covers that chunk's images only.

    The nest is emitted scheduled because the output buffer has several writers (one per
    phase): ``compute_at``/``parallel`` refuse such scopes once FuseTIR has put an epilogue
    reading that buffer next to them.
    """
    spec = plan.spec
    nd, sp = spec.ndim, spec.spatial_axes
    taps = phase.num_taps
    prod_t = math.prod(taps)
    qext = [lay.padded_extent(a, nd, e) for a, e in enumerate(phase.extent)]
    if lay.mode == "oc":
        sshape = [spec.batch, lay.groups, lay.ob] + qext + [lay.lanes]
    else:
        sshape = [spec.batch, lay.groups, lay.out_per_group] + qext
    acc = T.sblock_alloc_buffer([_i64(d) for d in sshape], spec.out_dtype, scope=CPU_TILE_SCOPE)
    tiles = _tiles(lay, nd, sshape)
    tile_size = [math.prod(e for e, _, _ in t) for t in tiles]
    outer = [d // t for d, t in zip(sshape, tile_size)]
    if batch_chunk is not None:
        outer[0] = batch_chunk[1]
    total = math.prod(outer)
    annot = {PHASE_ANNOTATION: list(phase.index), TILE: list(lay.tile)}

    outer_order = tile_order(len(outer), phase_weight_bytes(spec, lay, phase), image_bytes(spec))

    def coords(fused, inner_vars, loops):
        # Row-major decomposition of the fused tile index (in ``outer_order``), plus the inner
        # tile offsets.
        out_c = [None] * len(outer)
        ords = [outer[d] for d in outer_order]
        strides = [math.prod(ords[i + 1:]) for i in range(len(ords))]
        for i, d in enumerate(outer_order):
            o = fused if i == 0 else tirx.floormod(fused, _i64(strides[i - 1]))
            o = tirx.floordiv(o, _i64(strides[i])) if strides[i] != 1 else o
            if outer[d] == 1:
                o = _i64(0)
            out_c[d] = o * _i64(tile_size[d]) if tile_size[d] != 1 else o
        if batch_chunk is not None:
            out_c[0] = batch_chunk[0] * _i64(batch_chunk[1]) + out_c[0]
        for (d, _, _, mult), var in zip(loops, inner_vars):
            out_c[d] = out_c[d] + (var * _i64(mult) if mult != 1 else var)
        return out_c

    loops_c = _inner_loops(tiles)
    with T.parallel(_i64(0), _i64(total)) if total > 1 else T.serial(_i64(total)) as fused:
        # 1. zero the accumulator tile
        with _nest(loops_c) as ivs:
            with T.sblock(phase.name + "_init"):
                cs = coords(fused, ivs, loops_c)
                vs = [T.axis.spatial(_i64(e), c, dtype=INDEX_DTYPE) for e, c in zip(sshape, cs)]
                T.sblock_attr(dict(annot, **{ROLE: "init"}))
                T.buffer_store(acc, tirx.const(0, spec.out_dtype), vs)
        # 2. accumulate
        # The channel-tile loop goes inside the column loops: each broadcast input element
        # then meets every weight vector at once, so only one broadcast is live (a 2x6 tile:
        # 12 accumulators + 2 weights + 1 broadcast fit the 16 ymm registers; with the
        # channels outer, the 6 broadcasts stay live across both weight vectors and spill).
        fma_loops = ([lp for lp in loops_c if lp[0] != 2 and lp[2] != "vector"]
                     + [lp for lp in loops_c if lp[0] == 2]
                     + [lp for lp in loops_c if lp[2] == "vector"])
        # Taps along an axis the register tile spans in scalar steps reuse the same input
        # elements for neighbouring outputs: unrolled, LLVM keeps those loads live across taps
        # and spills them.  Those tap loops stay serial and go outside the input-channel loop
        # (inside it LLVM unrolls them all the same); the other taps are unrolled.
        reuse = _tap_reuse_axes(lay, nd)
        serial_taps = [a for a in range(nd) if a in reuse and taps[a] > 1]
        order = serial_taps + ["ic"] + [a for a in range(nd) if a not in serial_taps]
        red_loops = [(None, lay.in_per_group if a == "ic" else taps[a],
                      "serial" if a == "ic" or a in serial_taps else "unroll", 1)
                     for a in order]
        with _nest(red_loops + fma_loops) as ivs:
            with T.sblock(phase.name):
                rivs, sivs = ivs[:1 + nd], ivs[1 + nd:]
                cs = coords(fused, sivs, fma_loops)
                vs = [T.axis.spatial(_i64(e), c, dtype=INDEX_DTYPE) for e, c in zip(sshape, cs)]
                tap_iv = dict(zip(order, rivs))
                ric = T.axis.reduce(_i64(lay.in_per_group), tap_iv["ic"], dtype=INDEX_DTYPE)
                js = [T.axis.reduce(_i64(taps[a]), tap_iv[a], dtype=INDEX_DTYPE)
                      for a in range(nd)]
                T.sblock_attr(dict(annot, **{ROLE: "conv"}))
                n, g, o, qs = vs[0], vs[1], vs[2], vs[3:3 + nd]
                ic = g * _i64(lay.in_per_group) + ric
                pos = [q + _i64(ap.in_start + lo) - j * _i64(ap.in_step)
                       for q, j, ap, lo in zip(qs, js, phase.axes, lay.lo)]
                tap = _i64(lay.tap_offsets[phase.index]) + ric * _i64(prod_t) + flat_index(js, taps)
                if lay.mode == "oc":
                    x = dpad[tuple([n] + pos + [ic])]
                    w = packed[tuple(lay.packed_index(g, o, tap, vs[3 + nd]))]
                else:
                    x = dpad[tuple([n, ic] + pos)]
                    w = packed[g, tap, o]
                T.buffer_store(acc, acc[tuple(vs)] + x.astype(spec.out_dtype)
                               * w.astype(spec.out_dtype), vs)
        # 3. write back: dense tile -> this phase's strided output positions (no other phase's)
        # oc mode: lanes (output channels) outer, columns inner, so consecutive stores share
        # cache lines of the channels-first output.
        wb_loops = [(d, e, "serial", m) for d, e, _, m in loops_c]
        if lay.mode == "oc":
            wb_loops = [lp for lp in wb_loops if lp[0] == 2] + [
                lp for lp in wb_loops if lp[0] == 3 + nd] + [
                lp for lp in wb_loops if lp[0] not in (2, 3 + nd)]
        with _nest(wb_loops) as ivs:
            with T.sblock("wb_" + phase.name[len("phase_"):]):
                cs = coords(fused, ivs, wb_loops)
                vs = [T.axis.spatial(_i64(e), c, dtype=INDEX_DTYPE) for e, c in zip(sshape, cs)]
                T.sblock_attr(dict(annot, **{ROLE: "wb"}))
                n, g, o, qs = vs[0], vs[1], vs[2], vs[3:3 + nd]
                conds = [q < _i64(e) for q, e, qp in zip(qs, phase.extent, qext) if qp != e]
                if lay.mode == "oc":
                    oc = o * _i64(lay.lanes) + vs[3 + nd]
                    if lay.ob * lay.lanes != lay.out_per_group:
                        conds.append(oc < _i64(lay.out_per_group))
                else:
                    oc = o
                oidx = {a: q * _i64(ap.stride) + _i64(ap.phase)
                        for a, q, ap in zip(sp, qs, phase.axes)}
                oidx.update(N=n, C=g * _i64(lay.out_per_group) + oc)
                oidx = _index(spec.out_layout, oidx)
                T.reads(acc[tuple(vs)])
                T.writes(out[tuple(oidx)])
                store_where(out, acc[tuple(vs)], oidx, conds)


class _nest:
    """``with _nest([(dim, extent, kind, mult), ...]) as vars``: nested annotated loops."""

    def __init__(self, loops):
        self.loops = loops
        self.frames = []

    def __enter__(self):
        ivs = []
        for _, extent, kind, _ in self.loops:
            frame = _for(extent, kind)
            ivs.append(frame.__enter__())
            self.frames.append(frame)
        return ivs

    def __exit__(self, *exc):
        for frame in reversed(self.frames):
            frame.__exit__(*exc)
        return False


def _zero_block(spec: ConvTransposeSpec, phase, out) -> None:
    extents = [spec.batch, spec.out_channels] + list(phase.extent)
    with T.grid(*[_i64(e) for e in extents]) as loops:
        with T.sblock("zero_" + phase.name[len("phase_"):]):
            it = T.axis.remap("S" * len(extents), loops, dtype=INDEX_DTYPE)
            T.sblock_attr({PHASE_ANNOTATION: list(phase.index), ROLE: "zero"})
            oidx = {a: q * _i64(ap.stride) + _i64(ap.phase)
                    for a, ap, q in zip(spec.spatial_axes, phase.axes, it[2:])}
            oidx.update(N=it[0], C=it[1])
            T.buffer_store(out, tirx.const(0, spec.out_dtype), _index(spec.out_layout, oidx))


# ---------------------------------------------------------------------------------------------
# Schedule.


def _role(sch, block) -> Optional[str]:
    role = sch.get(block).annotations.get(ROLE)
    return None if role is None else str(role)


def _parallel_spatial(sch, block, lanes: int, max_fused: Optional[int] = None) -> None:
    """Elementwise / copy blocks: fuse the loops, vectorise a divisible tail, go parallel."""
    iter_vars = sch.get(block).iter_vars
    loops = sch.get_loops(block)
    if len(loops) != len(iter_vars) or any(iv.iter_type != 0 for iv in iter_vars):
        if loops:
            spatial = [lp for lp, iv in zip(loops, iter_vars) if iv.iter_type == 0][:2]
            if len(loops) == len(iter_vars) and spatial:
                sch.parallel(sch.fuse(*spatial) if len(spatial) > 1 else spatial[0])
        return
    extents = [int(iv.dom.extent) for iv in iter_vars]
    if not loops:
        return
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    total = math.prod(extents)
    if total % lanes == 0 and total >= 4 * lanes and sch.get(block).reads is not None:
        outer, inner = sch.split(fused, [None, lanes])
        sch.vectorize(inner)
        sch.parallel(outer)
    else:
        sch.parallel(fused)


def schedule_x86(sch: s_tir.Schedule, target: Target) -> None:
    lanes = vector_lanes(target)
    blocks = list(sch.get_child_blocks(sch.get_sblock("root")))
    for block in blocks:
        role = _role(sch, block)
        if role in ("conv", "wb", "init"):
            continue  # the phase nests are emitted scheduled by x86_compute
        if role == "pad":
            schedule_pad(sch, block, lanes)
        else:  # zero blocks and fused epilogues
            _parallel_spatial(sch, block, lanes)


def schedule_pad(sch: s_tir.Schedule, block, lanes: int) -> None:
    """The padded data copy: parallel over batch x first spatial axis.  A channels-last copy
    is a transpose: walked in its own order it reads one element per channel plane (a page
    apart) per output element, which took longer than the whole conv (7 ms for 6 MB).  It is
    blocked instead: ``lanes`` channels per step, the innermost spatial axis between, so
    each step reads ``lanes`` sequential streams and writes one contiguous vector."""
    extents = [int(iv.dom.extent) for iv in sch.get(block).iter_vars]
    loops = sch.get_loops(block)[-len(extents):]  # (not the loop over batch chunks)
    channels_last = bool(sch.get(block).annotations.get(CHANNELS_LAST, False))
    if channels_last and extents[-1] % lanes == 0 and extents[-1] > lanes:
        if len(loops) == 3:  # 1-d: block the positions, so [n, p] still gives parallel work
            p_outer, p_inner = sch.split(loops[1], [None, PAD_ROW_BLOCK])
            loops = [loops[0], p_outer, p_inner, loops[2]]
        block_channels(sch, loops, lanes)
    sch.parallel(sch.fuse(loops[0], loops[1]))


def block_channels(sch: s_tir.Schedule, loops: list, lanes: int) -> None:
    """IR in: a channels-last copy's loops ``loops`` (innermost: the channels, then the
    innermost spatial axis).  IR out: the channels split by ``lanes``, their outer loop
    above that spatial axis (the transpose blocking of :func:`schedule_pad`)."""
    c_outer, c_inner = sch.split(loops[-1], [None, lanes])
    sch.reorder(c_outer, loops[-2], c_inner)


def supports_x86(spec: ConvTransposeSpec, target: Target) -> Optional[str]:
    if "arm_cpu" in target.keys:
        return "arm_cpu targets get their own schedule"
    if target.kind.name != "llvm":
        return f"target kind {target.kind.name} is not llvm"
    return supports_float32(spec, "x86")


def supports_float32(spec: ConvTransposeSpec, name: str) -> Optional[str]:
    if spec.dtype != "float32" or spec.out_dtype != "float32":
        return f"dtype {spec.dtype}->{spec.out_dtype}: the {name} schedule is float32 only"
    return None


def workspace_bytes(spec: ConvTransposeSpec, lanes: Optional[int] = None,
                    isa: Optional[VectorISA] = None) -> int:
    """Extra memory of this implementation: packed weight minus the weight, plus the padded
    data copy (the per-tile accumulators live in registers / a few KB of stack)."""
    lay = x86_layout(spec, lanes, isa)
    item = itemsize(spec.dtype)
    packed = math.prod(lay.packed_shape) - math.prod(spec.weight_shape)
    return (packed + spec.batch * padded_image_elements(spec, lay)) * item
