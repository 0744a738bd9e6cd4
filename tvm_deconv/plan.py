"""The phase plan of a transposed convolution: the one place that derives its arithmetic.

A transposed conv with stride ``s`` scatters input pixel ``i`` through kernel tap ``t`` to
output ``o = i*s + t*d - pad_before``.  Split the output into its ``s`` phases
``o = q*s + r``: phase ``r`` receives exactly the taps with ``t*d ≡ r + pad_before (mod s)``.
Those taps form an arithmetic sequence (step ``s/g``, ``g = gcd(s, d)``) whose input rows form
another (step ``d/g``), so each phase is a *dense, stride-1* correlation of the original input
with a ragged sub-kernel, written to every ``s``-th output element.  N-d convs take the
product of the per-axis phases.

Everything here is plain Python (no TVM import): the TIR computes, the schedules, the Relax
pass, the benchmarks and the tests all read the plan instead of re-deriving the arithmetic.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

SPATIAL_AXES = {1: "W", 2: "HW", 3: "DHW"}
DEFAULT_LAYOUTS = {
    # data layout -> kernel layout used when the caller names none
    "NCW": "IOW",
    "NWC": "WOI",
    "NCHW": "IOHW",
    "NHWC": "HWOI",
    "NCDHW": "IODHW",
    "NDHWC": "DHWOI",
}


class PlanError(ValueError):
    """Invalid transposed-convolution attributes or shapes (the message names the fix)."""


@dataclass(frozen=True)
class AxisPhase:
    """One output phase ``r`` along one spatial axis.

    Output elements ``o = r + q*stride`` for ``q in range(extent)``.  Sub-kernel tap ``j`` in
    ``range(num_taps)`` is kernel index ``tap_start + j*tap_step`` and reads input index
    ``q + in_start - j*in_step`` (zero when outside the input: implicit padding).
    """

    phase: int
    stride: int
    extent: int
    num_taps: int
    tap_start: int
    tap_step: int
    in_start: int
    in_step: int

    def input_span(self, q_extent: Optional[int] = None) -> tuple[int, int]:
        """(lowest, highest) input index the taps read for ``q in range(q_extent)`` (default
        :attr:`extent`); outside ``[0, in_size)`` they read implicit zeros."""
        extent = self.extent if q_extent is None else q_extent
        return self.in_start - (self.num_taps - 1) * self.in_step, extent - 1 + self.in_start

    @property
    def taps(self) -> tuple[int, ...]:
        """Kernel indices of this phase's sub-kernel, in reduction order."""
        return tuple(self.tap_start + j * self.tap_step for j in range(self.num_taps))

    @property
    def input_offsets(self) -> tuple[int, ...]:
        """Input index minus ``q`` for each sub-kernel tap."""
        return tuple(self.input_index(0, j) for j in range(self.num_taps))

    def input_index(self, q, j):
        """Input index read by tap ``j`` of output ``q*stride + phase`` (ints or TIR
        expressions)."""
        return q + self.in_start - j * self.in_step

    def output_index(self, q: int) -> int:
        return self.phase + q * self.stride


@dataclass(frozen=True)
class AxisPlan:
    """The phases of one spatial axis and the sizes they come from."""

    in_size: int
    kernel: int
    stride: int
    dilation: int
    pad_before: int
    pad_after: int
    output_padding: int
    out_size: int
    phases: tuple[AxisPhase, ...]

    @property
    def max_taps(self) -> int:
        return max(p.num_taps for p in self.phases)

    @property
    def uniform_taps(self) -> bool:
        """All phases have the same tap count (k % s == 0 for dilation 1)."""
        return len({p.num_taps for p in self.phases}) == 1

    @property
    def phase_batched(self) -> bool:
        """One loop over ``r`` covers every phase: dilation 1, equal tap counts (k % s == 0)
        and equal extents (s divides the output), so ``o = q*s + r`` is a dense (q, r) grid.
        Then :meth:`batched_input` gives every phase's input index as a closed form in
        ``r``."""
        return (self.dilation == 1 and self.uniform_taps and self.max_taps > 0
                and self.out_size % self.stride == 0)

    @property
    def phases_on_input_grid(self) -> bool:
        """Every phase has taps and one output per input position (``out = s * in``,
        dilation 1): output ``q*s + r`` for ``q`` over the input, reading inputs ``q`` plus
        the phase's :attr:`AxisPhase.input_offsets`, so one patch of input positions spans
        the same patch of every phase."""
        return self.dilation == 1 and all(p.num_taps > 0 and p.extent == self.in_size
                                          for p in self.phases)

    def batched_input(self, r, q, j):
        """Input index read by tap ``j`` of output ``q*s + r``: ``q + in_start - j*in_step``."""
        return q + (r + self.pad_before) // self.stride - j

    @property
    def phase_run(self) -> int:
        """Phases reading one input window, in runs of consecutive phases: with equal tap
        counts, phases ``r`` with equal ``(r + pad_before) // s`` read the same inputs
        (:meth:`batched_input`), which splits ``0..s-1`` into runs of ``s - p % s`` and
        ``p % s``; every run of ``gcd(s, p)`` phases from a multiple of it lies in one (k2 s2
        p0: both phases; k16 s8 p4: 4; k4 s2 p1: each phase alone).  1 where the tap counts
        differ (k3 s2)."""
        return math.gcd(self.stride, self.pad_before) if self.uniform_taps else 1

    def input_window(self, q_extent: int) -> int:
        """Positions of the padded input that the phases with taps read for a window of
        ``q_extent`` consecutive outputs ``q`` (the same ``q`` in every phase): from the lowest
        input index any of their taps reads to the highest, the taps' halo included; it does
        not depend on where the window starts."""
        spans = [ap.input_span(q_extent) for ap in self.phases if ap.num_taps and ap.extent]
        return max(hi for _, hi in spans) - min(lo for lo, _ in spans) + 1

    def input_pads(self, q_extent: Optional[Callable[["AxisPhase"], int]] = None
                   ) -> tuple[int, int]:
        """(before, after): the zeros around the input that every phase with taps reads
        (tap ``j`` of output ``q`` reads ``q + in_start - j*in_step``), so a kernel can read
        a padded copy unguarded.  ``q_extent(phase)`` overrides a phase's output extent
        (schedules that round it up to their tile)."""
        lows, highs = [0], [0]
        for ap in self.phases:
            if ap.num_taps == 0 or ap.extent == 0:
                continue
            lowest, highest = ap.input_span(q_extent(ap) if q_extent else None)
            lows.append(-lowest)
            highs.append(highest - (self.in_size - 1))
        return max(lows), max(highs)


def plan_axis(
    in_size: int,
    kernel: int,
    stride: int,
    dilation: int = 1,
    pad_before: int = 0,
    pad_after: int = 0,
    output_padding: int = 0,
) -> AxisPlan:
    """Phase plan of one spatial axis (sizes already validated by :func:`make_plan`)."""
    out_size = (in_size - 1) * stride - pad_before - pad_after + dilation * (kernel - 1)
    out_size += output_padding + 1
    g = math.gcd(stride, dilation)
    tap_step, in_step = stride // g, dilation // g
    phases = []
    for r in range(stride):
        extent = max(0, -(-(out_size - r) // stride))
        taps = [t for t in range(kernel) if (r + pad_before - t * dilation) % stride == 0]
        t0 = taps[0] if taps else 0
        # Python's // floors, and the numerator is an exact multiple of stride here.
        in_start = (r + pad_before - t0 * dilation) // stride
        phases.append(AxisPhase(r, stride, extent, len(taps), t0, tap_step, in_start, in_step))
    return AxisPlan(in_size, kernel, stride, dilation, pad_before, pad_after, output_padding,
                    out_size, tuple(phases))


@dataclass(frozen=True)
class Phase:
    """One N-d output phase: the product of one :class:`AxisPhase` per spatial axis."""

    index: tuple[int, ...]
    axes: tuple[AxisPhase, ...]

    @property
    def extent(self) -> tuple[int, ...]:
        return tuple(a.extent for a in self.axes)

    @property
    def num_taps(self) -> tuple[int, ...]:
        return tuple(a.num_taps for a in self.axes)

    @property
    def has_taps(self) -> bool:
        """False when k < s leaves this phase without taps: its output is zero (plus bias)."""
        return all(n > 0 for n in self.num_taps)

    @property
    def is_empty(self) -> bool:
        """The phase owns no output element (stride larger than the output)."""
        return any(e == 0 for e in self.extent)

    @property
    def name(self) -> str:
        return "phase_" + "_".join(str(r) for r in self.index)


@dataclass(frozen=True)
class _ConvSpec:
    """What transposed and dilated conv specs share: sizes, window attributes and layouts."""

    batch: int
    in_channels: int
    out_channels: int
    groups: int
    in_size: tuple[int, ...]
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilation: tuple[int, ...]
    pad_before: tuple[int, ...]
    pad_after: tuple[int, ...]
    data_layout: str
    kernel_layout: str
    out_layout: str
    dtype: str
    out_dtype: str

    @property
    def ndim(self) -> int:
        return len(self.in_size)

    @property
    def in_per_group(self) -> int:
        return self.in_channels // self.groups

    @property
    def out_per_group(self) -> int:
        return self.out_channels // self.groups

    @property
    def spatial_axes(self) -> str:
        return SPATIAL_AXES[self.ndim]

    @property
    def data_shape(self) -> tuple[int, ...]:
        sizes = dict(zip(self.spatial_axes, self.in_size), N=self.batch, C=self.in_channels)
        return _shape(self.data_layout, sizes)

    @property
    def out_size(self) -> tuple[int, ...]:
        raise NotImplementedError

    @property
    def out_shape(self) -> tuple[int, ...]:
        sizes = dict(zip(self.spatial_axes, self.out_size), N=self.batch, C=self.out_channels)
        return _shape(self.out_layout, sizes)


@dataclass(frozen=True)
class ConvTransposeSpec(_ConvSpec):
    """A transposed convolution in logical (layout-free) terms, validated.

    Channel counts: ``in_channels = groups * in_per_group``,
    ``out_channels = groups * out_per_group``.  Weight logical axes are
    ``(I = in_channels, O = out_per_group, *kernel)``, as in PyTorch/ONNX (IOHW).
    """

    output_padding: tuple[int, ...]

    @property
    def weight_shape(self) -> tuple[int, ...]:
        sizes = dict(zip(self.spatial_axes, self.kernel), I=self.in_channels, O=self.out_per_group)
        return _shape(self.kernel_layout, sizes)

    @property
    def out_size(self) -> tuple[int, ...]:
        return tuple(a.out_size for a in plan_axes(self))


def _shape(layout: str, sizes: dict[str, int]) -> tuple[int, ...]:
    return tuple(sizes[a] for a in layout)


def _per_axis(name: str, value, ndim: int, allow_pairs: bool = False) -> tuple[int, ...]:
    vals = (int(value),) if isinstance(value, int) else tuple(int(v) for v in value)
    allowed = {1, ndim, 2 * ndim} if allow_pairs else {1, ndim}
    if len(vals) not in allowed:
        raise PlanError(f"{name}={vals} has {len(vals)} values; a {ndim}-d transposed conv takes "
                        + " or ".join(str(a) for a in sorted(allowed)))
    return vals * ndim if len(vals) == 1 else vals


def _check_layout(kind: str, layout: str, letters: str) -> None:
    if sorted(layout) != sorted(letters):
        raise PlanError(f"{kind} layout {layout!r} is not a permutation of {letters!r}; "
                        f"use e.g. {letters!r}")


def _parse_layouts_and_shapes(op: str, data_shape, weight_shape, data_layout, kernel_layout,
                              out_layout, kernel_letters: str, default_kernel_layout):
    """Validated (ndim, spatial axes, layouts, sizes by data axis, sizes by kernel axis)."""
    data_shape = tuple(int(d) for d in data_shape)
    weight_shape = tuple(int(d) for d in weight_shape)
    ndim = len(data_shape) - 2
    if ndim not in SPATIAL_AXES:
        raise PlanError(f"data shape {data_shape} has rank {len(data_shape)}; {op} "
                        "take rank 3 (1-d), 4 (2-d) or 5 (3-d)")
    spatial = SPATIAL_AXES[ndim]
    data_layout = data_layout or "NC" + spatial
    kernel_layout = kernel_layout or default_kernel_layout(data_layout, spatial)
    out_layout = out_layout or data_layout
    _check_layout("data", data_layout, "NC" + spatial)
    _check_layout("kernel", kernel_layout, kernel_letters + spatial)
    _check_layout("output", out_layout, "NC" + spatial)
    if len(weight_shape) != len(data_shape):
        raise PlanError(f"weight shape {weight_shape} must have rank {len(data_shape)} to match "
                        f"data shape {data_shape}")
    if any(d <= 0 for d in data_shape + weight_shape):
        raise PlanError(f"shapes must be positive: data {data_shape}, weight {weight_shape}")
    return (ndim, spatial, data_layout, kernel_layout, out_layout,
            dict(zip(data_layout, data_shape)), dict(zip(kernel_layout, weight_shape)))


def _parse_window(strides, padding, dilation, ndim: int):
    """Validated per-axis (strides, dilation, pad_before, pad_after)."""
    strides = _per_axis("strides", strides, ndim)
    dilation = _per_axis("dilation", dilation, ndim)
    pads = _per_axis("padding", padding, ndim, allow_pairs=True)
    pad_before, pad_after = (pads, pads) if len(pads) == ndim else (pads[:ndim], pads[ndim:])
    for name, vals, low in (("strides", strides, 1), ("dilation", dilation, 1),
                            ("padding", pad_before + pad_after, 0)):
        if any(v < low for v in vals):
            raise PlanError(f"{name}={vals} must be >= {low}")
    return strides, dilation, pad_before, pad_after


def make_spec(
    data_shape: Sequence[int],
    weight_shape: Sequence[int],
    strides=1,
    padding=0,
    output_padding=0,
    dilation=1,
    groups: int = 1,
    data_layout: str | None = None,
    kernel_layout: str | None = None,
    out_layout: str | None = None,
    dtype: str = "float32",
    out_dtype: str | None = None,
) -> ConvTransposeSpec:
    """Validate attributes as Relax's ``conv{1,2,3}d_transpose`` takes them.

    ``padding`` is one value, one per axis, or all befores then all afters
    (Relax/ONNX order, e.g. ``(top, left, bottom, right)``).  Raises :class:`PlanError`
    naming the offending attribute and the fix.
    """
    ndim, spatial, data_layout, kernel_layout, out_layout, dsz, wsz = _parse_layouts_and_shapes(
        "transposed convs", data_shape, weight_shape, data_layout, kernel_layout, out_layout,
        "IO", lambda layout, sp: DEFAULT_LAYOUTS.get(layout, "IO" + sp))
    groups = int(groups)
    if groups < 1 or dsz["C"] % groups:
        raise PlanError(f"groups={groups} must be >= 1 and divide the {dsz['C']} input channels")
    if wsz["I"] != dsz["C"]:
        raise PlanError(f"weight {tuple(weight_shape)} (layout {kernel_layout}) has I={wsz['I']} "
                        f"input channels but data {tuple(data_shape)} (layout {data_layout}) has "
                        f"C={dsz['C']}; transposed-conv weights are (in_channels, "
                        "out_channels/groups, *k): check kernel_layout")
    strides, dilation, pad_before, pad_after = _parse_window(strides, padding, dilation, ndim)
    output_padding = _per_axis("output_padding", output_padding, ndim)
    if any(v < 0 for v in output_padding):
        raise PlanError(f"output_padding={output_padding} must be >= 0")
    for s, d, op in zip(strides, dilation, output_padding):
        if op >= max(s, d):
            raise PlanError(f"output_padding={output_padding} must be smaller than the stride or "
                            f"the dilation of its axis (strides={strides}, dilation={dilation})")
    spec = ConvTransposeSpec(
        batch=dsz["N"], in_channels=dsz["C"], out_channels=wsz["O"] * groups, groups=groups,
        in_size=tuple(dsz[a] for a in spatial), kernel=tuple(wsz[a] for a in spatial),
        strides=strides, dilation=dilation, pad_before=pad_before, pad_after=pad_after,
        output_padding=output_padding, data_layout=data_layout, kernel_layout=kernel_layout,
        out_layout=out_layout, dtype=dtype, out_dtype=out_dtype or dtype)
    if any(o <= 0 for o in spec.out_size):
        raise PlanError(f"output size {spec.out_size} is empty: padding "
                        f"{pad_before + pad_after} crops more than the transposed conv produces")
    return spec


def plan_axes(spec: ConvTransposeSpec) -> tuple[AxisPlan, ...]:
    return tuple(
        plan_axis(n, k, s, d, pb, pa, op)
        for n, k, s, d, pb, pa, op in zip(spec.in_size, spec.kernel, spec.strides, spec.dilation,
                                          spec.pad_before, spec.pad_after, spec.output_padding))


@dataclass(frozen=True)
class TransposedConvPlan:
    """The decomposition of one transposed conv: its spec and per-axis phase plans."""

    spec: ConvTransposeSpec
    axes: tuple[AxisPlan, ...]

    def phases(self) -> Iterator[Phase]:
        """All ``prod(strides)`` output phases, in row-major phase order."""
        for combo in itertools.product(*(a.phases for a in self.axes)):
            yield Phase(tuple(p.phase for p in combo), tuple(combo))

    @property
    def num_phases(self) -> int:
        return math.prod(self.spec.strides)

    @property
    def uniform_taps(self) -> bool:
        return all(a.uniform_taps for a in self.axes)

    @property
    def phase_batched(self) -> bool:
        """Every axis is :attr:`AxisPlan.phase_batched`: all phases fit one loop nest."""
        return all(a.phase_batched for a in self.axes)

    @property
    def phases_on_input_grid(self) -> bool:
        """Every axis is :attr:`AxisPlan.phases_on_input_grid`: one patch of input positions
        spans the same patch of every phase."""
        return all(a.phases_on_input_grid for a in self.axes)

    def tap_offsets(self, align: int = 1) -> tuple[dict, int]:
        """({phase index: offset}, total): the phases' sub-kernels laid end to end on one
        flat tap axis (row-major taps within a phase), for packed weight layouts; each
        sub-kernel's span rounded up to a multiple of ``align`` taps (the gaps unused)."""
        offsets, total = {}, 0
        for phase in self.phases():
            offsets[phase.index] = total
            total += -(-math.prod(phase.num_taps) // align) * align
        return offsets, total

    def macs(self) -> int:
        """Multiply-adds of the decomposed kernel: each output element times its phase's taps."""
        s = self.spec
        per_point = s.batch * s.out_channels * s.in_per_group
        return per_point * sum(math.prod(p.extent) * math.prod(p.num_taps) for p in self.phases())

    def zero_insertion_macs(self) -> int:
        """Multiply-adds of a stride-1 conv over the zero-inserted input (TVM's default)."""
        s = self.spec
        return (s.batch * s.out_channels * s.in_per_group
                * math.prod(s.out_size) * math.prod(s.kernel))

    def useful_flops(self) -> int:
        """The customary FLOP count 2·N·Cin·Cout·prod(in)·prod(k)/groups."""
        s = self.spec
        return 2 * s.batch * s.in_channels * s.out_per_group * math.prod(s.in_size) * math.prod(
            s.kernel)


def make_plan(spec: ConvTransposeSpec) -> TransposedConvPlan:
    return TransposedConvPlan(spec, plan_axes(spec))


def stride_multiple_kernel(spec: ConvTransposeSpec) -> ConvTransposeSpec:
    """The same conv with each kernel extent rounded up to a multiple of its stride: the added
    taps (at the kernel's end) are zero, and ``pad_after`` grows by as many, so the output is
    unchanged (a zero tap adds nothing to any output; the extra output rows it would make are
    cropped).  Every phase then has the same taps (k % s == 0), so ragged layers (CycleGAN
    k3 s2, FSRCNN k9 s2) become phase-batched where s divides the output, at the price of
    ``prod(k'/k)`` times the multiply-adds (k3 s2 in 2-d: 16/9).  ``spec`` itself where the
    kernel is already a multiple."""
    kernel = tuple(-(-k // s) * s for k, s in zip(spec.kernel, spec.strides))
    if kernel == spec.kernel:
        return spec
    pad_after = tuple(p + k2 - k for p, k2, k in zip(spec.pad_after, kernel, spec.kernel))
    return dataclasses.replace(spec, kernel=kernel, pad_after=pad_after)


# ---------------------------------------------------------------------------------------------
# Dilated (atrous) convolution, untangled (HUGE2): the phase plan of a FORWARD conv whose kernel
# has dilation d.  Output element o reads input o*s + t*d - pad_before.  Split the output into
# P = d / gcd(s, d) phases o = q*P + r: then o*s + t*d - pad_before = (q*m + t + a)*d + b with
# m = s / gcd(s, d) and r*s - pad_before = a*d + b (0 <= b < d), i.e. phase r is a DENSE
# (undilated) correlation of input phase b (every d-th input element, space-to-batch) with the
# original kernel, read at rows q*m + t + a of that phase, and written to every P-th output
# element (batch-to-space).  No kernel zero is ever multiplied.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DilatedAxisPhase:
    """One output phase ``r`` of a dilated conv along one spatial axis.

    Output elements ``o = r + q*num_phases`` for ``q in range(extent)``; tap ``t`` in
    ``range(kernel)`` reads input index ``(q*in_step + t + in_start)*dilation + in_phase``
    (zero outside the input: implicit padding), i.e. row ``q*in_step + t + in_start`` of input
    phase ``in_phase``.
    """

    phase: int
    num_phases: int
    extent: int
    kernel: int
    dilation: int
    in_phase: int
    in_start: int
    in_step: int

    def input_index(self, q: int, t: int) -> int:
        return (q * self.in_step + t + self.in_start) * self.dilation + self.in_phase

    def output_index(self, q: int) -> int:
        return self.phase + q * self.num_phases

    @property
    def lowest_input(self) -> int:
        return self.input_index(0, 0)

    @property
    def highest_input(self) -> int:
        return self.input_index(self.extent - 1, self.kernel - 1)


@dataclass(frozen=True)
class DilatedAxisPlan:
    in_size: int
    kernel: int
    stride: int
    dilation: int
    pad_before: int
    pad_after: int
    out_size: int
    phases: tuple[DilatedAxisPhase, ...]

    @property
    def num_phases(self) -> int:
        return len(self.phases)


def dilated_out_size(in_size: int, kernel: int, stride: int = 1, dilation: int = 1,
                     pad_before: int = 0, pad_after: int = 0) -> int:
    return (in_size + pad_before + pad_after - dilation * (kernel - 1) - 1) // stride + 1


def plan_dilated_axis(in_size: int, kernel: int, stride: int = 1, dilation: int = 1,
                      pad_before: int = 0, pad_after: int = 0) -> DilatedAxisPlan:
    """Phase plan of one spatial axis of a dilated forward conv (see the section comment)."""
    out_size = dilated_out_size(in_size, kernel, stride, dilation, pad_before, pad_after)
    g = math.gcd(stride, dilation)
    num_phases, in_step = dilation // g, stride // g
    phases = []
    for r in range(num_phases):
        extent = max(0, -(-(out_size - r) // num_phases))
        a, b = divmod(r * stride - pad_before, dilation)  # Python floors: 0 <= b < dilation
        phases.append(DilatedAxisPhase(r, num_phases, extent, kernel, dilation, b, a, in_step))
    return DilatedAxisPlan(in_size, kernel, stride, dilation, pad_before, pad_after, out_size,
                           tuple(phases))


@dataclass(frozen=True)
class DilatedPhase:
    index: tuple[int, ...]
    axes: tuple[DilatedAxisPhase, ...]

    @property
    def extent(self) -> tuple[int, ...]:
        return tuple(a.extent for a in self.axes)

    @property
    def is_empty(self) -> bool:
        return any(e == 0 for e in self.extent)

    @property
    def name(self) -> str:
        return "dilated_phase_" + "_".join(str(r) for r in self.index)


@dataclass(frozen=True)
class DilatedConvSpec(_ConvSpec):
    """A forward conv with dilation, validated; weight logical axes ``(O, I/groups, *k)``."""

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return _shape(self.kernel_layout, dict(zip(self.spatial_axes, self.kernel),
                                               O=self.out_channels, I=self.in_per_group))

    @property
    def out_size(self) -> tuple[int, ...]:
        return tuple(dilated_out_size(*a) for a in zip(
            self.in_size, self.kernel, self.strides, self.dilation, self.pad_before,
            self.pad_after))


def make_dilated_spec(
    data_shape: Sequence[int],
    weight_shape: Sequence[int],
    strides=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    data_layout: str | None = None,
    kernel_layout: str | None = None,
    out_layout: str | None = None,
    dtype: str = "float32",
    out_dtype: str | None = None,
) -> DilatedConvSpec:
    """Validate a forward conv's attributes as Relax's ``conv{1,2,3}d`` takes them."""
    ndim, spatial, data_layout, kernel_layout, out_layout, dsz, wsz = _parse_layouts_and_shapes(
        "convs", data_shape, weight_shape, data_layout, kernel_layout, out_layout, "OI",
        lambda layout, sp: "OI" + sp)
    groups = int(groups)
    if groups < 1 or dsz["C"] % groups or wsz["O"] % groups:
        raise PlanError(f"groups={groups} must be >= 1 and divide the {dsz['C']} input and "
                        f"{wsz['O']} output channels")
    if wsz["I"] * groups != dsz["C"]:
        raise PlanError(f"weight {tuple(weight_shape)} (layout {kernel_layout}) has I={wsz['I']} "
                        f"channels per group but data {tuple(data_shape)} has C={dsz['C']} with "
                        f"groups={groups}; conv weights are (out_channels, in_channels/groups, "
                        "*k): check kernel_layout")
    strides, dilation, pad_before, pad_after = _parse_window(strides, padding, dilation, ndim)
    spec = DilatedConvSpec(
        batch=dsz["N"], in_channels=dsz["C"], out_channels=wsz["O"], groups=groups,
        in_size=tuple(dsz[a] for a in spatial), kernel=tuple(wsz[a] for a in spatial),
        strides=strides, dilation=dilation, pad_before=pad_before, pad_after=pad_after,
        data_layout=data_layout, kernel_layout=kernel_layout, out_layout=out_layout,
        dtype=dtype, out_dtype=out_dtype or dtype)
    if any(o <= 0 for o in spec.out_size):
        raise PlanError(f"output size {spec.out_size} is empty: the dilated kernel "
                        f"{tuple(d * (k - 1) + 1 for d, k in zip(dilation, spec.kernel))} is "
                        f"larger than the padded input")
    return spec


@dataclass(frozen=True)
class DilatedConvPlan:
    spec: DilatedConvSpec
    axes: tuple[DilatedAxisPlan, ...]

    def phases(self) -> Iterator[DilatedPhase]:
        for combo in itertools.product(*(a.phases for a in self.axes)):
            yield DilatedPhase(tuple(p.phase for p in combo), tuple(combo))

    @property
    def num_phases(self) -> int:
        return math.prod(a.num_phases for a in self.axes)

    def macs(self) -> int:
        """Multiply-adds of the untangled kernel: every output element times the DENSE kernel."""
        s = self.spec
        per_point = s.batch * s.out_channels * s.in_per_group * math.prod(s.kernel)
        return per_point * sum(math.prod(p.extent) for p in self.phases())

    def dilated_kernel_macs(self) -> int:
        """Multiply-adds of a conv with the zero-inserted (dilated) kernel made dense."""
        s = self.spec
        return (s.batch * s.out_channels * s.in_per_group * math.prod(s.out_size)
                * math.prod(d * (k - 1) + 1 for d, k in zip(s.dilation, s.kernel)))


def make_dilated_plan(spec: DilatedConvSpec) -> DilatedConvPlan:
    return DilatedConvPlan(spec, tuple(
        plan_dilated_axis(n, k, s, d, pb, pa) for n, k, s, d, pb, pa in zip(
            spec.in_size, spec.kernel, spec.strides, spec.dilation, spec.pad_before,
            spec.pad_after)))
