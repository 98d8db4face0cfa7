"""``python -m letters.test ckpt=PATH [split=...] [data=...]``: the accuracy of a checkpoint on
a split, printed and written as JSON beside the run it came from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from letters.common.config import check_handed_over
from letters.common.entry import hydra_command
from letters.common.errors import ConfigError
from letters.common.files import write_json

SPLIT_CHOICES = ("test", "validation", "train")


def run_dir_of(ckpt: Path) -> Path:
    """``RUN`` for a checkpoint in ``RUN/checkpoints/``, else the checkpoint's folder."""
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent


def default_out_dir(ckpt: Path, data_name: str, split: str) -> Path:
    """``RUN/test/<ckpt name>-<data>-<split>/`` for a checkpoint in ``RUN/checkpoints/``."""
    return run_dir_of(ckpt) / "test" / f"{ckpt.stem}-{data_name}-{split}"


def data_for(cfg: DictConfig, model: Any, ckpt: Path):
    """The data the user chose, or else the data the checkpoint was trained on."""
    if cfg.get("data") is not None:
        data_cfg = OmegaConf.merge(cfg.data, {"norm_size": model.hparams.norm_size})
    else:
        data_cfg = OmegaConf.create(model.hparams.data)
        check_handed_over(data_cfg, ckpt, "hyper_parameters.data")
    return instantiate(data_cfg).prepare()


def test(cfg: DictConfig) -> dict[str, Any]:
    if cfg.split not in SPLIT_CHOICES:
        raise ConfigError(f"split={cfg.split!r} is not one of: {', '.join(SPLIT_CHOICES)}")
    from letters.runs.validate import validate_data

    validate_data(cfg.get("data"))  # a bad data.root is said before the checkpoint loads
    from letters.engine.checkpoint import load_classifier  # start-up: Lightning, after checks
    from letters.engine.evaluate import predict_split

    ckpt = Path(cfg.ckpt)
    model = load_classifier(ckpt, cfg.device)
    data = data_for(cfg, model, ckpt)
    inputs, labels = data.splits[cfg.split]
    predictions = predict_split(model, inputs, labels)
    out_dir = Path(cfg.out) if cfg.out else default_out_dir(ckpt, data.name, cfg.split)
    result = {
        "ckpt": str(ckpt),
        "split": cfg.split,
        "data": data.describe(),
        "accuracy": predictions.accuracy,
        "loss": predictions.loss,
        "count": len(labels),
    }
    write_json(out_dir / "metrics.json", result)
    print(
        f"{cfg.split} accuracy {100 * result['accuracy']:.2f}% ({result['count']} images, "
        f"loss {result['loss']:.4f})\nwritten: {out_dir / 'metrics.json'}",
        flush=True,
    )
    if cfg.pictures:
        from torch.utils.tensorboard import SummaryWriter  # start-up: only with pictures

        from letters.reporting.pictures import evaluation_pictures, run_name

        with SummaryWriter(str(out_dir / "tensorboard")) as writer:
            evaluation_pictures(
                out_dir,
                inputs,
                labels,
                predictions.logits,
                model.hparams.classes,
                model.hparams.norm_size,
                title=f"{data.name} {cfg.split} split, {ckpt.name}",
                run=run_name(run_dir_of(ckpt)),
                history=model.histories[0] if model.stack_size == 1 else None,
                writer=writer,
            )
        print(f"pictures: {out_dir}/*.png\ntensorboard --logdir {out_dir / 'tensorboard'}")
    return result


main = hydra_command("test", test)


if __name__ == "__main__":
    main()
