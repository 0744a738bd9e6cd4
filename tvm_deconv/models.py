"""Small generative models built directly in Relax (no torch, no downloads, random weights)."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax


def _conv_transpose(bb, x, weight, stride, padding, ndim=2):
    op = {1: relax.op.nn.conv1d_transpose, 2: relax.op.nn.conv2d_transpose,
          3: relax.op.nn.conv3d_transpose}[ndim]
    return bb.emit(op(x, weight, strides=stride, padding=padding))


def _batch_norm_relu(bb, x, channels, params, prefix, rng):
    """Inference BatchNorm + ReLU, with its statistics as parameters."""
    names = ("gamma", "beta", "mean", "var")
    values = (rng.uniform(0.5, 1.5, channels), rng.normal(0, 0.1, channels),
              rng.normal(0, 0.1, channels), rng.uniform(0.5, 1.5, channels))
    bn_args = []
    for name, value in zip(names, values):
        var = relax.Var(f"{prefix}_{name}", relax.TensorType((channels,), "float32"))
        params.append((var, value.astype("float32")))
        bn_args.append(var)
    bn = bb.emit(relax.op.nn.batch_norm(x, *bn_args, axis=1, epsilon=1e-5, training=False))
    return bb.emit(relax.op.nn.relu(bb.emit(relax.TupleGetItem(bn, 0))))


def dcgan_generator(batch: int = 1, nz: int = 100, ngf: int = 64, channels: int = 3,
                    seed: int = 0) -> tuple[tvm.IRModule, dict[str, np.ndarray]]:
    """The DCGAN generator (Radford et al.) for 64×64 images: five transposed convs.

    Returns ``(mod, params)``: ``main(z, *weights)`` with ``z`` of shape (batch, nz, 1, 1);
    pass ``params`` (name → array) to :func:`tvm_deconv.build` to bind the weights.
    """
    rng = np.random.default_rng(seed)
    widths = [nz, ngf * 8, ngf * 4, ngf * 2, ngf, channels]
    bb = relax.BlockBuilder()
    z = relax.Var("z", relax.TensorType((batch, nz, 1, 1), "float32"))
    params: list[tuple[relax.Var, np.ndarray]] = []
    weights = []
    for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:])):
        w = relax.Var(f"deconv{i}_weight", relax.TensorType((cin, cout, 4, 4), "float32"))
        fan_in = cin * 16
        params.append((w, rng.normal(0, 1 / np.sqrt(fan_in / 4), (cin, cout, 4, 4))
                       .astype("float32")))
        weights.append(w)
    bn_params: list[tuple[relax.Var, np.ndarray]] = []
    # BatchNorm parameters are declared while emitting, so build the function in two steps.
    with bb.function("main"):
        with bb.dataflow():
            x = z
            for i, w in enumerate(weights):
                stride, padding = (1, 0) if i == 0 else (2, 1)
                x = _conv_transpose(bb, x, w, stride, padding)
                if i < len(weights) - 1:
                    x = _batch_norm_relu(bb, x, widths[i + 1], bn_params, f"bn{i}", rng)
                else:
                    x = bb.emit(relax.op.tanh(x))
            out = bb.emit_output(x)
        all_params = [w for w, _ in params] + [v for v, _ in bn_params]
        bb.emit_func_output(out, params=[z] + all_params)
    values = {v.name: a for v, a in params + bn_params}
    return bb.get(), values
