"""The GPU side of ``tvm-deconv bench --target cuda``: cuDNN (through PyTorch) as the peer,
a float64 reference computed on the GPU, and device timing.

A GPU row is one (layer, batch, dtype).  Its peers: ``cudnn`` (float32 rows: cuDNN in float32
with TF32 off, the like-for-like peer; float16 rows: cuDNN in float16) and, on float32 rows,
``cudnn_tf32`` (cuDNN allowed TF32: lower precision, shown for information, never the peer of
the ratios).  The reference is PyTorch's transposed conv in float64 on the GPU of the row's
inputs (float16 rows: of the float16-rounded inputs), itself checked against
:func:`tvm_deconv.testing.conv_transpose_reference` on a small case first
(:func:`check_torch_reference`).  Host-memory columns are left empty: the GPU's memory is
not the process's resident set.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .plan import ConvTransposeSpec

# The ratio columns' peer on GPU rows: cuDNN in the row's own dtype, TF32 off.
GPU_PEERS = ("cudnn",)
TORCH_WARMUP = 10


def _torch():
    import torch  # pylint: disable=import-outside-toplevel

    return torch


def torch_conv_transpose(spec: ConvTransposeSpec, x, w):
    """PyTorch's transposed conv of ``spec`` on tensors ``x``, ``w`` (symmetric padding)."""
    torch = _torch()
    if spec.pad_before != spec.pad_after:
        raise ValueError(f"asymmetric padding {spec.pad_before} / {spec.pad_after}: PyTorch's "
                         "conv_transpose has one padding per axis")
    fn = getattr(torch.nn.functional, f"conv_transpose{spec.ndim}d")
    return fn(x, w, stride=spec.strides, padding=spec.pad_before,
              output_padding=spec.output_padding, groups=spec.groups, dilation=spec.dilation)


def gpu_reference(spec: ConvTransposeSpec, data: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """float64 result of ``data``, ``weight`` (as given, e.g. float16-rounded) on the GPU."""
    torch = _torch()
    with torch.no_grad():
        out = torch_conv_transpose(spec, torch.from_numpy(data.astype("float64")).cuda(),
                                   torch.from_numpy(weight.astype("float64")).cuda())
    return out.cpu().numpy()


def check_torch_reference(spec: ConvTransposeSpec) -> float:
    """Relative error of :func:`gpu_reference` against the package's scatter reference on
    ``spec`` (float64 random inputs): ~1e-16 where both mean the same conv."""
    from .testing import conv_transpose_reference, relative_error  # noqa: PLC0415

    rng = np.random.default_rng(0)
    data = rng.standard_normal(spec.data_shape)
    weight = rng.standard_normal(spec.weight_shape)
    return relative_error(gpu_reference(spec, data, weight),
                          conv_transpose_reference(data, weight, spec))


def time_cuda(call: Callable[[], object], repeat: int, min_repeat_ms: float) -> list[float]:
    """Milliseconds per call: ``repeat`` samples, each CUDA events around enough calls to
    last ``min_repeat_ms``, after a warm-up."""
    torch = _torch()
    for _ in range(TORCH_WARMUP):
        call()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    call()
    end.record()
    end.synchronize()
    number = max(1, int(min_repeat_ms / max(start.elapsed_time(end), 1e-4)))
    samples = []
    for _ in range(repeat):
        start.record()
        for _ in range(number):
            call()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / number)
    return samples


def cudnn_prepared(spec: ConvTransposeSpec, data: np.ndarray, weight: np.ndarray,
                   tf32: bool = False):
    """A :class:`~tvm_deconv.bench.Prepared` of cuDNN through PyTorch on the row's inputs
    (``cudnn.benchmark`` on: its autotuner picks the algorithm; ``tf32``: TF32 allowed)."""
    from .bench import Prepared  # pylint: disable=import-outside-toplevel

    torch = _torch()
    x, w = torch.from_numpy(data).cuda(), torch.from_numpy(weight).cuda()

    def configured():
        """PyTorch's global cuDNN flags for this column (the other cuDNN column of a row
        runs in between, round-robin), set once per run or timing, not in the timed calls."""
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        return lambda: torch_conv_transpose(spec, x, w)

    def run():
        with torch.no_grad():
            return configured()().cpu().numpy()

    def timer(repeat, min_ms):
        with torch.no_grad():
            return time_cuda(configured(), repeat, min_ms)

    return Prepared(run, timer)


def add_cudnn_impls(case, spec: ConvTransposeSpec, data: np.ndarray,
                    weight: np.ndarray) -> None:
    """The row's cuDNN columns: ``cudnn`` (its dtype, TF32 off), float32 rows also
    ``cudnn_tf32``."""
    case.impls["cudnn"] = lambda: cudnn_prepared(spec, data, weight)
    if spec.dtype == "float32":
        case.impls["cudnn_tf32"] = lambda: cudnn_prepared(spec, data, weight, tf32=True)


def device_name() -> str:
    torch = _torch()
    return f"{torch.cuda.get_device_name(0)}, cuDNN {torch.backends.cudnn.version()}"
