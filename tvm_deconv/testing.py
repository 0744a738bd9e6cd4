"""Reference implementations and checks shared by tests, benchmarks and the tuner.

The reference is the textbook *scatter* definition of a transposed convolution, computed in
float64: every input pixel times every kernel tap lands at ``i*s + t*d - pad_before``.  It does
not use :mod:`tvm_deconv.plan` (it is the oracle the plan is checked against).
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
from pathlib import Path

import numpy as np

from .plan import ConvTransposeSpec


def _to_canonical(array: np.ndarray, layout: str, canonical: str) -> np.ndarray:
    return np.transpose(array, [layout.index(a) for a in canonical])


def _from_canonical(array: np.ndarray, canonical: str, layout: str) -> np.ndarray:
    return np.transpose(array, [canonical.index(a) for a in layout])


def conv_transpose_reference(
    data: np.ndarray, weight: np.ndarray, spec: ConvTransposeSpec, bias: np.ndarray | None = None
) -> np.ndarray:
    """Float64 transposed convolution of ``data``/``weight`` laid out as ``spec`` says.

    Returns the output in ``spec.out_layout`` (float64).
    """
    spatial = spec.spatial_axes
    x = _to_canonical(np.asarray(data, np.float64), spec.data_layout, "NC" + spatial)
    w = _to_canonical(np.asarray(weight, np.float64), spec.kernel_layout, "IO" + spatial)
    n, g = spec.batch, spec.groups
    cig, cog = spec.in_per_group, spec.out_per_group
    full = [(i - 1) * s + d * (k - 1) + 1 + op for i, s, d, k, op in
            zip(spec.in_size, spec.strides, spec.dilation, spec.kernel, spec.output_padding)]
    out = np.zeros((n, spec.out_channels, *full))
    for grp in range(g):
        xg = x[:, grp * cig:(grp + 1) * cig]
        wg = w[grp * cig:(grp + 1) * cig]
        for taps in itertools.product(*(range(k) for k in spec.kernel)):
            contrib = np.einsum("nc...,co->no...", xg, wg[(slice(None), slice(None)) + taps])
            dst = tuple(slice(t * d, t * d + (i - 1) * s + 1, s) for t, d, i, s in
                        zip(taps, spec.dilation, spec.in_size, spec.strides))
            out[(slice(None), slice(grp * cog, (grp + 1) * cog)) + dst] += contrib
    crop = tuple(slice(pb, pb + o) for pb, o in zip(spec.pad_before, spec.out_size))
    out = out[(slice(None), slice(None)) + crop]
    if bias is not None:
        out = out + np.asarray(bias, np.float64).reshape((1, -1) + (1,) * spec.ndim)
    return _from_canonical(out, "NC" + spatial, spec.out_layout)


def random_inputs(spec: ConvTransposeSpec, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random normal data and weight (never zeros) in the spec's layouts and dtype."""
    rng = np.random.default_rng(seed)
    data = rng.standard_normal(spec.data_shape).astype(spec.dtype)
    weight = rng.standard_normal(spec.weight_shape).astype(spec.dtype)
    return data, weight


def relative_error(out: np.ndarray, ref: np.ndarray) -> float:
    """‖out − ref‖ / ‖ref‖ in float64 (NaN/Inf in ``out`` give ``inf``)."""
    out = np.asarray(out, np.float64)
    if not np.all(np.isfinite(out)):
        return float("inf")
    denom = np.linalg.norm(np.asarray(ref, np.float64))
    return float(np.linalg.norm(out - ref) / (denom if denom else 1.0))


def tolerance(dtype: str) -> float:
    """Relative-error bound for a kernel computing in ``dtype``."""
    return {"float32": 1e-5, "float16": 2e-3, "float64": 1e-12}.get(dtype, 1e-5)


def run_primfunc(func, args: list[np.ndarray], out_shape, out_dtype: str,
                 target="llvm", fill: float = 0.0) -> np.ndarray:
    """Compile a PrimFunc ``(*args, out)`` for a CPU target, run it once, return ``out``
    (filled with ``fill`` before the run: NaN shows elements the PrimFunc never writes)."""
    import tvm  # pylint: disable=import-outside-toplevel

    name = "main"
    func = func.with_attr("global_symbol", name)
    lib = tvm.compile(tvm.IRModule({name: func}), target)
    dev = tvm.cpu(0)
    out = tvm.runtime.tensor(np.full(out_shape, fill, out_dtype), dev)
    lib[name](*[tvm.runtime.tensor(a, dev) for a in args], out)
    return out.numpy()


def run_pack(pack, weight: np.ndarray, target="llvm", fill: float = 0.0) -> np.ndarray:
    """An implementation's weight packing ``(weight, packed_weight)`` run on the CPU, as
    FoldConstant runs it at build for a constant weight."""
    packed = pack.params[-1]  # TVM 0.27: PrimFunc params are the buffers
    return run_primfunc(pack, [weight], [int(d) for d in packed.shape], packed.dtype, target,
                        fill)


def loop_nest_macs(func) -> int:
    """Multiply-accumulates a PrimFunc's loop nest performs: for every reduction block, the
    product of the extents of the loops around it (each iteration is one MAC)."""
    from tvm import s_tir  # pylint: disable=import-outside-toplevel

    sch = s_tir.Schedule(func)
    total = 0
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        if not any(iv.iter_type == 2 for iv in sch.get(block).iter_vars):
            continue
        macs = 1
        for loop in sch.get_loops(block):
            macs *= int(sch.get(loop).extent)
        total += macs
    return total


def conv_inputs(spec, weight=None, symbolic_batch: bool = False) -> tuple:
    """``(x, w, params)`` of a one-conv Relax function for ``spec`` (transposed or dilated):
    ``x`` a parameter (batch symbolic if asked), ``w`` a parameter or, with ``weight`` given,
    a constant; ``params`` the parameters in order."""
    from tvm import relax, tirx  # pylint: disable=import-outside-toplevel

    shape = list(spec.data_shape)
    if symbolic_batch:
        shape[spec.data_layout.index("N")] = tirx.Var("n", "int64")
    x = relax.Var("x", relax.TensorType(shape, spec.dtype))
    if weight is not None:
        return x, relax.const(weight), [x]
    w = relax.Var("w", relax.TensorType(spec.weight_shape, spec.dtype))
    return x, w, [x, w]


def transposed_conv_module(spec: ConvTransposeSpec, weight: np.ndarray | None = None,
                           epilogue=None, extra_args=(), symbolic_batch: bool = False,
                           bias: bool = False, activation=None):
    """A Relax module ``main(x[, w][, b], *extra_args)`` calling one ``relax.nn.convNd_transpose``
    with ``spec``'s attributes; ``weight`` given → a constant weight.  ``bias`` adds a
    parameter ``b`` of shape (out_channels,) along the output's channel axis, then
    ``activation(y)`` (a Relax op) and ``epilogue(bb, y)`` (any ops) follow, in that order."""
    from tvm import relax  # pylint: disable=import-outside-toplevel

    ops = {1: relax.op.nn.conv1d_transpose, 2: relax.op.nn.conv2d_transpose,
           3: relax.op.nn.conv3d_transpose}
    x, w, params = conv_inputs(spec, weight, symbolic_batch)
    if bias:
        b = relax.Var("b", relax.TensorType((spec.out_channels,), spec.out_dtype))
        params.append(b)
    bb = relax.BlockBuilder()
    with bb.function("main", params + list(extra_args)):
        with bb.dataflow():
            y = bb.emit(ops[spec.ndim](
                x, w, strides=spec.strides, padding=spec.pad_before + spec.pad_after,
                output_padding=spec.output_padding, dilation=spec.dilation, groups=spec.groups,
                data_layout=spec.data_layout, kernel_layout=spec.kernel_layout,
                out_layout=spec.out_layout, out_dtype=spec.out_dtype))
            if bias:
                shape = [1] * len(spec.out_shape)
                shape[spec.out_layout.index("C")] = spec.out_channels
                y = bb.emit(relax.op.add(y, relax.op.reshape(b, shape)))
            if activation is not None:
                y = bb.emit(activation(y))
            if epilogue is not None:
                y = epilogue(bb, y)
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def run_implementation(name: str, spec: ConvTransposeSpec, target, bias=None, activation=None,
                       seed: int = 0) -> tuple:
    """Build one transposed conv of ``spec`` (constant random weight, optional ``bias`` and
    Relax ``activation``) through :func:`tvm_deconv.build` for a CPU ``target``, after
    checking that implementation ``name`` takes it; run it once.  ``(data, weight, out)``."""
    import tvm  # pylint: disable=import-outside-toplevel
    from tvm import relax  # pylint: disable=import-outside-toplevel

    from . import strategy  # pylint: disable=import-outside-toplevel
    from .build import build  # pylint: disable=import-outside-toplevel

    picked = strategy.select(strategy.CONV_TRANSPOSE, spec, target).implementation
    assert picked is not None and picked.name == name, (name, picked)
    data, weight = random_inputs(spec, seed=seed)
    params = {"w": weight} if bias is None else {"w": weight, "b": bias}
    ex = build(transposed_conv_module(spec, bias=bias is not None, activation=activation),
               target, params)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return data, weight, vm["main"](tvm.runtime.tensor(data)).numpy()


def has_gpu() -> bool:
    """Whether TVM sees an NVIDIA GPU (``tvm.cuda(0)``): the ``gpu`` tests' skip condition."""
    import tvm  # pylint: disable=import-outside-toplevel

    try:
        return bool(tvm.cuda(0).exist)
    except Exception:  # pylint: disable=broad-except
        return False


def cuda_sources(mod) -> list[str]:
    """CUDA C of every CUDA module imported (transitively) by a built module."""
    found = [mod.inspect_source()] if mod.kind == "cuda" else []
    for sub in mod.imports:
        found += cuda_sources(sub)
    return found


def nvcc_errors(src: str, work_dir) -> str | None:
    """nvcc's errors compiling CUDA C ``src`` for sm_90 (files in ``work_dir``); ``None``
    where nvcc accepts it or is not on PATH."""
    if shutil.which("nvcc") is None:
        return None
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "k.cu").write_text(src)
    proc = subprocess.run(["nvcc", "-arch=sm_90", "-cubin", "-o", str(work_dir / "k.cubin"),
                           str(work_dir / "k.cu")], capture_output=True, text=True,
                          timeout=120, check=False)
    return proc.stderr[-3000:] if proc.returncode else None
