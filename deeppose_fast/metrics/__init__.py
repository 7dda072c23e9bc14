"""Pose metrics: PCP (strict, relaxed), PCKh / PCK at a threshold and as a curve, per-part and symmetric
tables, under two named protocols (``dtf``: the published DeepPose tables; ``official``: MPII's and the
common LSP evaluation).

    >>> res = evaluate(pred, gt, dataset="lsp", protocol="dtf")
    >>> print(res.table())
    >>> res.parts["Torso"], res.total, res.to_dict()

Modules: ``api`` (``evaluate`` and the single metrics), ``result`` (``EvalResult``), ``protocols`` (what
each protocol computes, input checks), ``kernels`` / ``numpy_ref`` (the two backends' counts),
``aggregate`` (counts -> tables and curves), ``tables`` (``Table``, ``Curve`` and their text).
"""
from deeppose_fast.metrics.api import BACKENDS, evaluate, joint_errors, normaliser, pck, pck_curve, pcp
from deeppose_fast.metrics.protocols import CURVE_THRESHOLDS, DATASETS, PROTOCOLS, Protocol, Stats
from deeppose_fast.metrics.result import EvalResult
from deeppose_fast.metrics.tables import Curve, Table

__all__ = ["evaluate", "EvalResult", "Table", "Curve", "Protocol", "Stats", "normaliser", "joint_errors",
           "pck", "pck_curve", "pcp", "CURVE_THRESHOLDS", "DATASETS", "PROTOCOLS", "BACKENDS"]
