"""tvm-deconv: decomposed transposed (and dilated) convolution for Apache TVM 0.27 (Relax era).

Quick start::

    import tvm_deconv
    ex = tvm_deconv.build(mod, "llvm", params)          # successor of relay.build
    # or, with your own tvm.compile call:
    with tvm_deconv.lowering_context(target):
        ex = tvm.compile(mod, target, relax_pipeline=tvm_deconv.pipeline(target))
"""

from .threads import configure_runtime_threads

configure_runtime_threads()  # before TVM's runtime pool exists: see tvm_deconv.threads

from . import plan, strategy, testing, transform  # noqa: E402
from .build import build, kernel_context, lowering_context, pipeline  # noqa: E402
from .compute import (conv1d_transpose, conv2d_transpose, conv3d_transpose,
                      decomposed_conv_transpose)
from .plan import ConvTransposeSpec, PlanError, TransposedConvPlan, make_plan, make_spec
from .targets import resolve_target

__version__ = "0.1.0"


def tune(mod_or_tasks, target, work_dir, trials: int = 64, **kwargs):
    """:func:`tvm_deconv.tuning.tune` (imported on first use: it loads MetaSchedule)."""
    from .tuning import tune as tune_tasks  # pylint: disable=import-outside-toplevel

    return tune_tasks(mod_or_tasks, target, work_dir, trials, **kwargs)


__all__ = [
    "build", "kernel_context", "lowering_context", "pipeline", "tune", "conv1d_transpose",
    "conv2d_transpose", "conv3d_transpose", "decomposed_conv_transpose", "make_spec",
    "make_plan", "ConvTransposeSpec", "TransposedConvPlan", "PlanError", "resolve_target",
    "plan", "strategy", "testing", "transform",
]
