"""The model zoo: real architectures with transposed convs, defined with
``tvm.relax.frontend.nn`` (no torch, no downloads, random weights).

Every model comes out of one call::

    bundle = build_model("fsrcnn_x3", batch=1, seed=0)          # real sizes
    bundle = build_model("pix2pix_unet", small=True)            # small sizes for tests
    ex = tvm_deconv.build(bundle.mod, "llvm", bundle.params)
    out = relax.VirtualMachine(ex, tvm.cpu())["main"](*bundle.tvm_inputs())

:class:`ModelBundle` holds the Relax module (function ``main``, inputs first, then the
weights), the weights keyed by the Relax parameter names (what :func:`tvm_deconv.build`
binds), the same weights keyed by PyTorch ``state_dict`` names, the input shapes and the
resolved size knobs.  :mod:`tvm_deconv.importers` builds the same architectures as
``torch.nn`` modules, loads the same weights, and imports them back into Relax through
``torch.export`` and ONNX.

Models (``MODELS``) and their size knobs (defaults are the published sizes):

=========================  ===============================================================
``dcgan``                  DCGAN generator, 64×64 (nz, ngf, channels)
``fsrcnn_x2/x3/x4``        FSRCNN(d, s, m) on a Y channel (size, d, s, m, channels)
``pix2pix_unet``           pix2pix U-Net 256, BatchNorm (size, ngf, in/out_channels)
``cyclegan_resnet``        CycleGAN ResNet generator, InstanceNorm (size, ngf, n_blocks)
``simplebaseline_head``    SimpleBaseline pose head on ResNet C5 features (height, width,
                           in_channels, width_channels, joints, num_layers)
``fcn8s_head``             FCN-8s head on VGG pool3/pool4/fc7 features (size, classes, ...)
``hifigan``                HiFi-GAN V1 generator, 1-d (frames, channels, rates, kernels...)
``unet3d_decoder``         3-D U-Net (Çiçek et al.) synthesis path (size, base, classes)
=========================  ===============================================================

Approximations (documented, identical in every route): weight norm (HiFi-GAN) is folded into
plain weights, as it is at inference; dropout (pix2pix) is the identity (eval mode); FCN-8s
uses the "aligned" head (deconvs padded so no crop is needed, same k4s2 / k16s8 deconvs)
instead of the original padding-100-and-crop; the 3-D U-Net uses same-padded convs; module
attribute names are ours (the same in the Relax and PyTorch versions), not the original
repositories' ``state_dict`` keys.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import tvm
from tvm import relax
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import spec as nn_spec

DTYPE = "float32"


# --------------------------------------------------------------------------- layers


def _emit(expr: relax.Expr, name: str) -> nn.Tensor:
    return nn.op.wrap_nested(expr, name)


def _tup(value, ndim: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * ndim


class _Layer(nn.Module):
    """A module owning parameters; ``init_values(rng)`` gives their random values."""

    def init_values(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        raise NotImplementedError


class Conv(_Layer):
    """N-d convolution, OI.. weight (as ``torch.nn.ConvNd``)."""

    def __init__(self, ndim, cin, cout, kernel, stride=1, padding=0, dilation=1, bias=True):
        self.ndim, self.cin, self.cout = ndim, cin, cout
        self.kernel = _tup(kernel, ndim)
        self.stride, self.padding = _tup(stride, ndim), _tup(padding, ndim)
        self.dilation = _tup(dilation, ndim)
        self.weight = nn.Parameter((cout, cin) + self.kernel, DTYPE)
        self.bias = nn.Parameter((cout,), DTYPE) if bias else None

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        op = {1: relax.op.nn.conv1d, 2: relax.op.nn.conv2d, 3: relax.op.nn.conv3d}[self.ndim]
        y = _emit(op(x._expr, self.weight._expr, strides=self.stride, padding=self.padding,
                     dilation=self.dilation), f"conv{self.ndim}d")
        if self.bias is not None:
            y = y + nn.op.reshape(self.bias, (1, self.cout) + (1,) * self.ndim)
        return y

    def init_values(self, rng):
        fan_in = self.cin * math.prod(self.kernel)
        values = {"weight": rng.normal(0, 1 / math.sqrt(fan_in), self.weight.shape)}
        if self.bias is not None:
            values["bias"] = rng.normal(0, 0.1, (self.cout,))
        return values


class ConvTranspose(_Layer):
    """N-d transposed convolution, IO.. weight (as ``torch.nn.ConvTransposeNd``), lowered to
    ``relax.op.nn.conv{1,2,3}d_transpose`` (``relax.frontend.nn`` has only a 1-d module)."""

    def __init__(self, ndim, cin, cout, kernel, stride=1, padding=0, output_padding=0,
                 bias=True):
        self.ndim, self.cin, self.cout = ndim, cin, cout
        self.kernel = _tup(kernel, ndim)
        self.stride, self.padding = _tup(stride, ndim), _tup(padding, ndim)
        self.output_padding = _tup(output_padding, ndim)
        self.weight = nn.Parameter((cin, cout) + self.kernel, DTYPE)
        self.bias = nn.Parameter((cout,), DTYPE) if bias else None

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        op = {1: relax.op.nn.conv1d_transpose, 2: relax.op.nn.conv2d_transpose,
              3: relax.op.nn.conv3d_transpose}[self.ndim]
        y = _emit(op(x._expr, self.weight._expr, strides=self.stride, padding=self.padding,
                     output_padding=self.output_padding), f"conv{self.ndim}d_transpose")
        if self.bias is not None:
            y = y + nn.op.reshape(self.bias, (1, self.cout) + (1,) * self.ndim)
        return y

    def init_values(self, rng):
        # Each output pixel sees about cin * prod(k / s) taps.
        fan_in = max(1.0, self.cin * math.prod(k / s for k, s in zip(self.kernel, self.stride)))
        values = {"weight": rng.normal(0, 1 / math.sqrt(fan_in), self.weight.shape)}
        if self.bias is not None:
            values["bias"] = rng.normal(0, 0.1, (self.cout,))
        return values


class BatchNorm(_Layer):
    """Inference BatchNorm over axis 1 (``torch.nn.BatchNormNd`` in eval mode)."""

    def __init__(self, channels, eps=1e-5):
        self.channels, self.eps = channels, eps
        self.weight = nn.Parameter((channels,), DTYPE)
        self.bias = nn.Parameter((channels,), DTYPE)
        self.running_mean = nn.Parameter((channels,), DTYPE)
        self.running_var = nn.Parameter((channels,), DTYPE)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        bn = relax.op.nn.batch_norm(x._expr, self.weight._expr, self.bias._expr,
                                    self.running_mean._expr, self.running_var._expr, axis=1,
                                    epsilon=self.eps, training=False)
        return _emit(bn, "batch_norm")[0]

    def init_values(self, rng):
        c = self.channels
        return {"weight": rng.uniform(0.5, 1.5, c), "bias": rng.normal(0, 0.1, c),
                "running_mean": rng.normal(0, 0.1, c), "running_var": rng.uniform(0.5, 1.5, c)}


class PReLU(_Layer):
    """Per-channel PReLU (``torch.nn.PReLU(channels)``)."""

    def __init__(self, channels):
        self.channels = channels
        self.weight = nn.Parameter((channels,), DTYPE)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        return _emit(relax.op.nn.prelu(x._expr, self.weight._expr, axis=1), "prelu")

    def init_values(self, rng):
        return {"weight": rng.uniform(0.1, 0.4, self.channels)}


def instance_norm(x: nn.Tensor, eps: float = 1e-5) -> nn.Tensor:
    """``torch.nn.InstanceNorm2d(affine=False, track_running_stats=False)``."""
    axes = list(range(2, x.ndim))
    mean = relax.op.mean(x._expr, axes, keepdims=True)
    var = relax.op.variance(x._expr, axes, keepdims=True)
    return _emit(relax.op.divide(relax.op.subtract(x._expr, mean),
                                 relax.op.sqrt(relax.op.add(var, relax.const(eps, DTYPE)))),
                 "instance_norm")


def leaky_relu(x: nn.Tensor, alpha: float) -> nn.Tensor:
    return _emit(relax.op.nn.leakyrelu(x._expr, alpha), "leaky_relu")


def reflection_pad(x: nn.Tensor, pad: int) -> nn.Tensor:
    width = [0, 0, 0, 0] + [pad, pad] * (x.ndim - 2)
    return _emit(relax.op.nn.pad(x._expr, width, "reflect"), "reflection_pad")


# --------------------------------------------------------------------------- models


class DCGANGenerator(nn.Module):
    """Radford et al. 2016: z (nz×1×1) → 4×4 → 8 → 16 → 32 → 64×64, BN+ReLU, Tanh."""

    def __init__(self, nz=100, ngf=64, channels=3):
        widths = [nz, ngf * 8, ngf * 4, ngf * 2, ngf, channels]
        self.deconvs = nn.ModuleList([
            ConvTranspose(2, cin, cout, 4, 1 if i == 0 else 2, 0 if i == 0 else 1, bias=False)
            for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:]))])
        self.norms = nn.ModuleList([BatchNorm(c) for c in widths[1:-1]])

    def forward(self, z: nn.Tensor) -> nn.Tensor:
        x = z
        for i, deconv in enumerate(self.deconvs):
            x = deconv(x)
            x = nn.op.relu(self.norms[i](x)) if i < len(self.norms) else nn.op.tanh(x)
        return x


class FSRCNN(nn.Module):
    """Dong et al. 2016, FSRCNN(d, s, m): conv5 → shrink 1×1 → m × conv3 → expand 1×1 →
    deconv 9×9 with stride = scale (PReLU after every conv)."""

    def __init__(self, scale=2, channels=1, d=56, s=12, m=4):
        self.feature = Conv(2, channels, d, 5, padding=2)
        self.feature_act = PReLU(d)
        self.shrink = Conv(2, d, s, 1)
        self.shrink_act = PReLU(s)
        self.mapping = nn.ModuleList([Conv(2, s, s, 3, padding=1) for _ in range(m)])
        self.mapping_act = nn.ModuleList([PReLU(s) for _ in range(m)])
        self.expand = Conv(2, s, d, 1)
        self.expand_act = PReLU(d)
        self.deconv = ConvTranspose(2, d, channels, 9, scale, 4, scale - 1)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        x = self.feature_act(self.feature(x))
        x = self.shrink_act(self.shrink(x))
        for conv, act in zip(self.mapping, self.mapping_act):
            x = act(conv(x))
        x = self.expand_act(self.expand(x))
        return self.deconv(x)


class UnetBlock(nn.Module):
    """pix2pix ``UnetSkipConnectionBlock`` with BatchNorm (so convs have no bias, except the
    outermost deconv); dropout is the identity at inference."""

    def __init__(self, outer, inner, input_nc=None, submodule=None, outermost=False,
                 innermost=False):
        input_nc = outer if input_nc is None else input_nc
        self.outermost, self.innermost = outermost, innermost
        self.downconv = Conv(2, input_nc, inner, 4, 2, 1, bias=False)
        self.submodule = submodule
        if outermost:
            self.upconv = ConvTranspose(2, inner * 2, outer, 4, 2, 1, bias=True)
        elif innermost:
            self.upconv = ConvTranspose(2, inner, outer, 4, 2, 1, bias=False)
            self.upnorm = BatchNorm(outer)
        else:
            self.downnorm = BatchNorm(inner)
            self.upconv = ConvTranspose(2, inner * 2, outer, 4, 2, 1, bias=False)
            self.upnorm = BatchNorm(outer)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        if self.outermost:
            y = self.submodule(self.downconv(x))
            return nn.op.tanh(self.upconv(nn.op.relu(y)))
        y = self.downconv(leaky_relu(x, 0.2))
        if not self.innermost:
            y = self.submodule(self.downnorm(y))
        y = self.upnorm(self.upconv(nn.op.relu(y)))
        return nn.op.concat([x, y], dim=1)


class Pix2PixUnet(nn.Module):
    """pix2pix ``UnetGenerator(num_downs=log2(size))``: 8 downs for 256×256."""

    def __init__(self, size=256, ngf=64, in_channels=3, out_channels=3):
        num_downs = int(round(math.log2(size)))
        if 2 ** num_downs != size or num_downs < 5:
            raise ValueError(f"pix2pix U-Net size must be a power of two >= 32, got {size}")
        block = UnetBlock(ngf * 8, ngf * 8, innermost=True)
        for _ in range(num_downs - 5):
            block = UnetBlock(ngf * 8, ngf * 8, submodule=block)
        block = UnetBlock(ngf * 4, ngf * 8, submodule=block)
        block = UnetBlock(ngf * 2, ngf * 4, submodule=block)
        block = UnetBlock(ngf, ngf * 2, submodule=block)
        self.model = UnetBlock(out_channels, ngf, input_nc=in_channels, submodule=block,
                               outermost=True)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        return self.model(x)


class ResnetBlock(nn.Module):
    def __init__(self, dim):
        self.conv1 = Conv(2, dim, dim, 3)
        self.conv2 = Conv(2, dim, dim, 3)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        y = nn.op.relu(instance_norm(self.conv1(reflection_pad(x, 1))))
        y = instance_norm(self.conv2(reflection_pad(y, 1)))
        return x + y


class CycleGANResnet(nn.Module):
    """CycleGAN ``ResnetGenerator`` (InstanceNorm without affine, so convs have biases):
    c7s1-64, d128, d256, n_blocks × R256, u128, u64, c7s1-3, Tanh."""

    def __init__(self, ngf=64, n_blocks=9, in_channels=3, out_channels=3):
        self.stem = Conv(2, in_channels, ngf, 7)
        self.downs = nn.ModuleList([Conv(2, ngf * 2 ** i, ngf * 2 ** (i + 1), 3, 2, 1)
                                    for i in range(2)])
        self.blocks = nn.ModuleList([ResnetBlock(ngf * 4) for _ in range(n_blocks)])
        self.ups = nn.ModuleList([ConvTranspose(2, ngf * 2 ** (2 - i), ngf * 2 ** (1 - i), 3,
                                                2, 1, 1) for i in range(2)])
        self.head = Conv(2, ngf, out_channels, 7)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        x = nn.op.relu(instance_norm(self.stem(reflection_pad(x, 3))))
        for down in self.downs:
            x = nn.op.relu(instance_norm(down(x)))
        for block in self.blocks:
            x = block(x)
        for up in self.ups:
            x = nn.op.relu(instance_norm(up(x)))
        return nn.op.tanh(self.head(reflection_pad(x, 3)))


class SimpleBaselineHead(nn.Module):
    """Xiao et al. 2018: num_layers × (deconv 4×4 s2 + BN + ReLU) on ResNet C5 features,
    then a 1×1 conv to one heatmap per joint."""

    def __init__(self, in_channels=2048, width_channels=256, joints=17, num_layers=3):
        widths = [in_channels] + [width_channels] * num_layers
        self.deconvs = nn.ModuleList([ConvTranspose(2, a, b, 4, 2, 1, bias=False)
                                      for a, b in zip(widths[:-1], widths[1:])])
        self.norms = nn.ModuleList([BatchNorm(width_channels) for _ in range(num_layers)])
        self.final_layer = Conv(2, width_channels, joints, 1)

    def forward(self, features: nn.Tensor) -> nn.Tensor:
        x = features
        for deconv, norm in zip(self.deconvs, self.norms):
            x = nn.op.relu(norm(deconv(x)))
        return self.final_layer(x)


class FCN8sHead(nn.Module):
    """FCN-8s (Long et al.) head on VGG16 pool3 (/8), pool4 (/16), fc7 (/32): score layers,
    upscore2 (4×4 s2), upscore_pool4 (4×4 s2), upscore8 (16×16 s8), aligned variant."""

    def __init__(self, classes=21, fc7_channels=4096, pool4_channels=512, pool3_channels=256):
        self.score_fr = Conv(2, fc7_channels, classes, 1)
        self.score_pool4 = Conv(2, pool4_channels, classes, 1)
        self.score_pool3 = Conv(2, pool3_channels, classes, 1)
        self.upscore2 = ConvTranspose(2, classes, classes, 4, 2, 1, bias=False)
        self.upscore_pool4 = ConvTranspose(2, classes, classes, 4, 2, 1, bias=False)
        self.upscore8 = ConvTranspose(2, classes, classes, 16, 8, 4, bias=False)

    def forward(self, pool3: nn.Tensor, pool4: nn.Tensor, fc7: nn.Tensor) -> nn.Tensor:
        x = self.upscore2(self.score_fr(fc7)) + self.score_pool4(pool4)
        x = self.upscore_pool4(x) + self.score_pool3(pool3)
        return self.upscore8(x)


class HiFiResBlock(nn.Module):
    """HiFi-GAN ResBlock1: for each dilation, lrelu → dilated conv → lrelu → conv, residual."""

    def __init__(self, channels, kernel, dilations=(1, 3, 5)):
        self.convs1 = nn.ModuleList([Conv(1, channels, channels, kernel, 1,
                                          (kernel * d - d) // 2, d) for d in dilations])
        self.convs2 = nn.ModuleList([Conv(1, channels, channels, kernel, 1, (kernel - 1) // 2)
                                     for _ in dilations])

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            x = c2(leaky_relu(c1(leaky_relu(x, 0.1)), 0.1)) + x
        return x


class HiFiGAN(nn.Module):
    """HiFi-GAN V1 generator (Kong et al. 2020): conv_pre, per upsample rate lrelu →
    ConvTranspose1d → multi-receptive-field fusion (mean of ResBlock1s), lrelu, conv_post,
    Tanh.  Weight norm is folded (as for inference)."""

    def __init__(self, mels=80, channels=512, upsample_rates=(8, 8, 2, 2),
                 upsample_kernel_sizes=(16, 16, 4, 4), resblock_kernel_sizes=(3, 7, 11),
                 resblock_dilations=((1, 3, 5), (1, 3, 5), (1, 3, 5))):
        self.num_kernels = len(resblock_kernel_sizes)
        self.conv_pre = Conv(1, mels, channels, 7, 1, 3)
        self.ups = nn.ModuleList([
            ConvTranspose(1, channels // 2 ** i, channels // 2 ** (i + 1), k, u, (k - u) // 2)
            for i, (u, k) in enumerate(zip(upsample_rates, upsample_kernel_sizes))])
        self.resblocks = nn.ModuleList([
            HiFiResBlock(channels // 2 ** (i + 1), k, tuple(d))
            for i in range(len(upsample_rates))
            for k, d in zip(resblock_kernel_sizes, resblock_dilations)])
        self.conv_post = Conv(1, channels // 2 ** len(upsample_rates), 1, 7, 1, 3)

    def forward(self, mel: nn.Tensor) -> nn.Tensor:
        x = self.conv_pre(mel)
        for i, up in enumerate(self.ups):
            x = up(leaky_relu(x, 0.1))
            xs = None
            for j in range(self.num_kernels):
                y = self.resblocks[i * self.num_kernels + j](x)
                xs = y if xs is None else xs + y
            x = xs / float(self.num_kernels)
        return nn.op.tanh(self.conv_post(leaky_relu(x, 0.01)))


class UNet3DLevel(nn.Module):
    def __init__(self, cin, skip):
        self.up = ConvTranspose(3, cin, cin, 2, 2)
        self.conv1 = Conv(3, cin + skip, skip, 3, 1, 1, bias=False)
        self.bn1 = BatchNorm(skip)
        self.conv2 = Conv(3, skip, skip, 3, 1, 1, bias=False)
        self.bn2 = BatchNorm(skip)

    def forward(self, x: nn.Tensor, skip: nn.Tensor) -> nn.Tensor:
        x = nn.op.concat([skip, self.up(x)], dim=1)
        x = nn.op.relu(self.bn1(self.conv1(x)))
        return nn.op.relu(self.bn2(self.conv2(x)))


class UNet3DDecoder(nn.Module):
    """3-D U-Net (Çiçek et al. 2016) synthesis path: from the 8·base-channel bottleneck, three
    levels of 2×2×2 s2 up-convolution, concat with the skip, two 3×3×3 conv+BN+ReLU; then a
    1×1×1 conv to the label channels."""

    def __init__(self, base=64, classes=3):
        self.levels = nn.ModuleList([UNet3DLevel(base * 8, base * 4),
                                     UNet3DLevel(base * 4, base * 2),
                                     UNet3DLevel(base * 2, base)])
        self.final = Conv(3, base, classes, 1)

    def forward(self, bottom: nn.Tensor, skip3: nn.Tensor, skip2: nn.Tensor,
                skip1: nn.Tensor) -> nn.Tensor:
        x = bottom
        for level, skip in zip(self.levels, (skip3, skip2, skip1)):
            x = level(x, skip)
        return self.final(x)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class ZooModel:
    """A zoo entry: ``make(**knobs) -> (nn.Module, input_shapes(batch))``."""

    name: str
    make: Callable
    defaults: dict
    small: dict
    description: str


def _dcgan(nz, ngf, channels):
    return DCGANGenerator(nz, ngf, channels), lambda n: {"z": (n, nz, 1, 1)}


def _fsrcnn(scale):
    def make(size, channels, d, s, m):
        return (FSRCNN(scale, channels, d, s, m),
                lambda n: {"x": (n, channels, size, size)})
    return make


def _pix2pix(size, ngf, in_channels, out_channels):
    return (Pix2PixUnet(size, ngf, in_channels, out_channels),
            lambda n: {"x": (n, in_channels, size, size)})


def _cyclegan(size, ngf, n_blocks, in_channels, out_channels):
    return (CycleGANResnet(ngf, n_blocks, in_channels, out_channels),
            lambda n: {"x": (n, in_channels, size, size)})


def _pose(height, width, in_channels, width_channels, joints, num_layers):
    return (SimpleBaselineHead(in_channels, width_channels, joints, num_layers),
            lambda n: {"features": (n, in_channels, height, width)})


def _fcn8s(size, classes, fc7_channels, pool4_channels, pool3_channels):
    if size % 32:
        raise ValueError(f"FCN-8s size must be a multiple of 32, got {size}")
    return (FCN8sHead(classes, fc7_channels, pool4_channels, pool3_channels),
            lambda n: {"pool3": (n, pool3_channels, size // 8, size // 8),
                       "pool4": (n, pool4_channels, size // 16, size // 16),
                       "fc7": (n, fc7_channels, size // 32, size // 32)})


def _hifigan(frames, mels, channels, upsample_rates, upsample_kernel_sizes,
             resblock_kernel_sizes, resblock_dilations):
    return (HiFiGAN(mels, channels, upsample_rates, upsample_kernel_sizes,
                    resblock_kernel_sizes, resblock_dilations),
            lambda n: {"mel": (n, mels, frames)})


def _unet3d(size, base, classes):
    if size % 8:
        raise ValueError(f"3-D U-Net size must be a multiple of 8, got {size}")
    return (UNet3DDecoder(base, classes),
            lambda n: {"bottom": (n, base * 8) + (size // 8,) * 3,
                       "skip3": (n, base * 4) + (size // 4,) * 3,
                       "skip2": (n, base * 2) + (size // 2,) * 3,
                       "skip1": (n, base) + (size,) * 3})


_FSRCNN_DEFAULTS = {"size": 128, "channels": 1, "d": 56, "s": 12, "m": 4}
_FSRCNN_SMALL = {"size": 12, "channels": 1, "d": 8, "s": 4, "m": 2}

MODELS: dict[str, ZooModel] = {m.name: m for m in [
    ZooModel("dcgan", _dcgan, {"nz": 100, "ngf": 64, "channels": 3},
             {"nz": 16, "ngf": 4, "channels": 3}, "DCGAN generator 64×64"),
    *[ZooModel(f"fsrcnn_x{s}", _fsrcnn(s), dict(_FSRCNN_DEFAULTS), dict(_FSRCNN_SMALL),
               f"FSRCNN ×{s} super-resolution") for s in (2, 3, 4)],
    ZooModel("pix2pix_unet", _pix2pix,
             {"size": 256, "ngf": 64, "in_channels": 3, "out_channels": 3},
             {"size": 32, "ngf": 4, "in_channels": 3, "out_channels": 3},
             "pix2pix U-Net 256 generator"),
    ZooModel("cyclegan_resnet", _cyclegan,
             {"size": 256, "ngf": 64, "n_blocks": 9, "in_channels": 3, "out_channels": 3},
             {"size": 16, "ngf": 4, "n_blocks": 2, "in_channels": 3, "out_channels": 3},
             "CycleGAN ResNet generator"),
    ZooModel("simplebaseline_head", _pose,
             {"height": 8, "width": 6, "in_channels": 2048, "width_channels": 256,
              "joints": 17, "num_layers": 3},
             {"height": 4, "width": 3, "in_channels": 32, "width_channels": 8, "joints": 5,
              "num_layers": 3},
             "SimpleBaseline pose head (ResNet-50 C5 features of a 256×192 crop)"),
    ZooModel("fcn8s_head", _fcn8s,
             {"size": 224, "classes": 21, "fc7_channels": 4096, "pool4_channels": 512,
              "pool3_channels": 256},
             {"size": 64, "classes": 5, "fc7_channels": 32, "pool4_channels": 16,
              "pool3_channels": 8},
             "FCN-8s head on VGG16 features"),
    ZooModel("hifigan", _hifigan,
             {"frames": 32, "mels": 80, "channels": 512, "upsample_rates": (8, 8, 2, 2),
              "upsample_kernel_sizes": (16, 16, 4, 4), "resblock_kernel_sizes": (3, 7, 11),
              "resblock_dilations": ((1, 3, 5), (1, 3, 5), (1, 3, 5))},
             {"frames": 4, "mels": 8, "channels": 16, "upsample_rates": (8, 2),
              "upsample_kernel_sizes": (16, 4), "resblock_kernel_sizes": (3,),
              "resblock_dilations": ((1, 3),)},
             "HiFi-GAN V1 generator (1-d)"),
    ZooModel("unet3d_decoder", _unet3d, {"size": 64, "base": 64, "classes": 3},
             {"size": 8, "base": 4, "classes": 3}, "3-D U-Net decoder"),
]}


@dataclass
class ModelBundle:
    """A zoo model: Relax module + weights + what is needed to rebuild it elsewhere."""

    name: str
    mod: tvm.IRModule
    params: dict[str, np.ndarray]          # Relax parameter name → value (for build)
    input_shapes: dict[str, tuple[int, ...]]
    state_dict: dict[str, np.ndarray]      # PyTorch state_dict name → value (same arrays)
    config: dict = field(default_factory=dict)
    batch: int = 1
    seed: int = 0

    @property
    def output_shape(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self.mod["main"].ret_ty.shape)

    def random_inputs(self, seed: int = 1) -> list[np.ndarray]:
        """Standard-normal inputs, in ``input_shapes`` order."""
        rng = np.random.default_rng(seed)
        return [rng.standard_normal(s).astype(DTYPE) for s in self.input_shapes.values()]

    def torch_module(self):
        """The same architecture as a ``torch.nn.Module`` (eval mode) with the same weights
        (needs torch; see :mod:`tvm_deconv.importers`)."""
        from .importers import torch_module  # pylint: disable=import-outside-toplevel

        return torch_module(self)


def _layers(module: nn.Module, prefix: str = ""):
    """(prefix, layer) for every parameter-owning layer, in attribute order."""
    if isinstance(module, _Layer):
        yield prefix, module
        return
    items = (enumerate(module) if isinstance(module, nn.ModuleList)
             else module.__dict__.items())
    for name, item in items:
        if isinstance(item, nn.Module):
            yield from _layers(item, f"{prefix}{name}.")


def _param_seed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2 ** 63)


# short names the command line also takes
MODEL_ALIASES = {"pix2pix": "pix2pix_unet", "cyclegan": "cyclegan_resnet",
                 "pose": "simplebaseline_head", "fcn8s": "fcn8s_head", "unet3d": "unet3d_decoder"}


def build_model(name: str, batch: int = 1, seed: int = 0, small: bool = False,
                **knobs) -> ModelBundle:
    """Build zoo model ``name`` (see ``MODELS``) with random weights from ``seed``.

    ``small=True`` starts from the small test sizes instead of the published ones; ``knobs``
    override either (e.g. ``size=64``, ``ngf=16``).  Each weight's values depend only on
    ``seed`` and its name, so changing one knob does not reshuffle the others.
    """
    name = MODEL_ALIASES.get(name, name)
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; the zoo has: {', '.join(MODELS)} "
                         f"(short names: {', '.join(MODEL_ALIASES)})")
    entry = MODELS[name]
    config = dict(entry.small if small else entry.defaults)
    unknown = set(knobs) - set(config)
    if unknown:
        raise ValueError(f"{name} has no knob(s) {sorted(unknown)}; knobs: {sorted(config)}")
    config.update(knobs)
    module, shapes_of = entry.make(**config)
    input_shapes = {k: tuple(v) for k, v in shapes_of(batch).items()}

    state_dict: dict[str, np.ndarray] = {}
    for prefix, layer in _layers(module):
        for attr, value in layer.init_values(
                np.random.default_rng(_param_seed(seed, prefix))).items():
            state_dict[prefix + attr] = np.asarray(value, DTYPE)

    spec = {"forward": {k: nn_spec.Tensor(list(v), DTYPE) for k, v in input_shapes.items()}}
    exported, named_params = module.export_tvm(spec=spec)
    func = exported["forward"]
    if func.attrs is not None and "global_symbol" in func.attrs:
        func = func.with_attr("global_symbol", "main")
    mod = tvm.IRModule({"main": func})

    relax_params = list(func.params)[len(input_shapes):]
    assert len(relax_params) == len(named_params) == len(state_dict), (
        len(relax_params), len(named_params), len(state_dict))
    params = {}
    for var, (dotted, param) in zip(relax_params, named_params):
        value = state_dict[dotted]
        assert tuple(value.shape) == tuple(int(d) for d in param.shape), dotted
        params[var.name] = value
    return ModelBundle(name, mod, params, input_shapes, state_dict, config, batch, seed)


def list_models() -> list[str]:
    return list(MODELS)


# --------------------------------------------------------------------------- legacy API


def dcgan_generator(batch: int = 1, nz: int = 100, ngf: int = 64, channels: int = 3,
                    seed: int = 0) -> tuple[tvm.IRModule, dict[str, np.ndarray]]:
    """The DCGAN generator (Radford et al.) for 64×64 images: five transposed convs.

    Returns ``(mod, params)``: ``main(z, *weights)`` with ``z`` of shape (batch, nz, 1, 1);
    pass ``params`` (name → array) to :func:`tvm_deconv.build` to bind the weights.
    Same as ``build_model("dcgan", ...)``.
    """
    bundle = build_model("dcgan", batch=batch, seed=seed, nz=nz, ngf=ngf, channels=channels)
    return bundle.mod, bundle.params
