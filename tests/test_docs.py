"""The documentation says what the code does: the configuration tables match conf/train.yaml,
and the README's links lead somewhere. (``mkdocs build --strict``, which checks the site's own
links and anchors, runs in .ci/run: it needs the docs extra.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

REPOSITORY = Path(__file__).resolve().parents[1]
TRAIN_YAML = REPOSITORY / "conf" / "train.yaml"
CONFIGURATION_PAGE = REPOSITORY / "docs" / "configuration.md"
README = REPOSITORY / "README.md"

TABLE_HEADER = "| key | default | meaning |"
CODE_SPAN = re.compile(r"^`([^`]*)`$")
# [text](target) inline, and [label]: target as a reference definition.
INLINE_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)[^)]*\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.MULTILINE)


def key_table(markdown: Path) -> dict[str, str]:
    """The first ``| key | default | meaning |`` table of a page: each key with its default as
    written (the text inside the backticks)."""
    lines = markdown.read_text().splitlines()
    start = lines.index(TABLE_HEADER)
    rows: dict[str, str] = {}
    for line in lines[start + 2 :]:  # past the header and its |---| line
        if not line.startswith("|"):
            break
        key_cell, default_cell = (cell.strip() for cell in line.strip("|").split("|")[:2])
        key, default = CODE_SPAN.match(key_cell), CODE_SPAN.match(default_cell)
        assert key and default, f"{markdown.name}: not `key` | `default`: {line}"
        assert key[1] not in rows, f"{markdown.name}: {key[1]} is listed twice"
        rows[key[1]] = default[1]
    return rows


def yaml_value(text: str) -> Any:
    """A table's default read as YAML, as OmegaConf reads conf/train.yaml (so 5.0e-4 is a float)."""
    return OmegaConf.to_container(OmegaConf.create(f"value: {text}"))["value"]


def train_yaml_defaults() -> dict[str, Any]:
    """Every key a user of letters.train can set at the top level, with its default.

    - The plain keys of conf/train.yaml, resolved: ``cache_dir`` is an interpolation whose
      default (``$LETTERS_CACHE_DIR`` unset) is ``~/.cache/letters``; the caller unsets it.
    - The groups of its defaults list (``data``, ``optimizer``, ...; not ``_self_``), each
      with the name of the config it chooses, or None where it chooses none (``pretrain: null``).
    """
    config = OmegaConf.load(TRAIN_YAML)
    groups: dict[str, Any] = {}
    for entry in config.defaults:
        if entry == "_self_":
            continue
        ((group, choice),) = entry.items()
        groups[group] = choice
    plain = OmegaConf.to_container(config, resolve=True)
    del plain["defaults"]
    overlap = groups.keys() & plain.keys()
    assert not overlap, f"both a group and a key: {overlap}"
    return {**groups, **plain}


@pytest.fixture
def no_cache_dir_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LETTERS_CACHE_DIR", raising=False)


@pytest.mark.usefixtures("no_cache_dir_variable")
def test_configuration_page_lists_exactly_train_yamls_keys_with_their_defaults() -> None:
    expected = train_yaml_defaults()
    table = key_table(CONFIGURATION_PAGE)
    assert sorted(table) == sorted(expected), (
        f"missing from the page: {sorted(expected.keys() - table.keys())}; "
        f"not in train.yaml: {sorted(table.keys() - expected.keys())}"
    )
    wrong = {
        key: (written, expected[key])
        for key, written in table.items()
        if yaml_value(written) != expected[key]
    }
    assert not wrong, f"(page, train.yaml) defaults that differ: {wrong}"


@pytest.mark.usefixtures("no_cache_dir_variable")
def test_readmes_short_table_agrees_with_train_yaml() -> None:
    expected = train_yaml_defaults()
    table = key_table(README)
    assert table.keys() <= expected.keys(), sorted(table.keys() - expected.keys())
    wrong = {key: written for key, written in table.items() if yaml_value(written) != expected[key]}
    assert not wrong, f"README defaults that differ from train.yaml: {wrong}"


def relative_links(markdown: Path) -> list[str]:
    """Link targets that are files of this repository: no URL, no mail, no bare #anchor."""
    text = markdown.read_text()
    targets = INLINE_LINK.findall(text) + REFERENCE_LINK.findall(text)
    return [
        target
        for target in targets
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target) and not target.startswith("#")
    ]


def test_every_relative_link_in_the_readme_points_at_a_file() -> None:
    links = relative_links(README)
    assert links, "the README links to its docs pages"
    missing = [link for link in links if not (README.parent / link.split("#")[0]).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"
