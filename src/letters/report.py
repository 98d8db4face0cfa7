"""``python -m letters.report SWEEP_DIR``: the table of a sweep, in the form that fits it.

A sweep over settings (a grid: ``-m momentum=0.9,0.95 seed=1,2``, the experiment tables):
runs are grouped by the parameters that vary between them (all but ``seed``, which repeats a
setting); each group shows its validation accuracy at the last epoch and its test accuracy,
as mean ± standard deviation when it has several seeds, with the number of runs. The best
setting (highest mean validation accuracy) is marked, and a sweep of the reference's tables
(SGD momentum, Adam weight decay) shows the reference's published numbers beside ours.

A search (an Optuna study, or trials whose settings differ in several keys without forming a
grid): one row per trial, best validation accuracy first, with its trial (job) number and
folder and the parameters that vary.

An ensemble run (``ensemble=K``) is one job of the sweep, its members (``RUN/members/<i>/``)
are not: the grid shows the members' accuracies beside the ensemble's (mean ± std over every
member of a setting's runs, with their range), and a section under the table lists each run's
members one by one, so that the gain of averaging them is read at a glance.

Runs that collapsed (predict one class, or nearly, for every image) are marked; runs that
failed, diverged or were interrupted are listed under the table, never dropped in silence.
The table is printed as Markdown and written beside the runs as report.md, report.csv,
report.json and report.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from letters.common.errors import exit_on_user_error
from letters.reporting.sweep_report import report


@exit_on_user_error
def run(sweep_dir: str) -> None:
    print(report(Path(sweep_dir)), end="")
    print(f"\nwritten: {Path(sweep_dir) / 'report'}.{{md,csv,json,png}}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m letters.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sweep_dir", help="a multirun's directory, e.g. outputs/sweeps/<sweep>")
    args = parser.parse_args(argv)
    run(args.sweep_dir)


if __name__ == "__main__":
    main(sys.argv[1:])
