"""Hydra launcher plugin ``hydra/launcher=stacked``: the jobs of a multirun that differ only in
per-member settings are trained together, as one stacked model, in one process.

Hydra imports every module of every ``hydra_plugins`` package on every start of every Hydra
app, so this package imports nothing but Hydra, OmegaConf and the standard library.
"""
