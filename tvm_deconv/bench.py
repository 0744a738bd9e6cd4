"""``tvm-deconv bench``: zoo layers, whole models or dilated convs, side by side in one process.

Suites (``--suite``): ``layers`` (``zoo.LAYERS``), ``models`` (``models.MODELS``, end to end)
and ``dilated`` (``zoo.DILATED_LAYERS``).  Implementations per row: tvm-deconv (``ours``) and
TVM's default lowering (``tvm_default``) untuned, both tuned with the same trial budget when
``--tune-trials N`` > 0 (``ours_tuned``: :func:`tvm_deconv.tuning.tune`; ``tvm_default_tuned``:
MetaSchedule ``tune_relax``/``compile_relax``), ONNX Runtime and PyTorch eager when importable.
On a GPU target (``--target cuda``; the layers suite, rows per ``--dtype``) the peers are
cuDNN through PyTorch instead (:mod:`tvm_deconv.bench_gpu`).

Every implementation's output is checked against a reference before it is timed (layers:
the float64 scatter reference; dilated: the float64 gather reference; models: PyTorch eager in
float64 with the same weights); a wrong one is reported as such, never timed.  Reported per
implementation: median milliseconds with the min–max spread, useful GFLOP/s, and peak memory
(growth of the resident set during the first inference: activations and workspaces, weights
excluded).  Output: a Markdown table, ``--json``, ``--markdown``, ``--plot`` (matplotlib).
"""

from __future__ import annotations

import argparse
import collections
import copy
import ctypes
import json
import logging
import math
import os
import statistics
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from . import zoo
from .plan import ConvTransposeSpec, make_dilated_plan, make_dilated_spec, make_plan
from .testing import conv_transpose_reference, random_inputs, relative_error, tolerance
from .models import MODEL_ALIASES
from .threads import runtime_threads

logger = logging.getLogger("tvm_deconv")

SUITES = ("layers", "models", "dilated")
PEERS = ("onnxruntime", "pytorch")
DTYPES = ("float32", "float16")
MODEL_TOLERANCE = 1e-5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", choices=SUITES, default=None,
                        help="what to benchmark (default: layers, or models with --models)")
    parser.add_argument("--target", default="llvm", help="target preset or JSON dict")
    parser.add_argument("--layers", default="", help="comma-separated layer names of the "
                        "layers/dilated suite (default: all); layers: "
                        + ", ".join(l.name for l in zoo.LAYERS))
    parser.add_argument("--models", default="", help="comma-separated zoo models "
                        "(tvm_deconv.models.MODELS; implies --suite models; default: all), "
                        "also by short name: " + ", ".join(MODEL_ALIASES))
    parser.add_argument("--small", action="store_true",
                        help="models at their small test sizes (quick checks)")
    parser.add_argument("--batch", default="1", help="comma-separated batch sizes")
    parser.add_argument("--dtype", default="float32",
                        help="comma-separated dtypes of the layers suite's rows: float32, "
                             "float16 (GPU targets only)")
    parser.add_argument("--repeat", type=int, default=15, help="timed repeats (median reported)")
    parser.add_argument("--min-repeat-ms", type=float, default=20.0,
                        help="each repeat runs the kernel enough times to last this long")
    parser.add_argument("--tvm-default-repeat", type=int, default=3,
                        help="repeats for TVM's (very slow) untuned default lowering")
    parser.add_argument("--shipped-logs", action="store_true",
                        help="also time ours built with the tuning log shipped for the target "
                             "(tuning_logs/<target key>/), no tuning: the ours_shipped column")
    parser.add_argument("--skip-tvm-default", action="store_true",
                        help="leave out TVM's untuned default lowering (slowest to run)")
    parser.add_argument("--skip-torch", action="store_true", help="leave out PyTorch eager")
    parser.add_argument("--skip-ort", action="store_true", help="leave out ONNX Runtime")
    parser.add_argument("--skip-sgemm-peak", action="store_true",
                        help="leave out the MLAS SGEMM ceiling (ONNX Runtime's 2048-cubed "
                             "MatMul, ~1 s) and the %% of SGEMM peak column")
    parser.add_argument("--threads", type=int, default=0,
                        help="threads of every implementation: TVM's runtime pool (ours and "
                             "TVM's default), ORT, PyTorch (default: the target's num-cores)")
    parser.add_argument("--tune-trials", type=int, default=0, metavar="N",
                        help="also tune ours and TVM's default, N MetaSchedule trials each per "
                             "row (default 0: skip the tuned columns)")
    parser.add_argument("--cost-model", default="xgb", choices=["xgb", "mlp", "random"],
                        help="MetaSchedule cost model of both tuned columns (random: no "
                             "xgboost needed, e.g. on the GPU machine)")
    parser.add_argument("--work-dir", default="bench-tuning",
                        help="tuning databases, one folder per row and implementation; "
                             "re-running the same command resumes (default bench-tuning/)")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time ours, TVM's default and PyTorch per op category "
                             "(transposed convs, ordinary convs, the rest)")
    parser.add_argument("--json", default="", help="write the results to this JSON file")
    parser.add_argument("--markdown", default="", help="write the Markdown table to this file")
    parser.add_argument("--plot", default="", metavar="PNG",
                        help="draw a bar chart here (needs matplotlib: pip install "
                             "'tvm-deconv[plot]')")


# --------------------------------------------------------------------------------------------
# Timing and memory


def _time_python(fn: Callable[[], object], repeat: int, min_repeat_ms: float) -> list[float]:
    fn()  # warm-up
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    number = max(1, int(min_repeat_ms / 1e3 / once))
    results = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        results.append((time.perf_counter() - start) / number * 1e3)
    return results


def _summary(samples: list[float]) -> dict:
    return {"median_ms": statistics.median(samples), "min_ms": min(samples),
            "max_ms": max(samples), "repeats": len(samples)}


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def fix_malloc_threshold() -> None:
    """glibc raises its mmap threshold after large frees and then keeps freed blocks resident,
    which would hide later implementations' allocations from the RSS peak: pin it."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD


def _status_kib(key: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def peak_memory(fn: Callable[[], np.ndarray]) -> tuple[np.ndarray, Optional[int]]:
    """(``fn()``, growth of the process's peak resident set over its size before, in bytes);
    ``None`` where Linux's ``clear_refs`` peak reset is unavailable."""
    libc = _libc()
    try:
        if libc is not None:
            libc.malloc_trim(0)
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")  # reset VmHWM to the current RSS
        base = _status_kib("VmRSS")
    except (OSError, KeyError):
        return fn(), None
    out = fn()
    return out, max(0, _status_kib("VmHWM") - base) * 1024


# --------------------------------------------------------------------------------------------
# Implementations: a factory returns a Prepared (compiled, weights loaded, not yet run).


@dataclass
class Prepared:
    run: Callable[[], np.ndarray]                         # one inference → numpy output
    timer: Callable[[int, float], list[float]]            # (repeat, min_repeat_ms) → ms
    compile_s: float = 0.0
    breakdown: Optional[Callable[[], dict]] = None        # op category → ms
    info: dict = field(default_factory=dict)              # extra fields for the report


def _tvm_category(symbol: str) -> str:
    if symbol.startswith("vm.builtin"):
        return "runtime"
    if "transpose" in symbol:
        return "deconv"
    return "conv" if "conv" in symbol else "other"


def _vm_breakdown(vm, args) -> dict:
    """Milliseconds per op category of one run, from the VM's per-call instrument."""
    totals: dict = collections.defaultdict(float)
    started: dict = {}

    def instrument(_func, symbol, before, _ret, *_args):
        if before:
            started[symbol] = time.perf_counter()
        else:
            totals[_tvm_category(symbol)] += (time.perf_counter() - started[symbol]) * 1e3
        return 0

    vm.set_instrument(instrument)
    try:
        start = time.perf_counter()
        vm["main"](*args)
        totals["total"] = (time.perf_counter() - start) * 1e3
    finally:
        vm.set_instrument(lambda *_: 0)
    return dict(totals)


def tvm_prepared(build_fn: Callable[[], object], inputs: list[np.ndarray],
                 info: Optional[dict] = None, device=None) -> Prepared:
    """``device``: where it runs (default the CPU); the time evaluator synchronises it."""
    import tvm  # pylint: disable=import-outside-toplevel
    from tvm import relax  # pylint: disable=import-outside-toplevel

    start = time.perf_counter()
    ex = build_fn()
    compile_s = time.perf_counter() - start
    dev = device or tvm.cpu(0)
    vm = relax.VirtualMachine(ex, dev)
    args = [tvm.runtime.tensor(a, dev) for a in inputs]

    def timer(repeat, min_repeat_ms):
        evaluator = vm.time_evaluator("main", dev, number=1, repeat=repeat,
                                      min_repeat_ms=int(min_repeat_ms))
        return [r * 1e3 for r in evaluator(*args).results]

    return Prepared(lambda: vm["main"](*args).numpy(), timer, compile_s,
                    lambda: _vm_breakdown(vm, args), info if info is not None else {})


def ort_prepared(onnx_bytes: bytes, feeds: dict, threads: int) -> Prepared:
    import onnxruntime as ort  # pylint: disable=import-outside-toplevel

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
    call = lambda: sess.run(None, feeds)[0]  # noqa: E731
    return Prepared(call, lambda r, m: _time_python(call, r, m))


SGEMM_PEAK_SIZE = 2048


def sgemm_peak_gflops(threads: int, size: int = SGEMM_PEAK_SIZE, repeat: int = 9) -> float:
    """GFLOP/s of ONNX Runtime's (MLAS) ``size``-cubed float32 MatMul on ``threads`` threads,
    its fastest repeat (a ceiling: on a shared machine the median swung 132-176 GFLOP/s
    between runs): what the "% of SGEMM peak" column divides by."""
    from onnx import TensorProto, helper  # pylint: disable=import-outside-toplevel

    dims = [size, size]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "sgemm",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, dims) for n in "ab"],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, dims)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal(dims).astype("float32") for n in "ab"}
    prepared = ort_prepared(model.SerializeToString(), feeds, threads)
    ms = min(prepared.timer(repeat, 100.0))
    return 2.0 * size ** 3 / (ms * 1e6)


def _torch_category(name: str) -> Optional[str]:
    if name.startswith("aten::conv_transpose"):
        return "deconv"
    if name in ("aten::conv1d", "aten::conv2d", "aten::conv3d"):
        return "conv"
    return None


def _torch_breakdown(call) -> dict:
    from torch import profiler  # pylint: disable=import-outside-toplevel

    for _ in range(2):  # the first profiled run pays the profiler's start-up
        with profiler.profile(activities=[profiler.ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            call()
            total = (time.perf_counter() - start) * 1e3
    totals: dict = collections.defaultdict(float)
    for event in prof.key_averages():
        category = _torch_category(event.key)
        if category:
            totals[category] += event.cpu_time_total / 1e3
    totals["other"] = total - totals["deconv"] - totals["conv"]
    totals["total"] = total
    return dict(totals)


def torch_prepared(fn: Callable, args: tuple, threads: int) -> Prepared:
    import torch  # pylint: disable=import-outside-toplevel

    torch.set_num_threads(threads)

    def call():
        with torch.inference_mode():
            return fn(*args)

    return Prepared(lambda: call().numpy(), lambda r, m: _time_python(call, r, m),
                    breakdown=lambda: _torch_breakdown(call))


class TuningWorkers:
    """The MetaSchedule builders and runner of a bench run's tuned columns, started once for
    all its rows (each row used to start three worker pools; a fresh build worker costs
    seconds, 29 s on the H100 machine under TVM's default build).  ``ours`` builds candidates
    as :func:`tvm_deconv.tune` does (:func:`~tvm_deconv.tuning.build_candidate`, in the pass
    config of the final build); ``tvm_default`` with MetaSchedule's default build, which
    first imports every tensor intrinsic: minutes on a loaded 2-core machine, hence the
    generous timeouts (MetaSchedule's 30 s default killed every build).  One runner for both."""

    def __init__(self):
        # pylint: disable=import-outside-toplevel
        from tvm.s_tir import meta_schedule as ms

        from .tuning import PooledBuilder

        self.ours = PooledBuilder(timeout_sec=600)
        self.tvm_default = PooledBuilder(f_build=None, timeout_sec=600)
        self.runner = ms.runner.LocalRunner(timeout_sec=300)

    def close(self) -> None:
        self.ours.close()
        self.tvm_default.close()


def _fused_like_compile_relax(mod, params: dict, target):
    """``mod`` with the passes ``compile_relax`` runs before applying a database (dispatch,
    LegalizeOps … FuseTIR): task extraction needs TIR functions, and the same ones."""
    # pylint: disable=import-outside-toplevel
    from tvm import relax
    from tvm.relax import pipeline as relax_pipeline
    import tvm

    try:
        dispatch = list(relax_pipeline.library_dispatch_passes(target))
    except (ValueError, AttributeError):
        dispatch = []
    passes = dispatch + [relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
                         relax.transform.FoldConstant(), relax.transform.FuseOps(),
                         relax.transform.FuseTIR()]
    with target:
        return tvm.transform.Sequential(passes)(relax.transform.BindParams("main", params)(mod))


def _tvm_default_tuned(mod, params: dict, target, trials: int, work_dir: Path, info: dict,
                       workers: TuningWorkers, cost_model: str = "xgb"):
    """TVM's own pipeline tuned by MetaSchedule with ``trials`` trials in all (resumable:
    records already in ``work_dir`` count), then ``compile_relax`` with that database.
    ``info["trials_measured"]``: the records the database holds."""
    # pylint: disable=import-outside-toplevel
    import tvm
    from tvm.s_tir import meta_schedule as ms

    work_dir.mkdir(parents=True, exist_ok=True)
    database = ms.database.JSONDatabase(work_dir=str(work_dir), module_equality="structural")
    left = trials - len(database.get_all_tuning_records())
    tensors = {k: tvm.runtime.tensor(np.asarray(v)) for k, v in params.items()}
    if left > 0:
        database = ms.relax_integration.tune_relax(
            _fused_like_compile_relax(mod, tensors, target), {}, target, str(work_dir),
            max_trials_global=left,
            num_trials_per_iter=min(16, left), database=database, builder=workers.tvm_default,
            runner=workers.runner, cost_model=cost_model)
    info["trials_measured"] = len(database.get_all_tuning_records())
    return ms.relax_integration.compile_relax(database, mod, target, tensors)


def _ours_tuned(mod, params: dict, tasks: list, target, trials: int, work_dir: Path,
                info: dict, workers: TuningWorkers, cost_model: str = "xgb"):
    """tvm-deconv with its tasks tuned by :func:`tvm_deconv.tuning.tune`, ``trials`` in all:
    each task gets an even share of what is left (a one-point space takes one trial and hands
    the rest on); records already in ``work_dir`` count, so re-running resumes.  Failed
    candidates leave no record and do not count; the best records of all tasks are then
    re-timed side by side (:func:`~tvm_deconv.tuning.retime_records`, as ``tune`` ends).
    ``info["trials_measured"]``: the records.  With no tasks (the call's kernel is finished,
    e.g. ``cuda.wgmma``: no design space) it is the untuned build, 0 trials."""
    # pylint: disable=import-outside-toplevel
    from .build import build
    from .tuning import retime_records, retimes, tune

    if not tasks:
        info["trials_measured"] = 0
        return build(mod, target, params, tuning_logs=False)
    left = trials
    for i, task in enumerate(tasks):
        share = -(-left // (len(tasks) - i))  # ceil: a budget below the task count still runs
        if share > 0:
            (result,) = tune([task], target, work_dir, trials=share, runner=workers.runner,
                             builder=workers.ours, cost_model=cost_model, retime=False)
            left -= result.trials_before + result.trials_run
    if retimes(target):
        retime_records(work_dir, tasks, target)
    info["trials_measured"] = trials - left
    return build(mod, target, params, tuning_logs=str(work_dir))


def tuning_spaces(spec: ConvTransposeSpec, target) -> tuple:
    """The design spaces a layer row tunes.  On GPUs MetaSchedule's stock rules yield no valid
    candidate of the decomposed compute (VerifyGPUCode rejects their shared-memory window of
    the strided taps), so the budget goes to the default schedule and the sampled space;
    float16 calls on the tensor cores keep the stock space, their tensor-core tiling
    (:func:`~.tuning.stock_on_tensor_cores`)."""
    from .tuning import DEFAULT, OURS, SPACES, stock_on_tensor_cores  # pylint: disable=C0415

    if "gpu" not in target.keys or stock_on_tensor_cores(spec, target):
        return SPACES
    return DEFAULT, OURS


def _tuning_order(tasks: list) -> list:
    """MetaSchedule's stock-rule space last: what the smaller spaces leave of their share
    (a one-point space uses one trial) goes to it."""
    from .tuning import STOCK  # pylint: disable=import-outside-toplevel

    return sorted(tasks, key=lambda t: t.space == STOCK)


# --------------------------------------------------------------------------------------------
# Suites: a suite yields Cases (one table row each).


@dataclass
class Case:
    name: str
    batch: int
    flops: int                                            # useful FLOPs of one inference
    reference: Callable[[], np.ndarray]
    tol: float
    impls: dict = field(default_factory=dict)             # name → factory() → Prepared
    extra: dict = field(default_factory=dict)             # suite-specific row fields
    peers: tuple = PEERS                                  # the "best peer" candidates
    on_cpu: bool = True       # runs on the host: peak resident set, thread-pool settling


def _one_op_module(op, data_shape, weight_shape, dtype: str, **attrs):
    """``main(x)`` calling ``op(x, w, **attrs)`` with ``w`` a parameter (bind it as ``"w"``)."""
    from tvm import relax  # pylint: disable=import-outside-toplevel

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(data_shape, dtype))
    w = relax.Var("w", relax.TensorType(weight_shape, dtype))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(op(x, w, **attrs)))
        bb.emit_func_output(out)
    return bb.get()


def _onnx_single_node(op_type: str, data_shape, out_shape, weight: np.ndarray, **attrs) -> bytes:
    import onnx  # pylint: disable=import-outside-toplevel
    from onnx import TensorProto, helper, numpy_helper  # pylint: disable=import-outside-toplevel

    node = helper.make_node(op_type, ["x", "w"], ["y"], **attrs)
    graph = helper.make_graph(
        [node], op_type.lower(),
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, data_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        initializer=[numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _device(target):
    import tvm  # pylint: disable=import-outside-toplevel

    return tvm.cuda(0) if "gpu" in target.keys else tvm.cpu(0)


def _common_impls(case: Case, mod, params: dict, inputs: list, args, target, tasks_fn,
                  tvm_default_build=None) -> None:
    """ours / tvm_default (untuned, tuned) factories of a Relax ``mod`` with ``params``."""
    from .build import build  # pylint: disable=import-outside-toplevel

    dev = _device(target)
    case.impls["ours"] = lambda: tvm_prepared(
        lambda: build(mod, target, params, tuning_logs=False), inputs, device=dev)
    if args.shipped_logs:  # (tuning_logs=None: the log shipped for the target, no tuning)
        case.impls["ours_shipped"] = lambda: tvm_prepared(
            lambda: build(mod, target, params, tuning_logs=None), inputs, device=dev)
    if not args.skip_tvm_default:
        case.impls["tvm_default"] = lambda: tvm_prepared(
            tvm_default_build or (lambda: build(mod, target, params, decompose=False)), inputs,
            device=dev)
    if args.tune_trials > 0:
        work = Path(args.work_dir) / f"{case.name}_b{case.batch}{_dtype_suffix(case)}"
        ours_info: dict = {}
        default_info: dict = {}
        case.impls["ours_tuned"] = lambda: tvm_prepared(lambda: _ours_tuned(
            mod, params, _tuning_order(tasks_fn()), target, args.tune_trials, work / "ours",
            ours_info, args.tuning_workers, args.cost_model), inputs, ours_info, device=dev)
        case.impls["tvm_default_tuned"] = lambda: tvm_prepared(lambda: _tvm_default_tuned(
            mod, params, target, args.tune_trials, work / "tvm_default", default_info,
            args.tuning_workers, args.cost_model), inputs, default_info, device=dev)


def _dtype_suffix(case: Case) -> str:
    dtype = case.extra.get("dtype", "float32")
    return "" if dtype == "float32" else f"_{dtype}"


def _layer_case(layer, batch: int, args, target, threads: int,
                dtype: str = "float32") -> Case:
    from tvm import relax  # pylint: disable=import-outside-toplevel

    from .tuning import make_tasks  # pylint: disable=C0415

    spec = layer.spec(batch, dtype=dtype)
    data, weight = random_inputs(spec, seed=batch)
    op = {1: relax.op.nn.conv1d_transpose, 2: relax.op.nn.conv2d_transpose,
          3: relax.op.nn.conv3d_transpose}[spec.ndim]
    mod = _one_op_module(op, spec.data_shape, spec.weight_shape, spec.dtype,
                         strides=spec.strides, padding=spec.pad_before + spec.pad_after,
                         output_padding=spec.output_padding, dilation=spec.dilation,
                         groups=spec.groups)
    gpu = "gpu" in target.keys
    if gpu:
        from . import bench_gpu  # pylint: disable=import-outside-toplevel

        reference = lambda: bench_gpu.gpu_reference(spec, data, weight)  # noqa: E731
    else:
        reference = lambda: conv_transpose_reference(data, weight, spec)  # noqa: E731
    case = Case(layer.name, batch, make_plan(spec).useful_flops(), reference,
                tolerance(spec.dtype),
                extra={"workspace_bytes": _workspace(spec, target), "dtype": dtype})
    _common_impls(case, mod, {"w": weight}, [data], args, target,
                  lambda: make_tasks([spec], target, tuning_spaces(spec, target)))
    if gpu:
        case.peers, case.on_cpu = bench_gpu.GPU_PEERS, False
        bench_gpu.add_cudnn_impls(case, spec, data, weight)
        return case
    if not args.skip_ort:
        case.impls["onnxruntime"] = lambda: ort_prepared(_onnx_single_node(
            "ConvTranspose", spec.data_shape, spec.out_shape, weight,
            strides=list(spec.strides), pads=list(spec.pad_before) + list(spec.pad_after),
            dilations=list(spec.dilation), output_padding=list(spec.output_padding),
            group=spec.groups, kernel_shape=list(spec.kernel)), {"x": data}, threads)
    if not args.skip_torch:
        case.impls["pytorch"] = lambda: _torch_layer(
            f"conv_transpose{spec.ndim}d", data, weight, threads, stride=spec.strides,
            padding=spec.pad_before, output_padding=spec.output_padding, groups=spec.groups,
            dilation=spec.dilation)
    return case


def _torch_layer(fn_name: str, data, weight, threads: int, **kwargs) -> Prepared:
    import torch  # pylint: disable=import-outside-toplevel

    fn = getattr(torch.nn.functional, fn_name)
    return torch_prepared(lambda x, w: fn(x, w, **kwargs),
                          (torch.from_numpy(data), torch.from_numpy(weight)), threads)


def _workspace(spec: ConvTransposeSpec, target) -> Optional[int]:
    """Our extra workspace bytes (:attr:`~.strategy.Implementation.workspace`; 0 where the
    implementation reports none)."""
    from . import strategy  # pylint: disable=import-outside-toplevel

    impl = strategy.select(strategy.CONV_TRANSPOSE, spec, target).implementation
    if impl is None:
        return None
    if impl.workspace is None:
        return 0
    with target:
        return impl.workspace(spec)


def _dilated_case(layer, batch: int, args, target, threads: int) -> Case:
    from tvm import relax  # pylint: disable=import-outside-toplevel

    from .dilated import dilated_conv_reference  # pylint: disable=import-outside-toplevel

    nd = len(layer.in_size)
    spec = make_dilated_spec((batch, layer.in_channels) + tuple(layer.in_size),
                             (layer.out_channels, layer.in_channels) + (layer.kernel,) * nd,
                             padding=layer.padding, dilation=layer.dilation)
    rng = np.random.default_rng(batch)
    data = rng.standard_normal(spec.data_shape).astype(spec.dtype)
    weight = rng.standard_normal(spec.weight_shape).astype(spec.dtype)
    op = {1: relax.op.nn.conv1d, 2: relax.op.nn.conv2d, 3: relax.op.nn.conv3d}[nd]
    mod = _one_op_module(op, spec.data_shape, spec.weight_shape, spec.dtype,
                         padding=spec.pad_before + spec.pad_after, dilation=spec.dilation)
    case = Case(layer.name, batch, 2 * make_dilated_plan(spec).macs(),
                lambda: dilated_conv_reference(data, weight, spec), tolerance(spec.dtype))
    _common_impls(case, mod, {"w": weight}, [data], args, target, _no_dilated_tuning)
    if not args.skip_ort:
        case.impls["onnxruntime"] = lambda: ort_prepared(_onnx_single_node(
            "Conv", spec.data_shape, spec.out_shape, weight, dilations=list(spec.dilation),
            pads=list(spec.pad_before) + list(spec.pad_after), kernel_shape=list(spec.kernel)),
            {"x": data}, threads)
    if not args.skip_torch:
        case.impls["pytorch"] = lambda: _torch_layer(
            f"conv{nd}d", data, weight, threads, padding=spec.pad_before,
            dilation=spec.dilation)
    return case


def _no_dilated_tuning():
    raise ImportError("tvm_deconv.tuning tunes transposed convs only; the dilated suite has "
                      "no ours_tuned column yet")


def model_flops(mod) -> dict[str, int]:
    """Useful FLOPs of a Relax module's convs (``conv``) and transposed convs (``deconv``):
    2 · MACs without zero insertion."""
    # pylint: disable=import-outside-toplevel
    import tvm
    from tvm import relax

    from .transform import TRANSPOSED_CONV_OPS, spec_from_call

    flops = {"conv": 0, "deconv": 0}

    def visit(expr):
        if not (isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op)):
            return
        if expr.op.name in TRANSPOSED_CONV_OPS:
            spec, _ = spec_from_call(expr)
            if spec is not None:
                flops["deconv"] += make_plan(spec).useful_flops()
        elif expr.op.name in ("relax.nn.conv1d", "relax.nn.conv2d", "relax.nn.conv3d"):
            weight = [int(d) for d in expr.args[1].ty.shape]
            out = [int(d) for d in expr.ty.shape]
            per_output = math.prod(weight) // weight[str(expr.attrs.kernel_layout).index("O")]
            flops["conv"] += 2 * math.prod(out) * per_output

    relax.analysis.post_order_visit(mod["main"], visit)
    return flops


def _torch_reference(bundle, inputs: list[np.ndarray]) -> np.ndarray:
    """PyTorch eager in float64 with the bundle's weights."""
    import torch  # pylint: disable=import-outside-toplevel

    from .importers import torch_module  # pylint: disable=import-outside-toplevel

    model = copy.deepcopy(torch_module(bundle)).double()
    with torch.inference_mode():
        return model(*(torch.from_numpy(a.astype(np.float64)) for a in inputs)).numpy()


def _model_case(name: str, batch: int, args, target, threads: int) -> Case:
    # pylint: disable=import-outside-toplevel
    from .build import build
    from .models import build_model
    from .tuning import extract_tasks

    bundle = build_model(name, batch=batch, small=args.small)
    inputs = bundle.random_inputs()
    flops = model_flops(bundle.mod)
    cache: dict = {}

    def tvm_default_build():
        if "tvm_default" not in cache:
            cache["tvm_default"] = build(bundle.mod, target, bundle.params, decompose=False)
        return cache["tvm_default"]

    def reference():
        try:
            return _torch_reference(bundle, inputs)
        except ImportError:
            # Without torch, TVM's default lowering (float32) is the reference.
            case.extra["reference"] = "tvm_default (torch not installed)"
            from tvm import relax  # pylint: disable=import-outside-toplevel
            import tvm  # pylint: disable=import-outside-toplevel

            vm = relax.VirtualMachine(tvm_default_build(), tvm.cpu(0))
            return vm["main"](*[tvm.runtime.tensor(a) for a in inputs]).numpy()

    case = Case(bundle.name, batch, sum(flops.values()), reference, MODEL_TOLERANCE,
                extra={"flops": flops, "reference": "pytorch float64",
                       "input_shapes": {k: list(v) for k, v in bundle.input_shapes.items()}})
    _common_impls(case, bundle.mod, bundle.params, inputs, args, target,
                  lambda: extract_tasks(bundle.mod, target), tvm_default_build)
    if not args.skip_ort:
        case.impls["onnxruntime"] = lambda: _ort_model(bundle, inputs, threads)
    if not args.skip_torch:
        case.impls["pytorch"] = lambda: _torch_model(bundle, inputs, threads)
    return case


def _ort_model(bundle, inputs, threads: int) -> Prepared:
    from .importers import to_onnx  # pylint: disable=import-outside-toplevel

    return ort_prepared(to_onnx(bundle), dict(zip(bundle.input_shapes, inputs)), threads)


def _torch_model(bundle, inputs, threads: int) -> Prepared:
    import torch  # pylint: disable=import-outside-toplevel

    from .importers import torch_module  # pylint: disable=import-outside-toplevel

    return torch_prepared(torch_module(bundle),
                          tuple(torch.from_numpy(a) for a in inputs), threads)


def dilated_layers() -> tuple:
    layers = getattr(zoo, "DILATED_LAYERS", None)
    if layers is None:
        raise ValueError("the dilated suite needs tvm_deconv.zoo.DILATED_LAYERS (a tuple of "
                         "DilatedZooLayer), which this version of zoo.py does not define yet")
    return layers


def _pick(names: str, known: dict, what: str, default: Optional[list] = None) -> list:
    wanted = [n.strip() for n in names.split(",") if n.strip()] or default or list(known)
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ValueError(f"unknown {what} {', '.join(unknown)}; known: {', '.join(known)}")
    return [known[n] for n in wanted]


def cases(args, target, threads: int) -> Iterator[Case]:
    """The rows of ``args.suite``; unknown names raise ValueError listing the known ones."""
    from .models import MODELS  # pylint: disable=import-outside-toplevel

    batches = [int(b) for b in args.batch.split(",") if b]
    dtypes = [d.strip() for d in args.dtype.split(",") if d.strip()]
    _check_suite_for_target(args.suite, dtypes, target)
    if args.suite == "models":
        known = dict({m: m for m in MODELS}, **{a: a for a in MODEL_ALIASES})
        items, make = _pick(args.models, known, "model(s)", list(MODELS)), _model_case
    elif args.suite == "dilated":
        items = _pick(args.layers, {l.name: l for l in dilated_layers()}, "dilated layer(s)")
        make = _dilated_case
    else:
        items, make = _pick(args.layers, {l.name: l for l in zoo.LAYERS}, "layer(s)"), _layer_case
    for item in items:
        for batch in batches:
            if args.suite != "layers":
                yield make(item, batch, args, target, threads)
                continue
            for dtype in dtypes:
                yield make(item, batch, args, target, threads, dtype)


def _check_suite_for_target(suite: str, dtypes: list, target) -> None:
    """ValueError naming the fix where the suite, dtypes and target do not go together."""
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown or not dtypes:
        raise ValueError(f"--dtype {','.join(unknown) or '(none)'}: use one or more of "
                         f"{', '.join(DTYPES)}")
    if "gpu" in target.keys:
        if suite != "layers":
            raise ValueError(f"--suite {suite} runs on CPU targets only; on a GPU target "
                             "bench the layers suite (--suite layers)")
    elif dtypes != ["float32"]:
        raise ValueError("--dtype float16 is benchmarked on GPU targets only (--target cuda); "
                         "the CPU kernels compute float32")


# --------------------------------------------------------------------------------------------
# Running a case


def _error_text(exc: Exception) -> str:
    if isinstance(exc, ImportError):
        return f"not available ({exc})"
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {(lines[-1] if lines else '')[:300]}"


SETTLE_S = 0.25  # pause before each timed repeat: other thread pools stop spinning


def check_impl(factory, case: Case, ref: np.ndarray) -> tuple[dict, Optional[Prepared]]:
    """Prepare one implementation and check it against the reference: its report entry, and
    the prepared implementation when it may be timed (``None`` after an error)."""
    entry: dict = {}
    try:
        prepared = factory()
        entry.update(prepared.info)
        if prepared.compile_s:
            entry["compile_s"] = prepared.compile_s
        if case.on_cpu:
            out, entry["peak_bytes"] = peak_memory(prepared.run)
        else:
            out = prepared.run()
        if tuple(out.shape) != tuple(ref.shape):
            entry["error"] = f"WRONG SHAPE {tuple(out.shape)} (reference {tuple(ref.shape)})"
            return entry, None
        err = entry["rel_error"] = relative_error(out, ref)
        if not err < case.tol:
            entry["error"] = f"WRONG RESULT (relative error {err:.2e} >= {case.tol:.0e})"
            return entry, None
        return entry, prepared
    except Exception as exc:  # pylint: disable=broad-except
        entry["error"] = _error_text(exc)
        return entry, None


def round_robin(prepared: dict, repeat: int, min_repeat_ms: float,
                on_error: Optional[Callable[[str, Exception], None]] = None,
                settle_s: float = SETTLE_S) -> dict:
    """Milliseconds per implementation (name → samples), timed round-robin: one repeat of each
    per round, so that load from other jobs on a shared machine falls on all of them alike.
    Each repeat starts after a ``settle_s`` pause (:data:`SETTLE_S`; GPU rows: none): the
    previous implementation's thread pool (OpenMP, ORT's, TVM's) spins for a while after its
    last run, and on 2 cores those spinning threads halved the next implementation's speed.
    An implementation that raises is reported to ``on_error`` and dropped (without
    ``on_error`` the exception propagates)."""
    samples: dict = {name: [] for name in prepared}
    for _ in range(repeat):
        for name, prep in prepared.items():
            if name in samples:
                time.sleep(settle_s)
                try:
                    samples[name] += prep.timer(1, min_repeat_ms)
                except Exception as exc:  # pylint: disable=broad-except
                    if on_error is None:
                        raise
                    on_error(name, exc)
                    del samples[name]
    return samples


def checked_medians(prepared: dict, ref: np.ndarray, rounds: int,
                    min_repeat_ms: float = 100.0) -> tuple[dict, dict]:
    """For the A/B scripts: ``(median ms, relative error vs ref)`` per implementation, every
    output within 1e-5 of ``ref`` (float64) before it is timed by :func:`round_robin`."""
    from .testing import relative_error  # pylint: disable=import-outside-toplevel

    errs = {tag: relative_error(p.run(), ref) for tag, p in prepared.items()}
    if max(errs.values()) >= 1e-5:
        raise AssertionError(f"outputs differ from the reference: {errs}")
    times = round_robin(prepared, rounds, min_repeat_ms)
    return {t: float(np.median(v)) for t, v in times.items()}, errs


def time_interleaved(prepared: dict, entries: dict, case: Case, repeat: int,
                     min_repeat_ms: float, breakdown: bool) -> None:
    """:func:`round_robin` timing; fills each entry's statistics (or its error)."""
    def record_error(name: str, exc: Exception) -> None:
        entries[name]["error"] = _error_text(exc)

    samples = round_robin(prepared, repeat, min_repeat_ms, record_error,
                          SETTLE_S if case.on_cpu else 0.0)
    for name, times in samples.items():
        entry = entries[name]
        entry.update(_summary(times))
        entry["gflops"] = case.flops / (entry["median_ms"] * 1e6)
        if breakdown and prepared[name].breakdown is not None:
            entry["breakdown_ms"] = prepared[name].breakdown()


def run_impl(factory, case: Case, ref: np.ndarray, repeat: int, min_repeat_ms: float,
             breakdown: bool) -> dict:
    """Prepare, check against the reference, then time one implementation of a case."""
    entry, prepared = check_impl(factory, case, ref)
    if prepared is not None:
        time_interleaved({"impl": prepared}, {"impl": entry}, case, repeat, min_repeat_ms,
                         breakdown)
    return entry


def _ratio(row: dict, slower: str, faster: str) -> Optional[float]:
    a = row["impls"].get(slower, {}).get("median_ms")
    b = row["impls"].get(faster, {}).get("median_ms")
    return a / b if a and b else None


def finish_row(row: dict) -> dict:
    peers = [row["impls"][p]["median_ms"] for p in row.get("peers", PEERS)
             if "median_ms" in row["impls"].get(p, {})]
    ours = row["impls"].get("ours", {}).get("median_ms")
    row["best_peer_ms"] = min(peers) if peers else None
    row["speedup_vs_best_peer"] = min(peers) / ours if peers and ours else None
    row["speedup_vs_tvm_default"] = _ratio(row, "tvm_default", "ours")
    row["tuned_speedup_vs_tvm_default"] = _ratio(row, "tvm_default_tuned", "ours_tuned")
    for impl in ("ours_tuned", "ours_shipped"):
        ms_ = row["impls"].get(impl, {}).get("median_ms")
        row[impl.replace("ours_", "") + "_speedup_vs_best_peer"] = (
            min(peers) / ms_ if peers and ms_ else None)
    return row


def _progress(total: int):
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel

    return tqdm(total=total, unit="impl", dynamic_ncols=True, file=sys.stderr)


def bench_case(case: Case, args, bar) -> dict:
    row = {"name": case.name, "batch": case.batch, "useful_gflop": case.flops / 1e9,
           "impls": {}, "peers": list(case.peers), **case.extra}
    bar.set_description(f"{case.name} N={case.batch} reference")
    try:
        ref = case.reference()
    except Exception as exc:  # pylint: disable=broad-except
        row["error"] = f"reference failed: {_error_text(exc)}"
        bar.update(len(case.impls))
        return row
    row.update({k: v for k, v in case.extra.items() if k == "reference"})
    # TVM's untuned default (seconds per run) is timed on its own; the rest round-robin.
    prepared = {}
    for name, factory in case.impls.items():
        bar.set_description(f"{case.name} N={case.batch} {name}")
        if name == "tvm_default":
            # (seconds a call on CPUs; on GPUs milliseconds: repeats of calls as for the rest)
            row["impls"][name] = run_impl(factory, case, ref, args.tvm_default_repeat,
                                          0.0 if case.on_cpu else args.min_repeat_ms,
                                          args.breakdown)
        else:
            row["impls"][name], prep = check_impl(factory, case, ref)
            if prep is not None:
                prepared[name] = prep
        bar.update(1)
    bar.set_description(f"{case.name} N={case.batch} timing")
    time_interleaved(prepared, row["impls"], case, args.repeat, args.min_repeat_ms,
                     args.breakdown)
    return finish_row(row)


# --------------------------------------------------------------------------------------------
# Reports


def _fmt_ms(entry: dict) -> str:
    if "median_ms" not in entry:
        return "n/a" if "not available" in entry.get("error", "") or not entry else "FAIL"
    med, lo, hi = entry["median_ms"], entry["min_ms"], entry["max_ms"]
    spread = (hi - lo) / med * 100 if med else 0.0
    trials = f" [{entry['trials_measured']} trials]" if "trials_measured" in entry else ""
    return f"{med:.3f} (±{spread / 2:.0f}%){trials}"


def _fmt_x(value: Optional[float]) -> str:
    return f"{value:.2f}x" if value else "-"


def _fmt_mib(entry: dict) -> str:
    peak = entry.get("peak_bytes")
    return f"{peak / 2 ** 20:.1f}" if peak is not None and "median_ms" in entry else "-"


def _impl_header(impl: str, trials: int) -> str:
    return f"{impl} ({trials} trials) ms" if impl.endswith("_tuned") else f"{impl} ms"


def markdown_table(rows: list[dict], impls: list[str], suite: str, tune_trials: int = 0,
                   sgemm_peak: Optional[float] = None) -> str:
    """``sgemm_peak``: GFLOP/s of :func:`sgemm_peak_gflops`, for a "% of SGEMM peak" column.
    A dtype column where a row is not float32; the peak-memory column where a row measured
    it (not on GPUs)."""
    tuned = tune_trials > 0
    dtyped = any(row.get("dtype", "float32") != "float32" for row in rows)
    memory = any("peak_bytes" in e for row in rows for e in row["impls"].values())
    head = ([suite[:-1] if suite.endswith("s") else suite, "N"] + (["dtype"] if dtyped else [])
            + [_impl_header(i, tune_trials) for i in impls]
            + ["ours GFLOP/s"] + (["% of SGEMM peak"] if sgemm_peak else [])
            + ["ours vs best peer", "ours vs TVM default"]
            + (["tuned: ours vs TVM default", "tuned ours vs best peer"] if tuned else [])
            + (["shipped log vs best peer"] if "ours_shipped" in impls else [])
            + (["peak MiB (" + " / ".join(impls) + ")"] if memory else [])
            + (["workspace KiB"] if suite == "layers" else []))
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        entries = [row["impls"].get(i, {}) for i in impls]
        ours = row["impls"].get("ours", {})
        cells = ([row["name"], str(row["batch"])]
                 + ([row.get("dtype", "float32")] if dtyped else [])
                 + [_fmt_ms(e) for e in entries])
        cells.append(f"{ours['gflops']:.1f}" if "gflops" in ours else "-")
        if sgemm_peak:
            cells.append(f"{100 * ours['gflops'] / sgemm_peak:.0f}%" if "gflops" in ours else "-")
        cells += [_fmt_x(row.get("speedup_vs_best_peer")),
                  _fmt_x(row.get("speedup_vs_tvm_default"))]
        if tuned:
            cells += [_fmt_x(row.get("tuned_speedup_vs_tvm_default")),
                      _fmt_x(row.get("tuned_speedup_vs_best_peer"))]
        if "ours_shipped" in impls:
            cells.append(_fmt_x(row.get("shipped_speedup_vs_best_peer")))
        if memory:
            cells.append(" / ".join(_fmt_mib(e) for e in entries))
        if suite == "layers":
            ws = row.get("workspace_bytes")
            cells.append(f"{ws / 1024:.0f}" if ws is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def breakdown_table(rows: list[dict]) -> str:
    """Per op category milliseconds (and GFLOP/s where FLOPs are known) of each model."""
    lines = ["| model | impl | transposed convs ms | ordinary convs ms | rest ms | total ms |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        flops = row.get("flops", {})
        for impl, entry in row["impls"].items():
            parts = entry.get("breakdown_ms")
            if not parts:
                continue
            cells = []
            for cat in ("deconv", "conv"):
                ms = parts.get(cat, 0.0)
                rate = flops.get(cat, 0) / (ms * 1e6) if ms and flops.get(cat) else None
                cells.append(f"{ms:.2f}" + (f" ({rate:.1f} GFLOP/s)" if rate else ""))
            rest = parts["total"] - parts.get("deconv", 0.0) - parts.get("conv", 0.0)
            cells += [f"{rest:.2f}", f"{parts['total']:.2f}"]
            lines.append(f"| {row['name']} | {impl} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], impls: list[str], path: str, title: str) -> None:
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel

    labels = [f"{r['name']}\nN={r['batch']}" for r in rows]
    width = 0.8 / max(1, len(impls))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(rows) * len(impls) * 0.4 + 2), 4.5))
    for k, impl in enumerate(impls):
        ms = [r["impls"].get(impl, {}).get("median_ms", float("nan")) for r in rows]
        ax.bar([i + (k - (len(impls) - 1) / 2) * width for i in range(len(rows))], ms,
               width, label=impl)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("median ms (log scale, lower is better)")
    ax.set_title(textwrap.fill(title, 110), fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _check_plot_dependency(path: str) -> None:
    if not path:
        return
    try:
        import matplotlib  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install 'tvm-deconv[plot]' "
                         "(or pip install matplotlib)") from None


def _impl_order(args, gpu: bool = False) -> list[str]:
    impls = ["ours"] + (["ours_shipped"] if args.shipped_logs else []) + (
        [] if args.skip_tvm_default else ["tvm_default"])
    if args.tune_trials > 0:
        impls += ["ours_tuned", "tvm_default_tuned"]
    if gpu:
        return impls + ["cudnn", "cudnn_tf32"]
    return impls + ([] if args.skip_ort else ["onnxruntime"]) + (
        [] if args.skip_torch else ["pytorch"])


def run(args: argparse.Namespace) -> int:
    from .targets import resolve_target  # pylint: disable=import-outside-toplevel

    args.suite = args.suite or ("models" if args.models else "layers")
    target = resolve_target(args.target)
    gpu = "gpu" in target.keys
    threads = args.threads or int(target.attrs.get("num-cores", 0) or 0) or 1
    if not gpu:  # (the host's thread pool runs no kernel of a GPU row)
        os.environ["TVM_NUM_THREADS"] = str(threads)  # read when TVM's pool starts
    pool = threads if gpu else runtime_threads()
    if pool != threads:
        print(f"bench: TVM's runtime pool already runs {pool} threads, not "
              f"{threads}: run the bench in a fresh process", file=sys.stderr)
        return 2
    try:
        _check_plot_dependency(args.plot)
        todo = list(cases(args, target, threads))
    except ValueError as err:
        print(f"tvm-deconv bench: error: {err}", file=sys.stderr)
        return 2
    fix_malloc_threshold()
    impls = _impl_order(args, gpu)
    budget = (f"; tuned columns: {args.tune_trials} MetaSchedule trials per row for each of "
              f"ours and TVM's default (cost model {args.cost_model})"
              if args.tune_trials > 0 else "")
    peak = (None if gpu or args.skip_ort or args.skip_sgemm_peak
            else _sgemm_peak_or_none(threads))
    peak_text = (f"; MLAS SGEMM {SGEMM_PEAK_SIZE}³ (ONNX Runtime MatMul): {peak:.0f} GFLOP/s"
                 if peak else "")
    if gpu:
        header = f"target {target}; {_gpu_header(todo)}{budget}"
    else:
        header = f"target {target}; threads (TVM, ORT, PyTorch): {threads}{budget}{peak_text}"
    print(header, flush=True)
    rows, bad = [], 0
    args.tuning_workers = TuningWorkers() if args.tune_trials > 0 else None
    try:
        with _progress(sum(len(c.impls) for c in todo)) as bar:
            for case in todo:
                row = bench_case(case, args, bar)
                rows.append(row)
                bad += _report_row(row, bar.write)
                # Written after every row, so a run killed by a time limit keeps its rows.
                _write_json(args, header, rows, impls, str(target), threads, peak)
                if args.markdown:
                    _write_markdown(args, header, markdown_table(rows, impls, args.suite,
                                                                 args.tune_trials, peak), rows)
    finally:
        if args.tuning_workers is not None:
            args.tuning_workers.close()
    table = markdown_table(rows, impls, args.suite, args.tune_trials, peak)
    print("\n" + table)
    if args.breakdown:
        print("\nper op category (one instrumented run; the VM's per-call hook adds a little):")
        print(breakdown_table(rows))
    _write_outputs(args, rows, impls, header, table, str(target), threads, peak)
    return 1 if bad else 0


def _gpu_header(todo: list) -> str:
    """The GPU, and the check of its float64 reference against the package's."""
    from . import bench_gpu  # pylint: disable=import-outside-toplevel

    probe = zoo.get("fsrcnn_x3_56_1_k9s3").spec(1)
    return (f"{bench_gpu.device_name()}; best peer: cuDNN of the row's dtype, TF32 off "
            f"(cudnn_tf32 shown, never the peer); reference: PyTorch float64 on the GPU "
            f"(vs the package's reference on {probe.data_shape}: "
            f"{bench_gpu.check_torch_reference(probe):.1e})"
            if todo else bench_gpu.device_name())


def _sgemm_peak_or_none(threads: int) -> Optional[float]:
    try:
        return sgemm_peak_gflops(threads)
    except ImportError:  # no onnxruntime / onnx: the column is left out
        return None


def _report_row(row: dict, write) -> int:
    """Print one finished row; the number of failures of ours/ours_tuned."""
    bad = 0
    if "error" in row:
        write(f"  {row['name']} N={row['batch']}: {row['error']}")
        return 1
    for impl, entry in row["impls"].items():
        if "error" in entry and "not available" not in entry["error"]:
            write(f"  {row['name']} N={row['batch']} {impl}: {entry['error']}")
            bad += impl.startswith("ours")
    write(f"  {row['name']} N={row['batch']}: " + ", ".join(
        f"{i} {_fmt_ms(e)}" for i, e in row["impls"].items()))
    return bad


def _write_json(args, header: str, rows, impls, target: str, threads: int,
                sgemm_peak: Optional[float]) -> None:
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"suite": args.suite, "header": header, "target": target, "threads": threads,
             "tune_trials": args.tune_trials, "cost_model": args.cost_model,
             "sgemm_peak_gflops": sgemm_peak, "impls": impls, "rows": rows}, indent=1))


def _write_markdown(args, header: str, table: str, rows, breakdown: bool = False) -> None:
    text = f"{header}\n\n{table}\n"
    if breakdown:
        text += "\n" + breakdown_table(rows) + "\n"
    Path(args.markdown).write_text(text)


def _write_outputs(args, rows, impls, header, table, target: str, threads: int,
                   sgemm_peak: Optional[float]) -> None:
    if args.json:
        _write_json(args, header, rows, impls, target, threads, sgemm_peak)
        print(f"wrote {args.json}")
    if args.markdown:
        _write_markdown(args, header, table, rows, breakdown=args.breakdown)
        print(f"wrote {args.markdown}")
    if args.plot:
        plot(rows, impls, args.plot, header)
        print(f"wrote {args.plot}")
