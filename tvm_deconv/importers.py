"""The zoo's architectures as ``torch.nn`` modules, and the PyTorch / ONNX routes into Relax.

Every model of :mod:`tvm_deconv.models` is written here a second time with ``torch.nn``
(same module attribute names, so the :class:`~tvm_deconv.models.ModelBundle`'s
``state_dict`` loads as is). The same weights then give the same outputs through every
route::

    bundle = build_model("fsrcnn_x3", small=True)
    model = torch_module(bundle)                  # torch.nn.Module, eval mode, same weights
    mod, params = from_pytorch(bundle)            # torch.export → from_exported_program
    mod, params = from_onnx(bundle)               # torch.onnx.export → relax.frontend.onnx
    ex = tvm_deconv.build(mod, "llvm", params)

torch and onnx are optional: they are imported inside the functions that need them
(``pip install tvm-deconv[torch]`` / ``[onnx]``).
"""

from __future__ import annotations

import copy
import functools
import io
import warnings
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .models import ModelBundle


@functools.lru_cache(maxsize=None)
def _classes() -> dict:
    """Define the torch.nn classes (torch is imported only here)."""
    # pylint: disable=import-outside-toplevel,too-many-locals,too-many-statements
    import torch
    from torch import nn
    import torch.nn.functional as F

    class DCGANGenerator(nn.Module):
        def __init__(self, nz=100, ngf=64, channels=3):
            super().__init__()
            widths = [nz, ngf * 8, ngf * 4, ngf * 2, ngf, channels]
            self.deconvs = nn.ModuleList([
                nn.ConvTranspose2d(a, b, 4, 1 if i == 0 else 2, 0 if i == 0 else 1, bias=False)
                for i, (a, b) in enumerate(zip(widths[:-1], widths[1:]))])
            self.norms = nn.ModuleList([nn.BatchNorm2d(c) for c in widths[1:-1]])

        def forward(self, z):
            x = z
            for i, layer in enumerate(self.deconvs):
                x = layer(x)
                x = torch.relu(self.norms[i](x)) if i < len(self.norms) else torch.tanh(x)
            return x

    class FSRCNN(nn.Module):
        def __init__(self, scale=2, channels=1, d=56, s=12, m=4):
            super().__init__()
            self.feature = nn.Conv2d(channels, d, 5, padding=2)
            self.feature_act = nn.PReLU(d)
            self.shrink = nn.Conv2d(d, s, 1)
            self.shrink_act = nn.PReLU(s)
            self.mapping = nn.ModuleList([nn.Conv2d(s, s, 3, padding=1) for _ in range(m)])
            self.mapping_act = nn.ModuleList([nn.PReLU(s) for _ in range(m)])
            self.expand = nn.Conv2d(s, d, 1)
            self.expand_act = nn.PReLU(d)
            self.deconv = nn.ConvTranspose2d(d, channels, 9, scale, 4, scale - 1)

        def forward(self, x):
            x = self.feature_act(self.feature(x))
            x = self.shrink_act(self.shrink(x))
            for c, a in zip(self.mapping, self.mapping_act):
                x = a(c(x))
            return self.deconv(self.expand_act(self.expand(x)))

    class UnetBlock(nn.Module):
        def __init__(self, outer, inner, input_nc=None, submodule=None, outermost=False,
                     innermost=False):
            super().__init__()
            input_nc = outer if input_nc is None else input_nc
            self.outermost, self.innermost = outermost, innermost
            self.downconv = nn.Conv2d(input_nc, inner, 4, 2, 1, bias=False)
            self.submodule = submodule
            if outermost:
                self.upconv = nn.ConvTranspose2d(inner * 2, outer, 4, 2, 1, bias=True)
            elif innermost:
                self.upconv = nn.ConvTranspose2d(inner, outer, 4, 2, 1, bias=False)
                self.upnorm = nn.BatchNorm2d(outer)
            else:
                self.downnorm = nn.BatchNorm2d(inner)
                self.upconv = nn.ConvTranspose2d(inner * 2, outer, 4, 2, 1, bias=False)
                self.upnorm = nn.BatchNorm2d(outer)

        def forward(self, x):
            if self.outermost:
                return torch.tanh(self.upconv(torch.relu(self.submodule(self.downconv(x)))))
            y = self.downconv(F.leaky_relu(x, 0.2))
            if not self.innermost:
                y = self.submodule(self.downnorm(y))
            y = self.upnorm(self.upconv(torch.relu(y)))
            return torch.cat([x, y], 1)

    class Pix2PixUnet(nn.Module):
        def __init__(self, size=256, ngf=64, in_channels=3, out_channels=3):
            super().__init__()
            num_downs = int(round(np.log2(size)))
            block = UnetBlock(ngf * 8, ngf * 8, innermost=True)
            for _ in range(num_downs - 5):
                block = UnetBlock(ngf * 8, ngf * 8, submodule=block)
            block = UnetBlock(ngf * 4, ngf * 8, submodule=block)
            block = UnetBlock(ngf * 2, ngf * 4, submodule=block)
            block = UnetBlock(ngf, ngf * 2, submodule=block)
            self.model = UnetBlock(out_channels, ngf, input_nc=in_channels, submodule=block,
                                   outermost=True)

        def forward(self, x):
            return self.model(x)

    def inorm(x):
        return F.instance_norm(x, eps=1e-5)

    def rpad(x, p):
        return F.pad(x, (p, p, p, p), mode="reflect")

    class ResnetBlock(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.conv1 = nn.Conv2d(dim, dim, 3)
            self.conv2 = nn.Conv2d(dim, dim, 3)

        def forward(self, x):
            y = torch.relu(inorm(self.conv1(rpad(x, 1))))
            return x + inorm(self.conv2(rpad(y, 1)))

    class CycleGANResnet(nn.Module):
        def __init__(self, ngf=64, n_blocks=9, in_channels=3, out_channels=3):
            super().__init__()
            self.stem = nn.Conv2d(in_channels, ngf, 7)
            self.downs = nn.ModuleList([nn.Conv2d(ngf * 2 ** i, ngf * 2 ** (i + 1), 3, 2, 1)
                                        for i in range(2)])
            self.blocks = nn.ModuleList([ResnetBlock(ngf * 4) for _ in range(n_blocks)])
            self.ups = nn.ModuleList([nn.ConvTranspose2d(ngf * 2 ** (2 - i),
                                                         ngf * 2 ** (1 - i), 3, 2, 1, 1)
                                      for i in range(2)])
            self.head = nn.Conv2d(ngf, out_channels, 7)

        def forward(self, x):
            x = torch.relu(inorm(self.stem(rpad(x, 3))))
            for d in self.downs:
                x = torch.relu(inorm(d(x)))
            for b in self.blocks:
                x = b(x)
            for u in self.ups:
                x = torch.relu(inorm(u(x)))
            return torch.tanh(self.head(rpad(x, 3)))

    class SimpleBaselineHead(nn.Module):
        def __init__(self, in_channels=2048, width_channels=256, joints=17, num_layers=3):
            super().__init__()
            widths = [in_channels] + [width_channels] * num_layers
            self.deconvs = nn.ModuleList([nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False)
                                          for a, b in zip(widths[:-1], widths[1:])])
            self.norms = nn.ModuleList([nn.BatchNorm2d(width_channels)
                                        for _ in range(num_layers)])
            self.final_layer = nn.Conv2d(width_channels, joints, 1)

        def forward(self, features):
            x = features
            for d, n in zip(self.deconvs, self.norms):
                x = torch.relu(n(d(x)))
            return self.final_layer(x)

    class FCN8sHead(nn.Module):
        def __init__(self, classes=21, fc7_channels=4096, pool4_channels=512,
                     pool3_channels=256):
            super().__init__()
            self.score_fr = nn.Conv2d(fc7_channels, classes, 1)
            self.score_pool4 = nn.Conv2d(pool4_channels, classes, 1)
            self.score_pool3 = nn.Conv2d(pool3_channels, classes, 1)
            self.upscore2 = nn.ConvTranspose2d(classes, classes, 4, 2, 1, bias=False)
            self.upscore_pool4 = nn.ConvTranspose2d(classes, classes, 4, 2, 1, bias=False)
            self.upscore8 = nn.ConvTranspose2d(classes, classes, 16, 8, 4, bias=False)

        def forward(self, pool3, pool4, fc7):
            x = self.upscore2(self.score_fr(fc7)) + self.score_pool4(pool4)
            x = self.upscore_pool4(x) + self.score_pool3(pool3)
            return self.upscore8(x)

    class HiFiResBlock(nn.Module):
        def __init__(self, channels, kernel, dilations=(1, 3, 5)):
            super().__init__()
            self.convs1 = nn.ModuleList([nn.Conv1d(channels, channels, kernel, 1,
                                                   (kernel * d - d) // 2, d) for d in dilations])
            self.convs2 = nn.ModuleList([nn.Conv1d(channels, channels, kernel, 1,
                                                   (kernel - 1) // 2) for _ in dilations])

        def forward(self, x):
            for c1, c2 in zip(self.convs1, self.convs2):
                x = c2(F.leaky_relu(c1(F.leaky_relu(x, 0.1)), 0.1)) + x
            return x

    class HiFiGAN(nn.Module):
        def __init__(self, mels=80, channels=512, upsample_rates=(8, 8, 2, 2),
                     upsample_kernel_sizes=(16, 16, 4, 4), resblock_kernel_sizes=(3, 7, 11),
                     resblock_dilations=((1, 3, 5), (1, 3, 5), (1, 3, 5))):
            super().__init__()
            self.num_kernels = len(resblock_kernel_sizes)
            self.conv_pre = nn.Conv1d(mels, channels, 7, 1, 3)
            self.ups = nn.ModuleList([
                nn.ConvTranspose1d(channels // 2 ** i, channels // 2 ** (i + 1), k, u,
                                   (k - u) // 2)
                for i, (u, k) in enumerate(zip(upsample_rates, upsample_kernel_sizes))])
            self.resblocks = nn.ModuleList([
                HiFiResBlock(channels // 2 ** (i + 1), k, tuple(d))
                for i in range(len(upsample_rates))
                for k, d in zip(resblock_kernel_sizes, resblock_dilations)])
            self.conv_post = nn.Conv1d(channels // 2 ** len(upsample_rates), 1, 7, 1, 3)

        def forward(self, mel):
            x = self.conv_pre(mel)
            for i, up in enumerate(self.ups):
                x = up(F.leaky_relu(x, 0.1))
                xs = None
                for j in range(self.num_kernels):
                    y = self.resblocks[i * self.num_kernels + j](x)
                    xs = y if xs is None else xs + y
                x = xs / float(self.num_kernels)
            return torch.tanh(self.conv_post(F.leaky_relu(x, 0.01)))

    class UNet3DLevel(nn.Module):
        def __init__(self, cin, skip):
            super().__init__()
            self.up = nn.ConvTranspose3d(cin, cin, 2, 2)
            self.conv1 = nn.Conv3d(cin + skip, skip, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm3d(skip)
            self.conv2 = nn.Conv3d(skip, skip, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm3d(skip)

        def forward(self, x, skip):
            x = torch.cat([skip, self.up(x)], 1)
            x = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(x)))

    class UNet3DDecoder(nn.Module):
        def __init__(self, base=64, classes=3):
            super().__init__()
            self.levels = nn.ModuleList([UNet3DLevel(base * 8, base * 4),
                                         UNet3DLevel(base * 4, base * 2),
                                         UNet3DLevel(base * 2, base)])
            self.final = nn.Conv3d(base, classes, 1)

        def forward(self, bottom, skip3, skip2, skip1):
            x = bottom
            for level, skip in zip(self.levels, (skip3, skip2, skip1)):
                x = level(x, skip)
            return self.final(x)

    return {
        "dcgan": lambda nz, ngf, channels: DCGANGenerator(nz, ngf, channels),
        **{f"fsrcnn_x{s}": (lambda s: lambda size, channels, d, s_, m:
                            FSRCNN(s, channels, d, s_, m))(s) for s in (2, 3, 4)},
        "pix2pix_unet": lambda size, ngf, in_channels, out_channels:
            Pix2PixUnet(size, ngf, in_channels, out_channels),
        "cyclegan_resnet": lambda size, ngf, n_blocks, in_channels, out_channels:
            CycleGANResnet(ngf, n_blocks, in_channels, out_channels),
        "simplebaseline_head": lambda height, width, in_channels, width_channels, joints,
            num_layers: SimpleBaselineHead(in_channels, width_channels, joints, num_layers),
        "fcn8s_head": lambda size, classes, fc7_channels, pool4_channels, pool3_channels:
            FCN8sHead(classes, fc7_channels, pool4_channels, pool3_channels),
        "hifigan": lambda frames, mels, channels, upsample_rates, upsample_kernel_sizes,
            resblock_kernel_sizes, resblock_dilations: HiFiGAN(
                mels, channels, upsample_rates, upsample_kernel_sizes, resblock_kernel_sizes,
                resblock_dilations),
        "unet3d_decoder": lambda size, base, classes: UNet3DDecoder(base, classes),
    }


def _knobs(bundle: "ModelBundle") -> dict:
    config = dict(bundle.config)
    if bundle.name.startswith("fsrcnn_x"):
        config["s_"] = config.pop("s")
    return config


def torch_module(bundle: "ModelBundle"):
    """``bundle``'s architecture as a ``torch.nn.Module`` in eval mode, holding exactly
    ``bundle.state_dict`` (BatchNorm's ``num_batches_tracked`` aside)."""
    model = _classes()[bundle.name](**_knobs(bundle))
    load_weights(model, bundle.state_dict)
    return model.eval()


def load_weights(model, state_dict: dict[str, np.ndarray]) -> None:
    """Load numpy weights into a torch module, checking that every name matches."""
    import torch  # pylint: disable=import-outside-toplevel

    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state_dict.items()}
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"weights do not match the torch module: missing {missing}, "
                         f"unexpected {unexpected}")


def torch_inputs(bundle: "ModelBundle", inputs: list[np.ndarray]) -> tuple:
    import torch  # pylint: disable=import-outside-toplevel

    return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in inputs)


def run_torch(bundle: "ModelBundle", inputs: list[np.ndarray], model=None,
              float64: bool = False) -> np.ndarray:
    """PyTorch eager output of ``bundle`` for ``inputs``: float32, or with ``float64`` the
    same module and inputs in double precision (the exact answer to compare float32 routes
    with: PyTorch's own float32 kernels are 3e-5 off it on some CPUs)."""
    import torch  # pylint: disable=import-outside-toplevel

    model = torch_module(bundle) if model is None else model
    args = torch_inputs(bundle, inputs)
    if float64:
        model = copy.deepcopy(model).double()
        args = tuple(a.double() for a in args)
    with torch.no_grad():
        return model(*args).numpy()


def _example_inputs(bundle: "ModelBundle"):
    return torch_inputs(bundle, bundle.random_inputs())


def from_pytorch(bundle: "ModelBundle", model=None):
    """``torch.export.export`` + ``relax.frontend.torch.from_exported_program``.

    Returns ``(mod, params)`` with the weights detached (pass both to
    :func:`tvm_deconv.build`); ``main`` takes the inputs in ``bundle.input_shapes`` order.
    """
    # pylint: disable=import-outside-toplevel
    import torch
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    model = torch_module(bundle) if model is None else model
    with torch.no_grad():
        exported = torch.export.export(model, _example_inputs(bundle))
    mod = from_exported_program(exported, keep_params_as_input=True,
                                unwrap_unit_return_tuple=True,
                                custom_convert_map=_CONV_TRANSPOSE_3D)
    mod, params = relax.frontend.detach_params(mod)
    return mod, _named_params(mod, params.get("main", []))


def _convolution_with_3d_transpose(node, importer):
    """TVM 0.27's torch importer has no 3-d transposed conv ("Unsupported transposed
    convolution dimensionality: 5"): emit ``relax.op.nn.conv3d_transpose`` for it and leave
    every other ``aten.convolution`` to the stock converter."""
    # pylint: disable=protected-access
    args = importer.retrieve_args(node)
    x = args[0]
    transposed = args[6] if len(args) > 6 else False
    if not transposed or len(importer.shape_of(x)) != 5:
        return importer._convolution(node)
    weight, bias = args[1], (args[2] if len(args) > 2 else None)
    stride, padding = (args[3] if len(args) > 3 else 1), (args[4] if len(args) > 4 else 0)
    dilation = args[5] if len(args) > 5 else 1
    output_padding = args[7] if len(args) > 7 else 0
    groups = args[8] if len(args) > 8 else 1
    return _emit_conv_transpose3d(importer, x, weight, bias, stride, padding, output_padding,
                                  dilation, groups)


def _conv_transpose3d(node, importer):
    """``aten.conv_transpose3d.input`` (seen with ``run_ep_decomposition=False``)."""
    args = importer.retrieve_args(node)
    x, weight = args[0], args[1]
    bias = args[2] if len(args) > 2 else None
    stride, padding = (args[3] if len(args) > 3 else 1), (args[4] if len(args) > 4 else 0)
    output_padding = args[5] if len(args) > 5 else 0
    groups = args[6] if len(args) > 6 else 1
    dilation = args[7] if len(args) > 7 else 1
    return _emit_conv_transpose3d(importer, x, weight, bias, stride, padding, output_padding,
                                  dilation, groups)


def _emit_conv_transpose3d(importer, x, weight, bias, stride, padding, output_padding,
                           dilation, groups):
    """``relax.nn.conv3d_transpose`` (NCDHW / IODHW) plus the bias, if any."""
    # pylint: disable=import-outside-toplevel
    from tvm import relax

    out = importer.block_builder.emit(relax.op.nn.conv3d_transpose(
        x, weight, strides=stride, padding=padding, output_padding=output_padding,
        dilation=dilation, groups=groups, data_layout="NCDHW", kernel_layout="IODHW"))
    if bias is None:
        return out
    return importer.block_builder.emit(
        relax.op.add(out, relax.op.reshape(bias, (1, -1, 1, 1, 1))))


_CONV_TRANSPOSE_3D = {"convolution.default": _convolution_with_3d_transpose,
                      "conv_transpose3d.input": _conv_transpose3d}


def _named_params(mod, values) -> dict[str, np.ndarray]:
    """detach_params gives the weights in order; key them by ``main``'s parameter names."""
    func = mod["main"]
    num_input = int(func.attrs["num_input"]) if func.attrs and "num_input" in func.attrs \
        else len(func.params) - len(values)
    names = [p.name for p in func.params[num_input:]]
    return {n: v.numpy() if hasattr(v, "numpy") else np.asarray(v) for n, v in zip(names, values)}


def to_onnx(bundle: "ModelBundle", model=None, opset: int = 17) -> bytes:
    """Serialized ONNX model of ``bundle`` (``torch.onnx.export``, TorchScript exporter:
    the dynamo exporter needs onnxscript).  Inputs are named as in ``input_shapes``."""
    import torch  # pylint: disable=import-outside-toplevel

    model = torch_module(bundle) if model is None else model
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, _example_inputs(bundle), buffer, dynamo=False,
                          opset_version=opset, input_names=list(bundle.input_shapes),
                          output_names=["output"])
    return buffer.getvalue()


def from_onnx(bundle: "ModelBundle", model=None, opset: int = 17):
    """ONNX route: ``torch.onnx.export`` → ``relax.frontend.onnx.from_onnx``.

    Returns ``(mod, params)``; the weights are constants of ``mod``, so ``params`` is empty.
    """
    # pylint: disable=import-outside-toplevel
    import onnx
    from tvm.relax.frontend.onnx import from_onnx as _from_onnx

    proto = fold_onnx_constants(onnx.load_from_string(to_onnx(bundle, model, opset)))
    mod = _from_onnx(proto, shape_dict={k: list(v) for k, v in bundle.input_shapes.items()},
                     keep_params_in_input=False)
    return mod, {}


def fold_onnx_constants(model):
    """Replace every node whose inputs are all constants by initializers (evaluated with
    ``onnx.reference``).

    torch's TorchScript ONNX exporter computes reflection-pad widths at run time
    (ConstantOfShape → Concat → Slice with step −1 → Pad), which TVM 0.27's ONNX importer
    rejects ("Dynamic pads are not supported yet"); after folding they are constants.
    """
    # pylint: disable=import-outside-toplevel
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    opsets = {o.domain: o.version for o in model.opset_import}
    consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    weights = set(consts)
    kept, folded = [], {}
    for node in graph.node:
        inputs = [i for i in node.input if i]
        # Fold shape arithmetic only: nodes reading just folded values or small constants
        # (never a weight-only op such as a transpose of a weight, which is fine but large).
        if node.domain in ("", "ai.onnx") and all(i in consts for i in inputs) and not any(
                i in weights and consts[i].size > 64 for i in inputs):
            outputs = ReferenceEvaluator(node, opsets=opsets).run(
                None, {i: consts[i] for i in inputs})
            for name, value in zip(node.output, outputs):
                consts[name] = folded[name] = np.asarray(value)
            continue
        kept.append(node)
    if not folded:
        return model
    used = {i for node in kept for i in node.input} | {o.name for o in graph.output}
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in folded.items()
                             if k in used)
    return model


def run_onnxruntime(onnx_bytes: bytes, bundle: "ModelBundle",
                    inputs: list[np.ndarray]) -> np.ndarray:
    """onnxruntime's output for the exported model (a third reference, optional)."""
    import onnxruntime as ort  # pylint: disable=import-outside-toplevel

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    return session.run(None, dict(zip(bundle.input_shapes, inputs)))[0]
