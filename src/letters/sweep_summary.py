"""Where the sweep-end summary's Hydra callback was before the package layout: sweeps saved
by letters 0.1 name ``letters.sweep_summary.SweepSummary`` in their ``.hydra/hydra.yaml`` and
``multirun.yaml``. It lives in letters.reporting.sweep_summary."""

from letters.reporting.sweep_summary import SweepSummary

__all__ = ["SweepSummary"]
