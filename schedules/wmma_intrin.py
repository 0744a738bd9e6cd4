"""The five WMMA tensor intrinsics the tensor-core path (:mod:`.cuda_tensorcore`) uses:
16x16x16 float16 A / B loads from shared memory (row-major), float32 accumulator fill, the
f16 x f16 -> f32 ``mma_sync`` and the accumulator store to (dynamic) shared memory.

The accumulator tile lives in ``shared.dyn``, apart from the float16 staging buffers in
``shared``: in one scope TVM's StorageRewrite let the float32 tile reuse a float16 buffer
whose lifetime had ended, and the ``tvm_access_ptr`` of the WMMA store then failed to lower
("element type must match the source buffer").

The same descriptions and implementations as TVM's ``tvm.s_tir.tensor_intrin.cuda``
(``get_wmma_load_intrin`` & co.), registered under names of our own: importing that module
TVMScript-parses every CUDA intrinsic TVM has (and, through its package, the x86 / ARM /
ROCm / Hexagon ones): 20-50 s of CPU per process on this 2-core machine, per build worker
when tuning.  These five parse in well under a second.
"""

from __future__ import annotations

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T
from tvm.tirx import Cast

M = N = K = 16
LOAD_A = "tvm_deconv_wmma_load_16x16x16_f16_a_shared"
LOAD_B = "tvm_deconv_wmma_load_16x16x16_f16_b_shared"
FILL = "tvm_deconv_wmma_fill_16x16x16_f32"
SYNC = "tvm_deconv_wmma_sync_16x16x16_f16f16f32"
STORE = "tvm_deconv_wmma_store_16x16x16_f32_shared_dyn"

_registered = False


def _fragment_index(buffer, stride, m_dim, n_dim):
    """The fragment's index in its fragment array (TVM's get_wmma_fragment_index)."""
    return (buffer.elem_offset // stride // m_dim) * (stride // n_dim) + (
        buffer.elem_offset % stride // n_dim)


def _load(is_b: bool):
    scope = f"wmma.matrix_{'b' if is_b else 'a'}"

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (16, 16), "float16", align=64, offset_factor=16, scope="shared")
        C = T.match_buffer(c, (16, 16), "float16", align=64, offset_factor=16, scope=scope)
        with T.sblock("root"):
            T.reads(A[0:16, 0:16])
            T.writes(C[0:16, 0:16])
            for i, j in T.grid(16, 16):
                with T.sblock("load"):
                    vii, vjj = T.axis.remap("SS", [i, j])
                    C[vii, vjj] = A[vii, vjj]

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, c: T.handle) -> None:
        s1 = T.int32()
        s0 = T.int32()
        d1 = T.int32()
        d0 = T.int32()
        A = T.match_buffer(a, (16, 16), "float16", align=64, offset_factor=16, scope="shared",
                           strides=[s1, s0])
        C = T.match_buffer(c, (16, 16), "float16", align=64, offset_factor=16, scope=scope,
                           strides=[d1, d0])
        with T.sblock("root"):
            T.reads(A[0:16, 0:16])
            T.writes(C[0:16, 0:16])
            T.evaluate(T.tvm_load_matrix_sync(
                C.data, 16, 16, 16, _fragment_index(C, d1, 16, 16),
                A.access_ptr("r", ptr_type="float16"), s1, "row_major", dtype="void"))

    return desc, impl


def _fill():
    @T.prim_func(s_tir=True)
    def desc(c: T.handle) -> None:
        C = T.match_buffer(c, (16, 16), "float32", align=64, offset_factor=16,
                           scope="wmma.accumulator")
        with T.sblock("root"):
            T.reads()
            T.writes(C[0:16, 0:16])
            for i, j in T.grid(16, 16):
                with T.sblock("init"):
                    vii, vjj = T.axis.remap("SS", [i, j])
                    C[vii, vjj] = T.float32(0)

    @T.prim_func(s_tir=True)
    def impl(c: T.handle) -> None:
        d1 = T.int32()
        d0 = T.int32()
        C = T.match_buffer(c, (16, 16), "float32", align=64, offset_factor=16,
                           scope="wmma.accumulator", strides=[d1, d0])
        with T.sblock("root"):
            T.reads()
            T.writes(C[0:16, 0:16])
            T.evaluate(T.tvm_fill_fragment(C.data, 16, 16, 16, _fragment_index(C, d1, 16, 16),
                                           T.float32(0), dtype="void"))

    return desc, impl


def _store(scope: str = "shared.dyn"):
    @T.prim_func(s_tir=True)
    def desc(a: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (16, 16), "float32", align=64, offset_factor=16,
                           scope="wmma.accumulator")
        C = T.match_buffer(c, (16, 16), "float32", align=64, offset_factor=16, scope=scope)
        with T.sblock("root"):
            T.reads(A[0:16, 0:16])
            T.writes(C[0:16, 0:16])
            for i, j in T.grid(16, 16):
                with T.sblock("store"):
                    vii, vjj = T.axis.remap("SS", [i, j])
                    C[vii, vjj] = A[vii, vjj]

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, c: T.handle) -> None:
        s1 = T.int32()
        s0 = T.int32()
        d1 = T.int32()
        d0 = T.int32()
        A = T.match_buffer(a, (16, 16), "float32", align=64, offset_factor=16,
                           scope="wmma.accumulator", strides=[d1, d0])
        C = T.match_buffer(c, (16, 16), "float32", align=64, offset_factor=16, scope=scope,
                           strides=[s1, s0])
        with T.sblock("root"):
            T.reads(A[0:16, 0:16])
            T.writes(C[0:16, 0:16])
            T.evaluate(T.tvm_store_matrix_sync(
                A.data, 16, 16, 16, _fragment_index(A, d1, 16, 16),
                C.access_ptr("w", ptr_type="float32"), s1, "row_major", dtype="void"))

    return desc, impl


def _sync():
    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (16, 16), "float16", align=64, offset_factor=16,
                           scope="wmma.matrix_a")
        B = T.match_buffer(b, (16, 16), "float16", align=64, offset_factor=16,
                           scope="wmma.matrix_b")
        C = T.match_buffer(c, (16, 16), "float32", align=64, offset_factor=16,
                           scope="wmma.accumulator")
        with T.sblock("root"):
            T.reads(C[0:16, 0:16], A[0:16, 0:16], B[0:16, 0:16])
            T.writes(C[0:16, 0:16])
            for i, j, k in T.grid(16, 16, 16):
                with T.sblock(""):
                    vii, vjj, vkk = T.axis.remap("SSR", [i, j, k])
                    C[vii, vjj] = C[vii, vjj] + Cast("float32", A[vii, vkk]) * Cast(
                        "float32", B[vkk, vjj])

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        a1 = T.int32()
        a0 = T.int32()
        b1 = T.int32()
        b0 = T.int32()
        c1 = T.int32()
        c0 = T.int32()
        A = T.match_buffer(a, (16, 16), "float16", align=64, offset_factor=16,
                           scope="wmma.matrix_a", strides=[a1, a0])
        B = T.match_buffer(b, (16, 16), "float16", align=64, offset_factor=16,
                           scope="wmma.matrix_b", strides=[b1, b0])
        C = T.match_buffer(c, (16, 16), "float32", align=64, offset_factor=16,
                           scope="wmma.accumulator", strides=[c1, c0])
        with T.sblock("root"):
            T.reads(C[0:16, 0:16], A[0:16, 0:16], B[0:16, 0:16])
            T.writes(C[0:16, 0:16])
            T.evaluate(T.tvm_mma_sync(
                C.data, _fragment_index(C, c1, 16, 16), A.data, _fragment_index(A, a1, 16, 16),
                B.data, _fragment_index(B, b1, 16, 16), C.data, _fragment_index(C, c1, 16, 16),
                dtype="void"))

    return desc, impl


def register() -> None:
    """Register the five intrinsics (once per process)."""
    global _registered  # pylint: disable=global-statement
    if _registered:
        return
    for name, make in ((LOAD_A, lambda: _load(False)), (LOAD_B, lambda: _load(True)),
                       (FILL, _fill), (SYNC, _sync), (STORE, _store)):
        TensorIntrin.register(name, *make(), override=True)
    _registered = True
