"""Continuing a run in its own directory: ``python -m letters.train resume=RUN_DIR``.

Hydra's run directory follows ``resume`` (conf/hydra/default.yaml uses the resolvers below),
and the run's own saved config comes back with ``resume`` pointing at its ``last.ckpt``.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from letters.errors import ConfigError, LettersError


def resumed_run_dir(resume: str | None, new_run_dir: str) -> str:
    """hydra.run.dir: a resumed run finishes in its own directory, a new run gets a new one."""
    if not resume:
        return new_run_dir
    path = Path(resume)
    return str(path.parent.parent if path.suffix == ".ckpt" else path)


OmegaConf.register_new_resolver("letters_run_dir", resumed_run_dir, replace=True)
OmegaConf.register_new_resolver(
    "letters_if_resuming", lambda resume, yes, no: yes if resume else no, replace=True
)


def resumed_config(cfg: DictConfig, run_dir: Path, task_overrides: list[str]) -> DictConfig:
    """The interrupted run's own config, with ``resume`` pointing at its last checkpoint.

    Only ``epochs`` may change (to train a finished run further): anything else would make
    the directory hold a run that no config describes.
    """
    others = [o for o in task_overrides if not o.startswith(("resume=", "epochs="))]
    if others:
        raise ConfigError(
            f"resume={cfg.resume}: a resumed run keeps its configuration; only epochs= may "
            f"change (got {' '.join(others)})"
        )
    saved = run_dir / "config.yaml"
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    if Path(cfg.resume).suffix == ".ckpt":
        checkpoint = Path(cfg.resume)
    for path in (saved, checkpoint):
        if not path.is_file():
            raise LettersError(f"{path}: not found, so {cfg.resume} cannot be resumed")
    resumed = OmegaConf.load(saved)
    resumed.resume = str(checkpoint)
    if OmegaConf.select(resumed, "logger.save_dir") is not None:
        resumed.logger.save_dir = str(run_dir)  # where the run is now, if it was moved
    if any(o.startswith("epochs=") for o in task_overrides):
        resumed.epochs = resumed.trainer.max_epochs = cfg.epochs
    return resumed
