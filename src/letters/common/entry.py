"""What every command does before Hydra takes over: find conf/, and answer an unknown
config-group choice (``optimizer=adamm``) with one line instead of Hydra's multi-line error."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import hydra

from letters.common.errors import ConfigError, exit_on_user_error

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"


def group_choices(group: str, conf_dir: Path = CONF_DIR) -> list[str] | None:
    """The options of a config group of ours, or None when ``group`` is not one."""
    folder = conf_dir / group
    if not folder.is_dir():
        return None
    return sorted(path.stem for path in folder.glob("*.yaml"))


def check_group_choices(arguments: Sequence[str], conf_dir: Path = CONF_DIR) -> None:
    """Raise ConfigError for ``group=value`` arguments naming a config that does not exist.

    Sweeps (``optimizer=sgd,adam``) are checked value by value; sweep functions such as
    ``choice(...)`` are left to Hydra.
    """
    for argument in arguments:
        if argument.startswith("-") or "=" not in argument:
            continue
        key, _, value = argument.lstrip("+~").partition("=")
        choices = group_choices(key, conf_dir)
        if choices is None or "(" in value:
            continue
        if value.startswith("[") and value.endswith("]"):  # several at once: logger=[a,b]
            value = value[1:-1]
        for option in value.split(","):
            if option not in choices and option != "null":
                raise ConfigError(f"{key}={option!r} is not one of: {', '.join(choices)}")


def hydra_command(config_name: str, task: Callable[[Any], Any]) -> Callable[[], Any]:
    """The console entry point of a command: checks group choices, then runs ``task`` under
    Hydra with conf/<config_name>.yaml; user errors end in one line (letters.common.errors)."""
    run = hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)(
        exit_on_user_error(task)
    )

    @exit_on_user_error
    def check(arguments: Sequence[str]) -> None:
        check_group_choices(arguments)

    def main() -> Any:
        check(sys.argv[1:])
        return run()

    main.__doc__ = task.__doc__
    return main
