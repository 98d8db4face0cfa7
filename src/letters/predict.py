"""``python -m letters.predict ckpt=PATH images=[a.png,b.jpg]``: one line per image, like
``a.png: A (0.93)``. A bad image gets its own error line; the others are still predicted."""

from __future__ import annotations

import sys

from omegaconf import DictConfig, ListConfig

from letters.common.entry import hydra_command
from letters.common.errors import LettersError


def image_paths(cfg: DictConfig) -> list[str]:
    images = cfg.images
    if isinstance(images, str):
        return [images]
    if isinstance(images, ListConfig) and len(images) > 0:
        return [str(path) for path in images]
    raise LettersError(
        f"images={images!r} must name one image or a list, e.g. images=[a.png,b.jpg]"
    )


def predict(cfg: DictConfig) -> int:
    """Print a prediction per image; return how many images failed."""
    import torch  # start-up: --help and a bad override answer before torch loads

    from letters.data.images import load_grey, to_model_input
    from letters.engine.checkpoint import load_classifier  # start-up: Lightning, after checks

    paths = image_paths(cfg)
    model = load_classifier(cfg.ckpt, cfg.device)
    classes = model.hparams.classes
    failures = 0
    shown: list[tuple[str, object, torch.Tensor]] = []
    for path in paths:
        try:
            grey = torch.from_numpy(load_grey(path, model.hparams.norm_size))
        except LettersError as error:
            print(f"error: {error}", file=sys.stderr, flush=True)
            failures += 1
            continue
        with torch.no_grad():
            probabilities = model(to_model_input(grey).unsqueeze(0).to(cfg.device)).softmax(1)[0]
        confidence, index = probabilities.max(dim=0)
        print(f"{path}: {classes[int(index)]} ({float(confidence):.2f})", flush=True)
        if cfg.annotate:  # shown larger than the model's input, for a person to read
            shown.append((path, load_grey(path, 96), probabilities.cpu()))
    if cfg.annotate and shown:
        from letters.reporting.pictures import annotated_predictions, save_figure  # matplotlib

        names, images, probabilities = zip(*shown, strict=True)
        figure = annotated_predictions(images, names, torch.stack(probabilities), classes)
        print(f"annotated: {save_figure(figure, cfg.annotate)}", flush=True)
    return failures


def predict_command(cfg: DictConfig) -> None:
    if predict(cfg):
        sys.exit(1)


main = hydra_command("predict", predict_command)


if __name__ == "__main__":
    main()
