"""Two runs of the same sweep side by side, job by job: did they give the same numbers?

    python scripts/compare_sweeps.py SWEEP_A SWEEP_B [--names stacked,basic]

Jobs are matched by their overrides (as Hydra recorded them in .hydra/overrides.yaml), so
the sweeps may come from different launchers or orders. Prints a Markdown table with each
job's validation accuracy at the last epoch, best validation accuracy and test accuracy from
both, and how many jobs agree exactly.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from letters.reporting.sweep import collect_runs, shown_keys, swept_keys

COLUMNS = (("val_acc", "val"), ("best_val_acc", "best val"), ("test_acc", "test"))


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--names", default="A,B", help="two column labels, comma-separated")
    args = parser.parse_args()
    names = args.names.split(",")
    first, second = collect_runs(args.first), collect_runs(args.second)
    keys = shown_keys(first, swept_keys(first))
    by_setting = {tuple(sorted(run.overrides.items())): run for run in second}
    header = ["job", *keys]
    for _, title in COLUMNS:
        header += [f"{title} {names[0]} %", f"{title} {names[1]} %"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    same = 0
    for run in first:
        other = by_setting.get(tuple(sorted(run.overrides.items())))
        mine = run.metrics or {}
        theirs = (other.metrics or {}) if other is not None else {}
        cells = [run.directory.name, *(run.overrides.get(k, "") for k in keys)]
        for key, _ in COLUMNS:
            cells += [percent(mine.get(key)), percent(theirs.get(key))]
        print("| " + " | ".join(cells) + " |")
        same += all(mine.get(key) == theirs.get(key) for key, _ in COLUMNS)
    print(f"\n{same} of {len(first)} jobs give exactly the same three accuracies in both sweeps.")


if __name__ == "__main__":
    main()
