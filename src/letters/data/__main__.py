"""``python -m letters.data export --out DIR [overrides]``: write a data source in the list
layout (images/ plus train/validation/test .json), e.g. the synthetic set for other tools.

Overrides are the same as ``letters.train``'s, e.g. ``data.train_per_class=50`` or
``data=emnist``; the images are written at the source's own size before resizing.
"""

from __future__ import annotations

import argparse
import sys

from letters.common.entry import CONF_DIR
from letters.common.errors import exit_on_user_error


@exit_on_user_error
def export(out: str, overrides: list[str]) -> None:
    # start-up: --help answers before Hydra, torch and matplotlib load
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from letters.data.list_layout import export_list_layout
    from letters.data.modules import SyntheticDataModule

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    data = instantiate(cfg.data)
    splits = data.render() if isinstance(data, SyntheticDataModule) else data.load_grey_splits()
    path = export_list_layout(splits, out)
    counts = ", ".join(f"{split} {len(labels)}" for split, (_, labels) in splits.items())
    print(f"wrote {path} ({counts})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m letters.data", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    export_parser = commands.add_parser("export", help="write the data in the list layout")
    export_parser.add_argument("--out", required=True, help="folder to write")
    export_parser.add_argument("overrides", nargs="*", help="config overrides, e.g. data=emnist")
    args = parser.parse_args(argv)
    export(args.out, args.overrides)


if __name__ == "__main__":
    main(sys.argv[1:])
