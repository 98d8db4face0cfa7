"""Prepare: one job's config checked, continued where asked (resume=), resolved and saved,
while Hydra's config for that job is current."""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from letters.common.errors import ConfigError
from letters.reporting.picture_workers import start_picture_server
from letters.runs.jobs import Job, multirun, record_failure
from letters.runs.pruning import trial_of_current_job
from letters.runs.resume import continue_sweep_job, requeued_job, resumed_config
from letters.runs.threads import trains_stacks_here
from letters.runs.validate import validate_training

log = logging.getLogger("letters.train")


def prepare_job(cfg: DictConfig) -> Job | float | BaseException:
    """Validate and resolve one job's config, and save it as the run's ``config.yaml``.

    Called with Hydra's config for this job current (inside run_job). In a multirun a bad
    config is recorded in the job's metrics.json and scores FAILED_SCORE so the others go on;
    a single run raises (one line, through letters.common.errors). A job that ended before
    (resume=true) returns its outcome: its score, or the TrialPruned of a pruned trial.
    """
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    overrides = list(hydra_cfg.overrides.task)
    try:
        if multirun() and not cfg.get("resume") and requeued_job(run_dir):
            log.info("%s: requeued after an interruption; continuing where it stood", run_dir)
            cfg.resume = True
        if cfg.get("resume") is True:
            if not multirun():
                raise ConfigError(
                    "resume=true continues a sweep: add it to the sweep's own command with -m "
                    "and hydra.sweep.dir=DIR (resume=RUN_DIR continues one run)"
                )
            continued = continue_sweep_job(cfg, run_dir, overrides)
            if not isinstance(continued, DictConfig):
                return continued  # ended before: its recorded outcome
            cfg = continued
            if cfg.resume:
                overrides = []
        elif cfg.get("resume"):
            cfg, overrides = resumed_config(cfg, run_dir, overrides), []
        validate_training(cfg, overrides)
        if cfg.pictures and draws_in_workers(hydra_cfg):
            start_picture_server()
        resolved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
        OmegaConf.save(resolved, run_dir / "config.yaml")
        return Job(resolved, run_dir, overrides, trial=trial_of_current_job())
    except Exception as error:
        if not multirun():
            raise
        return record_failure(run_dir, error)


def draws_in_workers(hydra_cfg: DictConfig) -> bool:
    """Whether this job's sweep will likely draw a stack's pictures in worker processes: a
    second job (or later) of the stacked launcher, which trains its stacks in this process.
    Their server then starts now (start_picture_server): its imports take the core that
    preparing the jobs leaves idle, not the end of training (about 4 s of the momentum table
    over three seeds, 2 cores)."""
    return trains_stacks_here(hydra_cfg) and hydra_cfg.job.num >= 1
