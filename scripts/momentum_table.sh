#!/usr/bin/env bash
# The reference's Table 1 (SGD, only the momentum changes), over three seeds, then its report.
#   scripts/momentum_table.sh data=list data.root=../shared/data/scene-letters
# Extra arguments are passed to letters.train (e.g. hydra/launcher=joblib, seed=1,2,3,4,5).
set -euo pipefail
sweep_dir="outputs/sweeps/momentum_table_$(date +%Y-%m-%d_%H-%M-%S)"
python -m letters.train -m experiment=momentum_table seed=1,2,3 "hydra.sweep.dir=$sweep_dir" "$@"
python -m letters.report "$sweep_dir"
