"""The DeepPose cascade (Toshev & Szegedy 2014, section 3.2): stage s >= 2 refines each joint from a square
crop about stage s-1's estimate (``codec.joint_crop_geometry``), trained on simulated stage s-1 estimates.

Modules: ``statistics`` (the law of stage s-1's displacements: ``fit`` on its errors, ``sample_centres``
of simulated estimates, ``save`` / ``load`` with their provenance).
"""
from deeppose_fast.cascade.statistics import (FORMAT, REFIT_COMMAND, DisplacementStats, StaleStatsError,
                                              StatsError, fit, load, sample_centres, save, stage_source)

__all__ = ["FORMAT", "REFIT_COMMAND", "DisplacementStats", "StaleStatsError", "StatsError", "fit", "load",
           "sample_centres", "save", "stage_source"]
