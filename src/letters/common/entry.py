"""What every command does before Hydra takes over: find conf/, and answer what the command
line names wrongly (an unknown group choice or key, letters.common.overrides) with one line
instead of Hydra's multi-line error."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import hydra

from letters.common.errors import exit_on_user_error
from letters.common.overrides import check_group_choices, check_keys

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"


def hydra_command(config_name: str, task: Callable[[Any], Any]) -> Callable[[], Any]:
    """The console entry point of a command: checks the command line's group choices and
    keys, then runs ``task`` under Hydra with conf/<config_name>.yaml; user errors end in one
    line (letters.common.errors)."""
    run = hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)(
        exit_on_user_error(task)
    )

    @exit_on_user_error
    def check(arguments: Sequence[str]) -> None:
        check_group_choices(arguments, CONF_DIR)
        check_keys(arguments, config_name, CONF_DIR)

    def main() -> Any:
        check(sys.argv[1:])
        return run()

    main.__doc__ = task.__doc__
    return main
