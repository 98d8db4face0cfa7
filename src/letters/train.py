"""``python -m letters.train [overrides]``: fit one configuration, test its best checkpoint,
and leave everything a report or a person needs in the run's directory."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from letters.entry import hydra_command

log = logging.getLogger("letters.train")

# What a failed or diverged run returns to a sweeper: the lowest possible accuracy.
FAILED_SCORE = 0.0


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
    from letters.errors import ConfigError, LettersError

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
    if any(o.startswith("epochs=") for o in task_overrides):
        resumed.epochs = resumed.trainer.max_epochs = cfg.epochs
    return resumed


def flat_params(cfg: DictConfig) -> dict[str, Any]:
    """The hyper-parameters a table or the HParams dashboard compares runs by."""
    return {
        "optimizer": cfg.optimizer.name,
        "lr": cfg.lr,
        "momentum": cfg.optimizer.get("momentum"),
        "weight_decay": cfg.weight_decay,
        "hidden_sizes": ",".join(str(size) for size in cfg.hidden_sizes),
        "activation": cfg.activation,
        "init": cfg.init,
        "reduction": cfg.reduction,
        "input_norm": cfg.input_norm,
        "augment": "photo" if cfg.augment else "none",
        "scheduler": cfg.scheduler,
        "test_time_polarity": cfg.test_time_polarity,
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "seed": cfg.seed,
        "norm_size": cfg.norm_size,
        "data": cfg.data._target_.rsplit(".", 1)[-1],
    }


def build_trainer(cfg: DictConfig, run_dir: Path, logger: Any):
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    from letters.callbacks import ValidateLastEpoch
    from letters.checkpoint import AtomicCheckpointIO

    settings = OmegaConf.to_container(cfg.trainer, resolve=True)
    if settings.get("enable_progress_bar") is None:
        settings["enable_progress_bar"] = sys.stderr.isatty()
    checkpoints = run_dir / "checkpoints"
    best = ModelCheckpoint(
        dirpath=checkpoints,
        filename="best",
        monitor="val/acc",
        mode="max",
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    last = ModelCheckpoint(
        dirpath=checkpoints,
        filename="last",
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    trainer = pl.Trainer(
        **settings,
        logger=logger,
        callbacks=[ValidateLastEpoch(), best, last],
        plugins=[AtomicCheckpointIO()],
        default_root_dir=run_dir,
    )
    return trainer, best


def quiet_lightning() -> None:
    """Drop Lightning's advertising and a deprecation warning it raises on itself."""
    import warnings

    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    # letters logs per epoch only; Lightning warns when an epoch has fewer calls than this.
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
        lambda record: "Tip:" not in record.getMessage()
    )


def train(cfg: DictConfig) -> float:
    """Fit, test and record one run; return the validation accuracy (what a sweeper maximises).

    In a multirun, a job that fails records why in its metrics.json and returns 0.0 so that
    the other jobs go on; a single run raises. A failed or diverged run scores 0.0, the lowest
    accuracy, rather than NaN: the Optuna sweeper ends the whole study on a NaN, while 0.0
    lets it go on and steer away from that region.
    """
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    task_overrides = list(hydra_cfg.overrides.task)
    try:
        if cfg.get("resume"):
            cfg, task_overrides = resumed_config(cfg, run_dir, task_overrides), []
        return fit_and_record(cfg, run_dir, task_overrides)
    except Exception as error:
        if not multirun():
            raise
        from letters.errors import LettersError
        from letters.files import write_json

        if isinstance(error, LettersError):
            message = str(error)
            log.error("error: %s", message)
        else:
            message = f"{type(error).__name__}: {error}".splitlines()[0]
            log.exception("job failed: %s", message)
        write_json(run_dir / "metrics.json", {"status": "failed", "error": message})
        return FAILED_SCORE


def fit_and_record(cfg: DictConfig, run_dir: Path, task_overrides: list[str]) -> float:
    from letters.config import validate_training

    validate_training(cfg, task_overrides)

    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from letters.checkpoint import read_checkpoint
    from letters.files import write_json
    from letters.module import DivergedError, LetterClassifier

    started = time.perf_counter()
    quiet_lightning()
    if cfg.torch_threads:
        import torch

        torch.set_num_threads(cfg.torch_threads)
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    data = instantiate(cfg.data).prepare()
    log.info("data: %s", data.describe())
    model = LetterClassifier(
        norm_size=cfg.norm_size,
        classes=data.classes,
        hidden_sizes=list(cfg.hidden_sizes),
        activation=cfg.activation,
        init=cfg.init,
        reduction=cfg.reduction,
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        data=OmegaConf.to_container(cfg.data, resolve=True),
        batch_size=cfg.batch_size,
        input_norm=cfg.input_norm,
        augment=OmegaConf.to_container(cfg.augment, resolve=True) if cfg.augment else None,
        scheduler=cfg.scheduler,
        test_time_polarity=cfg.test_time_polarity,
        seed=cfg.seed,
    )
    logger = instantiate(cfg.logger)
    trainer, best = build_trainer(cfg, run_dir, logger)
    params = flat_params(cfg)
    record: dict[str, Any] = {"status": "finished", "params": params, "run_dir": str(run_dir)}
    if cfg.resume:
        read_checkpoint(cfg.resume)  # one clear line if it is damaged, before Lightning reads it
        log.info("resuming from %s", cfg.resume)
    try:
        trainer.fit(model, datamodule=data, ckpt_path=cfg.resume or None)
    except DivergedError as error:
        log.error("%s", error)
        record.update(status="diverged", diverged_epoch=error.epoch, diverged_step=error.step)
    # From the history, which a resumed run restores, rather than this process's last logs.
    history = model.history
    record["val_acc"] = history["val_acc"][-1] if history["val_acc"] else None
    record["train_loss"] = history["train_loss"][-1] if history["train_loss"] else None
    record["train_seconds"] = round(time.perf_counter() - started, 2)
    record["epochs_completed"] = trainer.current_epoch
    record["best_val_acc"] = None if best.best_model_score is None else float(best.best_model_score)
    if best.best_model_path:
        predictions = test_best_checkpoint(model, data, Path(best.best_model_path))
        record.update(test_acc=predictions.accuracy, test_loss=predictions.loss)
        record["best_checkpoint"] = str(Path(best.best_model_path).relative_to(run_dir))
        logger.log_metrics(
            {"test/acc": record["test_acc"], "test/loss": record["test_loss"]}, trainer.global_step
        )
        if cfg.pictures:
            from letters.plots import evaluation_pictures

            evaluation_pictures(
                run_dir / "pictures",
                *data.splits["test"],
                predictions.logits,
                data.classes,
                cfg.norm_size,
                title="test split, best checkpoint",
                history=model.history,
                writer=logger.experiment,
                step=trainer.global_step,
                seed=cfg.seed,
            )
    else:
        record["test_acc"] = record["test_loss"] = None
    record["wall_seconds"] = round(time.perf_counter() - started, 2)
    hp_metrics = {
        f"hparams/{key}": record[key]
        for key in ("val_acc", "best_val_acc", "test_acc", "train_loss")
        if record[key] is not None
    }
    logger.log_hyperparams(params, hp_metrics)
    logger.finalize("success")
    write_json(run_dir / "metrics.json", record)
    print_summary(record, run_dir)
    if record["status"] == "diverged" and not multirun():
        from letters.errors import LettersError

        raise LettersError(
            f"training diverged (non-finite loss at epoch {record['diverged_epoch']}, step "
            f"{record['diverged_step']}); {shown_path(run_dir)}/metrics.json records it"
        )
    finished = record["status"] == "finished" and record["val_acc"] is not None
    return float(record["val_acc"]) if finished else FAILED_SCORE


def test_best_checkpoint(model: Any, data: Any, path: Path) -> Any:
    """Load the best weights into ``model`` and predict the test split with them."""
    from letters.checkpoint import read_checkpoint
    from letters.evaluate import predict_split

    model.load_state_dict(read_checkpoint(path, model.device)["state_dict"])
    return predict_split(model.eval(), *data.splits["test"])


def multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.get().mode == RunMode.MULTIRUN


def shown_path(path: Path) -> Path:
    """Relative to the working directory when inside it: shorter, and ready to paste."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def print_summary(record: dict[str, Any], run_dir: Path) -> None:
    run_dir = shown_path(run_dir)

    def percent(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}%"

    loss = "-" if record["train_loss"] is None else f"{record['train_loss']:.4f}"

    lines = [
        f"{record['status']}: val_acc {percent(record['val_acc'])} (best "
        f"{percent(record['best_val_acc'])}), test_acc {percent(record['test_acc'])} "
        f"[best checkpoint], train_loss {loss}, "
        f"{record['wall_seconds']:.1f} s",
        f"outputs: {run_dir}",
        f"tensorboard --logdir {run_dir}",
    ]
    print("\n".join(lines), flush=True)


main = hydra_command("train", train)


if __name__ == "__main__":
    main()
