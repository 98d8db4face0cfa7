"""The resolvers letters' configs use (``${letters_run_dir:...}`` and the others), registered
by each command before Hydra composes its config: where a run or a continued run writes, and
the label a multirun's job is known by in the trackers."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import OmegaConf

from letters.common.multirun import read_sweep, sweep_overrides
from letters.common.settings import is_setup_key


def resumed_run_dir(resume: str | bool | None, new_run_dir: str) -> str:
    """hydra.run.dir: a resumed run finishes in its own directory, a new run gets a new one."""
    if not resume or resume is True:  # resume=true is for sweeps (their own directories)
        return new_run_dir
    path = Path(resume)
    return str(path.parent.parent if path.suffix == ".ckpt" else path)


def hydra_subdir(resume: str | bool | None, output_dir: str) -> str:
    """hydra.output_subdir: a continued run keeps the .hydra/ it started with and records how
    it was continued beside it; a run that never started gets .hydra/ as usual."""
    if resume and (Path(output_dir) / ".hydra").is_dir():
        return f".hydra-resumed/{datetime.now():%Y-%m-%d_%H-%M-%S-%f}"
    return ".hydra"


def swept_keys(hydra_cfg: Any) -> set[str] | None:
    """The keys a multirun varies, when the sweep says so: its sweeper's ``params`` and the
    command line's sweeps (``momentum=0.9,0.95``, from the sweep's multirun.yaml); None when
    the sweeper keeps the command line to itself (Optuna)."""
    sweep = read_sweep(Path(hydra_cfg.sweep.dir) / "multirun.yaml")
    parsed = sweep_overrides(sweep) if sweep is not None else None
    if parsed is None:
        return None
    keys = set(OmegaConf.select(hydra_cfg, "sweeper.params") or {})
    return keys | {o.key_or_group for o in parsed if o.is_sweep_override()}


def run_label(single: str = "") -> str:
    """A multirun job's values of what the sweep varies, e.g. ``momentum=0.9,seed=2``. For a
    single run: "", or its folder's name with ``single="name"``. Resolved
    (``${letters_run_label:}``) while Hydra's config of the job is current, then saved in
    the run's config.yaml."""
    if not HydraConfig.initialized():
        return ""
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        return Path(HydraConfig.get().runtime.output_dir).name if single == "name" else ""
    hydra_cfg = HydraConfig.get()
    keys = swept_keys(hydra_cfg)
    parts = []
    for override in OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task)):
        key = override.key_or_group
        if keys is not None and key not in keys:
            continue
        if keys is None and is_setup_key(key):
            continue
        parts.append(f"{key}={override.get_value_element_as_str()}")
    label = ",".join(parts) or str(hydra_cfg.job.num)
    return label.replace("/", "_").replace(" ", "")


def register_resolvers() -> None:
    """Make the resolvers known to OmegaConf (again: replacing is harmless)."""
    OmegaConf.register_new_resolver("letters_run_dir", resumed_run_dir, replace=True)
    OmegaConf.register_new_resolver("letters_hydra_subdir", hydra_subdir, replace=True)
    OmegaConf.register_new_resolver("letters_run_label", run_label, replace=True)
