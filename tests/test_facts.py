"""Each fact is stated once: where a second statement cannot be avoided (a YAML file beside
the code), a test here ties the two."""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import OmegaConf

from letters.common.entry import CONF_DIR
from letters.common.records import Status
from letters.engine.members import DEFAULT_MEMBER, MEMBER_KEYS

SOURCE = Path(__file__).resolve().parents[1] / "src"


def test_a_members_defaults_are_train_yamls() -> None:
    """A member that names none of its settings (an old checkpoint, say) gets the reference's
    values, which conf/train.yaml states."""
    train = OmegaConf.load(CONF_DIR / "train.yaml")
    assert {key: train[key] for key in MEMBER_KEYS} == DEFAULT_MEMBER


def test_statuses_are_spelled_only_in_records() -> None:
    """A run's statuses are letters.common.records.Status: no other module spells one out."""
    spelled = re.compile("|".join(rf"[\"']{status.value}[\"']" for status in Status))
    found = [
        f"{path.relative_to(SOURCE)}:{number}: {line.strip()}"
        for path in sorted(SOURCE.rglob("*.py"))
        if path.name != "records.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if spelled.search(line)
    ]
    assert found == []
