"""Hydra sweeper plugin ``hydra/sweeper=optuna``: Optuna (>= 4) through its ask-and-tell
interface, with pruning (a job reports to its own trial: ``trial.TrialLink``), studies that
live in the sweep folder and continue where they stopped. See README.md beside this file.

Plugin discovery imports this package's public modules on every start of every Hydra app:
they import nothing but Hydra, OmegaConf and the standard library; Optuna is imported by
``_impl`` (when a sweep starts) and by ``TrialLink.open``.
"""
