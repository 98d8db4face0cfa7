"""The command line checked against conf/ before Hydra runs, so that what was typed wrongly
ends in one line naming what was probably meant, and no run folder is made for it:

- a config group's unknown choice (``optimizer=adamm``);
- an unknown key (``momentun=0.9``, ``data.roott=DIR``), where Hydra would advise ``+key``;
- a key added with ``+`` that nothing reads (``+momentun=0.9``: a run that would silently
  ignore it). ``+`` is for the arguments letters passes on: Lightning Trainer's
  (``+trainer.NAME``) and those of a class that a config node names in its ``_target_``
  (``+data.eval_batch_size=N``).

Hydra's own keys (``hydra.*``, ``hydra/...``) are left to Hydra. A key that conf/ shows to exist
(in the command's own config file, or in a group option chosen on the command line) costs only
reading those files; any other composes the config once, with Hydra's compose API.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType

from letters.common.errors import ConfigError

# Nodes whose keys letters hands to a constructor that no _target_ names: the trainer group's
# keys are Lightning Trainer's arguments (letters.runs.stack_run.trainer_settings).
PASSED_ON = {"trainer": "pytorch_lightning.Trainer"}

# Options that make Hydra read another config than the command's own: no key check then.
OTHER_CONFIG = ("--config-name", "-cn", "--config-path", "-cp", "--config-dir", "-cd")


def group_choices(group: str, conf_dir: Path) -> list[str] | None:
    """The options of a config group, or None when ``group`` is not one. A group under
    ``hydra/`` also has Hydra's own options (``hydra/job_logging=stdout``) and those that Hydra
    plugins store (``hydra/launcher=stacked``, ``hydra/sweeper/pruner=hyperband``)."""
    folder = conf_dir / group
    options = {path.stem for path in folder.glob("*.yaml")} if folder.is_dir() else None
    if group.startswith("hydra/"):
        hydra_folder = Path(hydra.__file__).parent / "conf" / group
        if hydra_folder.is_dir():
            options = (options or set()) | {path.stem for path in hydra_folder.glob("*.yaml")}
        stored = plugin_choices(group)
        if stored is not None:
            options = (options or set()) | stored
    return None if options is None else sorted(options)


def plugin_choices(group: str) -> set[str] | None:
    """The options Hydra's plugins store in ``group`` (None when they store none there):
    plugins store them when discovered, which this does (as Hydra's start would)."""
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    Plugins.instance()
    try:
        names = ConfigStore.instance().list(group)
    except OSError:
        return None
    return {name.removesuffix(".yaml") for name in names if name.endswith(".yaml")}


def check_group_choices(arguments: Sequence[str], conf_dir: Path) -> None:
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


def check_keys(arguments: Sequence[str], config_name: str, conf_dir: Path) -> None:
    """Raise ConfigError for a key typed on the command line that ``letters.<config_name>``
    neither has nor passes on (see the module's docstring)."""
    if any(argument.split("=")[0] in OTHER_CONFIG for argument in arguments):
        return
    overrides = parsed([a for a in arguments if "=" in a and not a.startswith("-")])
    certain = keys_in_files(config_name, overrides, conf_dir)
    doubtful = [
        override
        for override in overrides
        if names_a_key(override, conf_dir)
        and (override.type is not OverrideType.CHANGE or override.key_or_group not in certain)
    ]
    if not doubtful:
        return
    for config in composed_configs(config_name, overrides, conf_dir):
        for override in doubtful:
            check_key(override, config, f"letters.{config_name}", conf_dir)


def parsed(arguments: Sequence[str]) -> list[Override]:
    """The overrides as Hydra reads them; none when Hydra will refuse them (it says why)."""
    try:
        return OverridesParser.create().parse_overrides(list(arguments))
    except Exception:
        return []


def names_a_key(override: Override, conf_dir: Path) -> bool:
    """Whether ``override`` sets or adds a key of ours: not a group's choice, not Hydra's."""
    key = override.key_or_group
    return not (
        key == "hydra"
        or key.startswith(("hydra.", "hydra/"))
        or "/" in key
        or override.type is OverrideType.DEL
        or override.package is not None
        or group_choices(key, conf_dir) is not None
    )


def keys_in_files(config_name: str, overrides: Iterable[Override], conf_dir: Path) -> set[str]:
    """Keys certain to exist without composing: those of conf/<config_name>.yaml, and those of
    a group's option, chosen on the command line (``data=list`` has data.root) or by default
    when no option chosen has a defaults list (which may override other groups' defaults)."""
    primary = conf_dir / f"{config_name}.yaml"
    chosen: dict[str, Any] = {
        override.key_or_group: override.value()
        for override in overrides
        if override.package is None
        and not override.is_sweep_override()
        and group_choices(override.key_or_group, conf_dir) is not None
    }
    options = [conf_dir / group / f"{option}.yaml" for group, option in chosen.items()]
    if not any("defaults" in read_yaml(path) for path in options if path.is_file()):
        chosen = {**default_choices(primary), **chosen}
    certain = set(dotted_keys(own_keys(primary)))
    for group, option in chosen.items():
        if isinstance(option, str):
            certain |= set(dotted_keys(own_keys(conf_dir / group / f"{option}.yaml"), group))
    return certain


def default_choices(primary: Path) -> dict[str, Any]:
    """The group options a config file's defaults list chooses (``data: synthetic``)."""
    entries = read_yaml(primary).get("defaults") or []
    return {
        group: option
        for entry in entries
        if isinstance(entry, dict)
        for group, option in entry.items()
        if " " not in group and "/" not in group
    }


def read_yaml(path: Path) -> dict[str, Any]:
    """A config file's content, or nothing when it cannot be read."""
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return content if isinstance(content, dict) else {}


def own_keys(path: Path) -> dict[str, Any]:
    """A config file's own keys; none for one whose keys may land elsewhere (``@package``)."""
    try:
        if "@package" in path.read_text(encoding="utf-8"):
            return {}
    except OSError:
        return {}
    return {k: v for k, v in read_yaml(path).items() if k not in ("defaults", "hydra")}


def nodes(content: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every key of ``content``, nested ones too."""
    for key, value in content.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        yield path, value
        if isinstance(value, dict):
            yield from nodes(value, path)


def dotted_keys(content: dict[str, Any], prefix: str = "") -> list[str]:
    return [path for path, _ in nodes(content, prefix)]


@dataclass
class Composed:
    """What one composition of the command's config holds (Hydra's own node left out)."""

    keys: set[str]  # dotted paths of every key
    receivers: dict[str, str]  # node path -> what its keys are passed to, as arguments
    choices: dict[str, str | None]  # group -> the option chosen


def composed_configs(
    config_name: str, overrides: Sequence[Override], conf_dir: Path
) -> list[Composed]:
    """The config composed with the command line's group choices, once per option of a swept
    group (``-m optimizer=sgd,adam``); none when Hydra cannot compose it (it says why)."""
    fixed: list[str] = []
    swept: list[list[str]] = []
    for override in overrides:
        if names_a_key(override, conf_dir) or override.type is OverrideType.DEL:
            continue
        if not override.is_sweep_override():
            fixed.append(override.input_line)
            continue
        try:
            options = list(override.sweep_string_iterator())
        except Exception:  # a sweep function (interval(...)): the group keeps its default
            continue
        if options:
            swept.append([f"{override.get_key_element()}={option}" for option in options])
    firsts = [options[0] for options in swept]
    choices = [fixed + firsts] + [
        fixed + firsts[:index] + [option] + firsts[index + 1 :]
        for index, options in enumerate(swept)
        for option in options[1:]
    ]
    configs = (compose_config(config_name, conf_dir, lines) for lines in choices)
    return [config for config in configs if config is not None]


def compose_config(config_name: str, conf_dir: Path, choices: list[str]) -> Composed | None:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    try:
        with initialize_config_dir(str(conf_dir), version_base="1.3"):
            cfg = compose(config_name, overrides=choices, return_hydra_config=True)
    except Exception:  # Hydra's own error comes when it runs
        return None
    content = OmegaConf.to_container(cfg, resolve=False)
    hydra = content.pop("hydra")
    found = list(nodes(content))
    receivers = {
        path: value["_target_"]
        for path, value in found
        if isinstance(value, dict) and isinstance(value.get("_target_"), str)
    }
    receivers |= {path: target for path, target in PASSED_ON.items() if path in content}
    return Composed({path for path, _ in found}, receivers, dict(hydra["runtime"]["choices"]))


def check_key(override: Override, config: Composed, command: str, conf_dir: Path) -> None:
    """Raise ConfigError when ``override``'s key is neither in ``config`` nor, added with
    ``+``, an argument that letters passes on."""
    key = override.key_or_group
    if key in config.keys:
        return  # ``+key`` for a key that exists: Hydra says so
    parent, _, name = key.rpartition(".")
    receiver = config.receivers.get(parent)
    if receiver is not None and override.type is not OverrideType.CHANGE:
        accepted = constructor_arguments(receiver)
        if accepted is None or name in accepted:
            return
        arguments = [f"{parent}.{argument}" for argument in accepted]
        raise ConfigError(f"{key}: {receiver} takes no argument {name}{mean(key, arguments)}")
    group = key.partition(".")[0]
    chosen = config.choices.get(group)
    having = [option for option, keys in options_keys(group, conf_dir) if key in keys]
    if having:
        where = f"{group}={chosen}" if chosen else command
        raise ConfigError(f"{key} is not a key of {where}, only of {', '.join(having)}")
    every_option = (keys for name in config.choices for _, keys in options_keys(name, conf_dir))
    hint = mean(key, config.keys.union(*every_option))
    if not hint and receiver is not None:
        hint = f"; to pass it to {receiver}, add it: +{override.input_line}"
    added = "" if override.type is OverrideType.CHANGE else " (+ adds it, but nothing reads it)"
    hint = hint or f" (python -m {command} --cfg job shows its keys)"
    raise ConfigError(f"{key} is not a key of {command}{added}{hint}")


def options_keys(group: str, conf_dir: Path) -> list[tuple[str, set[str]]]:
    """``("data=list", {"data.root", ...})`` for each option of ``group`` (none if it is not
    a group of ours)."""
    return [
        (
            f"{group}={option}",
            set(dotted_keys(own_keys(conf_dir / group / f"{option}.yaml"), group)),
        )
        for option in group_choices(group, conf_dir) or []
    ]


def mean(key: str, known: Iterable[str]) -> str:
    """'; did you mean X?' for the known keys closest to ``key`` (by the last part of the
    path when no whole path is close: ``root`` -> ``data.root``), or ''."""
    known = sorted(k for k in known if "_target_" not in k)
    close = difflib.get_close_matches(key, known, n=2, cutoff=0.8)
    if not close:
        last = {k.rpartition(".")[2] for k in known}
        near = difflib.get_close_matches(key.rpartition(".")[2], last, n=2, cutoff=0.8)
        close = [k for k in known if k.rpartition(".")[2] in near][:2]
    return f"; did you mean {' or '.join(close)}?" if close else ""


def constructor_arguments(target: str) -> set[str] | None:
    """The keyword arguments that the class (or function) ``target`` accepts, following
    ``**kwargs`` up its base classes; None when that cannot be told."""
    from hydra.utils import get_object  # imports the target's module: only on this path

    try:
        made = get_object(target)
    except Exception:
        return None
    if isinstance(made, type):
        functions = [vars(cls)["__init__"] for cls in made.__mro__ if "__init__" in vars(cls)]
    else:
        functions = [made]
    names: set[str] = set()
    for function in functions:
        try:
            parameters = list(inspect.signature(function).parameters.values())
        except (TypeError, ValueError):
            return None
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        names |= {p.name for p in parameters if p.kind in named and p.name != "self"}
        if all(p.kind is not inspect.Parameter.VAR_KEYWORD for p in parameters):
            return names
    return None  # **kwargs passed on beyond what can be seen
