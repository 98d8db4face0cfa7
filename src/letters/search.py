"""Where the Optuna search space's function was before the package layout: searches saved by
letters 0.1 name ``letters.search.momentum_where_used`` in their ``.hydra/hydra.yaml``. It
lives in letters.runs.search."""

from letters.runs.search import momentum_where_used

__all__ = ["momentum_where_used"]
