"""MetaSchedule tuning logs shipped with tvm-deconv (installed as ``tvm_deconv.tuning_logs``).

One folder per target key (:func:`tvm_deconv.tuning.target_key`, e.g. ``llvm-znver3``)
holding a ``tvm-deconv tune`` work_dir's two database files (verified records only, the
fastest few per workload); ``tvm_deconv.build`` applies the folder matching its target unless
told otherwise (``tuning_logs=False``).
"""
