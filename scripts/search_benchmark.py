"""What a pruned search costs and finds, measured as a user runs it (issue 21's targets):

    python scripts/search_benchmark.py --data ../shared/data/scene-letters [--repeats 2]

runs, in the same minutes and alternating, one run of the reference's recipe
(``experiment=momentum_table momentum=0.95``) and the whole ``hparams_search=pruned`` command
(48 trials, stacks of 16, Hyperband), then once each the same 48 trials without pruning and the
momentum table (stacked, one seed) for its best row. It prints the search's wall time against
one run's (medians), its best validation accuracy against the table's best row, and how many
trials were pruned before their last epoch. Everything it trains goes to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

ONE_RUN = ["experiment=momentum_table", "momentum=0.95"]  # the search's recipe, one run


def timed(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def train(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "letters.train", *overrides]


def search_outcome(sweep: Path, epochs: int) -> dict[str, float]:
    study = optuna.load_study(study_name="letters_pruned", storage=f"sqlite:///{sweep}/optuna.db")
    trials = study.get_trials()
    pruned = [t for t in trials if t.state is TrialState.PRUNED]
    early = [t for t in pruned if (t.last_step or 0) < epochs]
    return {
        "trials": len(trials),
        "pruned_early": len(early),
        "best_val_acc": study.best_value,
        "epochs_trained": sum(t.last_step or 0 for t in trials),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a data set in the list layout")
    parser.add_argument("--repeats", type=int, default=2, help="alternating pairs (medians)")
    args = parser.parse_args()
    data = ["data=list", f"data.root={Path(args.data).resolve()}"]
    epochs = 50
    work = Path(tempfile.mkdtemp(prefix="search-benchmark-"))
    one_run, searches, outcomes = [], [], []
    for repeat in range(args.repeats):
        one_run.append(
            timed(
                train(
                    *data,
                    "experiment=momentum_table",
                    "momentum=0.95",
                    f"hydra.run.dir=run{repeat}",
                ),
                work,
            )
        )
        sweep = work / f"pruned{repeat}"
        searches.append(
            timed(train("-m", *data, "hparams_search=pruned", f"hydra.sweep.dir={sweep}"), work)
        )
        outcomes.append(search_outcome(sweep, epochs))
        print(f"pair {repeat + 1}: one run {one_run[-1]:.1f} s, pruned search {searches[-1]:.1f} s")
    unpruned_dir = work / "unpruned"
    unpruned = timed(
        train(
            "-m",
            *data,
            "hparams_search=pruned",
            "hydra.sweeper.pruner=null",
            f"hydra.sweep.dir={unpruned_dir}",
        ),
        work,
    )
    unpruned_outcome = search_outcome(unpruned_dir, epochs)
    table_dir = work / "table"
    timed(
        train(
            "-m",
            *data,
            "experiment=momentum_table",
            "hydra/launcher=stacked",
            f"hydra.sweep.dir={table_dir}",
        ),
        work,
    )
    rows = [json.loads(path.read_text()) for path in table_dir.glob("*/metrics.json")]
    table_best = max(rows, key=lambda row: row.get("val_acc") or 0)

    run, search = statistics.median(one_run), statistics.median(searches)
    outcome = outcomes[-1]
    print(f"\none run (experiment=momentum_table momentum=0.95): median {run:.1f} s of {one_run}")
    print(f"hparams_search=pruned (48 trials): median {search:.1f} s of {searches}")
    print(f"  = {search / run:.2f}x one run (target <= 3)")
    print(
        f"  best validation accuracy {100 * outcome['best_val_acc']:.1f}%; the momentum "
        f"table's best row (momentum {table_best['params']['momentum']}) "
        f"{100 * table_best['val_acc']:.1f}%"
    )
    print(
        f"  pruned before the last epoch: {outcome['pruned_early']} of {outcome['trials']} "
        f"(target >= {outcome['trials'] / 3:.0f}); epochs trained {outcome['epochs_trained']}"
    )
    print(
        f"the same 48 trials without pruning: {unpruned:.1f} s = {unpruned / run:.2f}x one run, "
        f"best validation accuracy {100 * unpruned_outcome['best_val_acc']:.1f}%, "
        f"epochs trained {unpruned_outcome['epochs_trained']}"
    )
    print(f"(everything is in {work})")


if __name__ == "__main__":
    main()
