"""The layer zoo: transposed convs of the generative / segmentation / pose models users run.

Each entry is a :class:`ZooLayer`; ``layer.spec(batch)`` gives its
:class:`~tvm_deconv.plan.ConvTransposeSpec` (NCHW / IOHW, float32 unless asked otherwise).
:data:`DILATED_LAYERS` holds dilated (atrous) forward convs as :class:`DilatedZooLayer`
(``.spec(batch)`` → :class:`~tvm_deconv.plan.DilatedConvSpec`, NC.. / OI..).
"""

from __future__ import annotations

from dataclasses import dataclass

from .plan import ConvTransposeSpec, DilatedConvSpec, make_dilated_spec, make_spec


@dataclass(frozen=True)
class _ZooConv:
    """What every zoo layer has: its channels, input size and (cubic) kernel size."""

    name: str
    in_channels: int
    out_channels: int
    in_size: tuple[int, ...]
    kernel: int

    @property
    def ndim(self) -> int:
        return len(self.in_size)


@dataclass(frozen=True)
class ZooLayer(_ZooConv):
    stride: int
    padding: int = 0
    output_padding: int = 0

    def spec(self, batch: int = 1, dtype: str = "float32", layout: str | None = None
             ) -> ConvTransposeSpec:
        nd = self.ndim
        data = (batch, self.in_channels) + self.in_size
        weight = (self.in_channels, self.out_channels) + (self.kernel,) * nd
        if layout is not None and layout.index("C") != 1:  # channels-last
            data = (batch,) + self.in_size + (self.in_channels,)
            weight = (self.kernel,) * nd + (self.out_channels, self.in_channels)
        return make_spec(data, weight, strides=self.stride, padding=self.padding,
                         output_padding=self.output_padding, data_layout=layout, dtype=dtype)


LAYERS: tuple[ZooLayer, ...] = (
    ZooLayer("dcgan_100_512_k4s1", 100, 512, (1, 1), 4, 1, 0),
    ZooLayer("dcgan_512_256_k4s2", 512, 256, (4, 4), 4, 2, 1),
    ZooLayer("dcgan_256_128_k4s2", 256, 128, (8, 8), 4, 2, 1),
    ZooLayer("dcgan_128_64_k4s2", 128, 64, (16, 16), 4, 2, 1),
    ZooLayer("dcgan_64_3_k4s2", 64, 3, (32, 32), 4, 2, 1),
    ZooLayer("fsrcnn_x2_56_1_k9s2", 56, 1, (128, 128), 9, 2, 4, 1),
    ZooLayer("fsrcnn_x3_56_1_k9s3", 56, 1, (128, 128), 9, 3, 4, 2),
    ZooLayer("cyclegan_256_128_k3s2", 256, 128, (64, 64), 3, 2, 1, 1),
    ZooLayer("cyclegan_128_64_k3s2", 128, 64, (128, 128), 3, 2, 1, 1),
    ZooLayer("pose_2048_256_k4s2", 2048, 256, (8, 6), 4, 2, 1),
    ZooLayer("pose_256_256_k4s2", 256, 256, (16, 12), 4, 2, 1),
    ZooLayer("unet_512_256_k2s2", 512, 256, (32, 32), 2, 2, 0),
    ZooLayer("fcn8s_21_21_k16s8", 21, 21, (28, 28), 16, 8, 4),
    ZooLayer("hifigan_512_256_k16s8", 512, 256, (128,), 16, 8, 4),
    ZooLayer("unet3d_64_32_k2s2", 64, 32, (16, 16, 16), 2, 2, 0),
    ZooLayer("unet3d_64_32_k4s2", 64, 32, (16, 16, 16), 4, 2, 1),
)


def get(name: str) -> ZooLayer:
    for layer in LAYERS:
        if layer.name == name:
            return layer
    raise KeyError(f"no zoo layer {name!r}; known: {', '.join(l.name for l in LAYERS)}")


@dataclass(frozen=True)
class DilatedZooLayer(_ZooConv):
    """A dilated forward conv (stride 1, symmetric padding); 1-d when ``len(in_size) == 1``."""

    dilation: int
    padding: int

    def spec(self, batch: int = 1, dtype: str = "float32") -> DilatedConvSpec:
        nd = self.ndim
        return make_dilated_spec((batch, self.in_channels) + self.in_size,
                                 (self.out_channels, self.in_channels) + (self.kernel,) * nd,
                                 padding=self.padding, dilation=self.dilation, dtype=dtype)


# DeepLabv3 ASPP (output stride 16 on a 513x513 image: 33x33 ResNet features, 2048 -> 256, k3,
# rates 6/12/18, padding = rate); WaveNet: the dilated conv of a residual block (64 residual
# channels -> 128 = filter + gate), kernel 2, on 4096 samples without padding (the causal
# left-padding of the stack is a separate pad op), rates 2 .. 512 of the 1..512 cycle (rate 1
# is an ordinary conv).
DILATED_LAYERS: tuple[DilatedZooLayer, ...] = (
    DilatedZooLayer("aspp_2048_256_k3d6", 2048, 256, (33, 33), 3, 6, 6),
    DilatedZooLayer("aspp_2048_256_k3d12", 2048, 256, (33, 33), 3, 12, 12),
    DilatedZooLayer("aspp_2048_256_k3d18", 2048, 256, (33, 33), 3, 18, 18),
    DilatedZooLayer("wavenet_64_128_k2d2", 64, 128, (4096,), 2, 2, 0),
    DilatedZooLayer("wavenet_64_128_k2d16", 64, 128, (4096,), 2, 16, 0),
    DilatedZooLayer("wavenet_64_128_k2d128", 64, 128, (4096,), 2, 128, 0),
    DilatedZooLayer("wavenet_64_128_k2d512", 64, 128, (4096,), 2, 512, 0),
)


def get_dilated(name: str) -> DilatedZooLayer:
    for layer in DILATED_LAYERS:
        if layer.name == name:
            return layer
    raise KeyError(f"no dilated zoo layer {name!r}; known: "
                   f"{', '.join(l.name for l in DILATED_LAYERS)}")
