"""Whatever users feed it, it ends with one clear line and loses nothing: bad data, bad
config, divergence, a killed run resumed, repeated runs, damaged checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import cli_command, cli_environment, list_data, run_cli, run_training

FAST = ["epochs=1", "pictures=false", "batch_size=16"]


@pytest.fixture(scope="module")
def fast_run(list_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short run whose checkpoints and config the tests below damage or doctor (copies)."""
    return run_training(tmp_path_factory.mktemp("fast"), *FAST, data=list_dataset).folder


def first_image(root: Path, split: str = "train") -> Path:
    return root / "images" / next(iter(json.loads((root / f"{split}.json").read_text())))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DATA_CASES: list[tuple[str, Callable[[Path], None], str]] = [
    (
        "no images folder",
        lambda r: shutil.rmtree(r / "images"),
        "{r}/images: images folder not found",
    ),
    (
        "no split file",
        lambda r: (r / "test.json").unlink(),
        "{r}/test.json: split file not found (the list layout needs train.json, validation.json",
    ),
    (
        "malformed json",
        lambda r: (r / "train.json").write_text('{"a.png": "A",'),
        "{r}/train.json: not valid JSON",
    ),
    (
        "json not a mapping",
        lambda r: (r / "train.json").write_text('["a.png"]'),
        "{r}/train.json: expected an object mapping image names to letters",
    ),
    ("missing image", lambda r: first_image(r).unlink(), "{img}: image file not found"),
    ("truncated image", lambda r: truncate(first_image(r)), "{img}: cannot read image"),
    ("empty image", lambda r: first_image(r).write_bytes(b""), "{img}: not an image"),
    ("not an image", lambda r: first_image(r).write_text("hello"), "{img}: not an image"),
    (
        "label not a letter",
        lambda r: (r / "validation.json").write_text('{"x.png": "7"}'),
        "{r}/validation.json: x.png: label '7' is not a single letter A-Z",
    ),
    (
        "empty split",
        lambda r: (r / "validation.json").write_text("{}"),
        "{r}/validation.json: the validation split is empty",
    ),
    (
        "name outside images/",
        lambda r: (r / "test.json").write_text('{"../train.json": "A"}'),
        "{r}/test.json: '../train.json' is not a file name inside images/",
    ),
    (
        "absolute name",
        lambda r: (r / "test.json").write_text('{"/etc/passwd": "A"}'),
        "{r}/test.json: '/etc/passwd' is not a file name inside images/",
    ),
    (
        "decompression bomb",
        lambda r: Image.new("1", (10_000, 10_000)).save(first_image(r), format="PNG"),
        "{img}: refused, too many pixels",
    ),
]


@pytest.mark.parametrize(
    ("case", "breakage", "message"), DATA_CASES, ids=[c[0] for c in DATA_CASES]
)
def test_bad_data_ends_in_one_line(list_dataset, tmp_path, cache_dir, case, breakage, message):
    root = tmp_path / "data"
    shutil.copytree(list_dataset, root)
    image = first_image(root)
    breakage(root)
    result = run_cli("train", *list_data(root), *FAST, cwd=tmp_path, check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: " + message.format(r=root, img=image)), last
    assert not (cache_dir.exists() and any(cache_dir.iterdir())), "a partial cache was left"
    assert not list((tmp_path / "outputs").rglob("*.ckpt"))


def test_unusual_images_work(list_dataset: Path, tmp_path: Path, cache_dir: Path) -> None:
    """RGBA, palette, 16-bit grey, CMYK, 1x1 and 3000x2000 images are read, not refused."""
    root = tmp_path / "data"
    shutil.copytree(list_dataset, root)
    names = list(json.loads((root / "train.json").read_text()))
    source = Image.open(root / "images" / names[0]).convert("RGB")
    source.convert("RGBA").save(root / "images" / names[1], format="PNG")
    source.convert("P").save(root / "images" / names[2], format="PNG")
    source.convert("I;16").save(root / "images" / names[3], format="PNG")
    source.convert("CMYK").save(root / "images" / names[4], format="JPEG")
    source.resize((1, 1)).save(root / "images" / names[5], format="PNG")
    source.resize((3000, 2000)).save(root / "images" / names[6], format="PNG")
    run_training(tmp_path, *FAST, data=root)


CONFIG_CASES = [
    (
        "optimizer=adamm",
        "optimizer='adamm' is not one of: adadelta, adagrad, adam, adamw, rmsprop, sgd",
    ),
    ("activation=gelu", "activation='gelu' is not one of: none, relu, sigmoid, tanh"),
    ("init=orthogonal", "init='orthogonal' is not one of: normal, kaiming, xavier"),
    ("reduction=max", "reduction='max' is not one of: mean, sum"),
    ("lr=-0.1", "lr=-0.1 must be > 0"),
    ("momentum=-0.5", "momentum=-0.5 must be >= 0 and < 1"),
    ("weight_decay=-0.01", "weight_decay=-0.01 must be >= 0"),
    ("hidden_sizes=[-3]", "hidden_sizes=[-3] must be a list of whole numbers > 0, e.g. [64,32]"),
    ("norm_size=0", "norm_size=0 must be >= 1"),
    ("batch_size=-8", "batch_size=-8 must be >= 1"),
    ("epochs=0", "epochs=0 must be >= 1"),
    ("data=imagenet", "data='imagenet' is not one of: emnist, list, synthetic"),
]


@pytest.mark.parametrize(("override", "message"), CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_is_named_before_any_work(tmp_path, cache_dir, override, message) -> None:
    result = run_cli("train", override, cwd=tmp_path, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: {message}"]
    assert not cache_dir.exists(), "data was decoded before the config was checked"


def test_momentum_for_adam_warns_once(list_dataset: Path, tmp_path: Path, cache_dir: Path):
    result = run_training(tmp_path, "optimizer=adam", "momentum=0.5", *FAST, data=list_dataset)
    warnings = [line for line in (result.stdout + result.stderr).splitlines() if "momentum" in line]
    assert (
        len(warnings) == 1
        and "momentum=0.5 is ignored: optimizer adam has no momentum" in warnings[0]
    )


def test_divergence_stops_and_is_recorded(list_dataset, tmp_path, cache_dir) -> None:
    result = run_cli(
        "train",
        *list_data(list_dataset),
        "lr=1e9",
        "epochs=3",
        "val_interval=1",
        "pictures=false",
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: training diverged (non-finite loss at epoch 1, step ")
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and metrics["diverged_epoch"] == 1
    for checkpoint in run_dir.rglob("*.ckpt"):  # never non-finite weights
        state = torch.load(checkpoint, weights_only=True)["state_dict"]
        assert all(torch.isfinite(value).all() for value in state.values())


def test_multirun_goes_on_after_a_divergence(sweep_here) -> None:
    sweep = sweep_here("lr=1e9,1e-3", *FAST).folder
    statuses = sorted(json.loads(p.read_text())["status"] for p in sweep.glob("*/metrics.json"))
    assert statuses == ["diverged", "finished"]


def run_metrics(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {key: metrics[key] for key in ("val_acc", "best_val_acc", "test_acc", "train_loss")}


def test_killed_run_resumes_to_the_same_result(list_dataset, tmp_path, cache_dir) -> None:
    arguments = [
        *list_data(list_dataset),
        "epochs=120",
        "val_interval=7",
        "steps_per_call=1",
        "pictures=false",
        "trainer.enable_progress_bar=false",
    ]
    whole_run = run_training(tmp_path / "whole", *arguments).folder

    killed = tmp_path / "killed"
    killed.mkdir()
    process = subprocess.Popen(
        cli_command("train", *arguments),
        cwd=killed,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=cli_environment(),
    )
    deadline = time.monotonic() + 120
    while not list(killed.glob("outputs/runs/*/checkpoints/last.ckpt")):
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    time.sleep(0.5)
    assert process.poll() is None, "the run finished before it could be killed; make it longer"
    process.send_signal(signal.SIGKILL)
    process.wait()
    (run_dir,) = (killed / "outputs" / "runs").iterdir()
    assert not (run_dir / "metrics.json").exists()
    run_cli("train", f"resume={run_dir}", cwd=killed)
    assert [p.name for p in (killed / "outputs" / "runs").iterdir()] == [run_dir.name]
    assert run_metrics(run_dir) == run_metrics(whole_run)
    assert json.loads((run_dir / "metrics.json").read_text())["epochs_completed"] == 120


def test_resume_refuses_other_changes(tmp_path: Path) -> None:
    result = run_cli("train", "resume=outputs/runs/x", "lr=0.1", cwd=tmp_path, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: resume=outputs/runs/x: a resumed run keeps its configuration; only epochs= may "
        "change (got lr=0.1)"
    )


def test_same_config_same_numbers(list_dataset, tmp_path, cache_dir) -> None:
    settings = ["epochs=3", "pictures=false", "seed=5"]
    first, second = (
        run_training(tmp_path / attempt, *settings, data=list_dataset).folder
        for attempt in ("first", "second")
    )
    assert run_metrics(first) == run_metrics(second)


def damaged_checkpoints(tmp_path: Path, good: Path) -> dict[str, tuple[Path, str]]:
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:2000])
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(os.urandom(3000))
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"model": {"w": torch.zeros(3)}}, foreign)
    alien = tmp_path / "alien.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(3)}, "hyper_parameters": {"norm_size": 32}}, alien)
    return {
        "truncated": (truncated, "not a readable checkpoint (PytorchStreamReader failed"),
        "garbage": (
            garbage,
            "not a readable checkpoint (not a torch checkpoint, or a damaged one)",
        ),
        "foreign": (foreign, "not a letters checkpoint (no state_dict/hyper_parameters)"),
        "other model": (alien, "not a letters checkpoint"),
        "missing": (tmp_path / "nope.ckpt", "checkpoint not found"),
    }


def test_damaged_checkpoints_are_one_line(fast_run, list_dataset, tmp_path, cache_dir) -> None:
    from concurrent.futures import ThreadPoolExecutor

    good = fast_run / "checkpoints" / "best.ckpt"
    image = first_image(list_dataset)
    cases = [
        (name, path, message, command)
        for name, (path, message) in damaged_checkpoints(tmp_path, good).items()
        for command in (["test", f"ckpt={path}"], ["predict", f"ckpt={path}", f"images=[{image}]"])
    ]
    # Ten commands that spend their seconds importing on one core each: two at a time.
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda case: run_cli(*case[3], cwd=tmp_path, check=False), cases))
    for (name, path, message, command), result in zip(cases, results, strict=True):
        assert result.returncode == 1, (name, command[0])
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {path}: {message}"), (
            name,
            command[0],
            lines,
        )


def test_an_unreadable_checkpoint_says_why_in_words_of_its_own(tmp_path: Path) -> None:
    """torch.load's own first line advises loading with weights_only=False (what would run
    the file's code) or is a paragraph with terminal escapes, and its unpickler warns about a
    foreign pickle: the user gets one plain reason instead, and no warning."""
    import pickle
    import warnings

    from letters.common.errors import LettersError
    from letters.engine.checkpoint import read_checkpoint

    holding = tmp_path / "holding.ckpt"
    torch.save({"state_dict": RunsCode(tmp_path / "ran"), "hyper_parameters": {}}, holding)
    plain_pickle = tmp_path / "plain.pkl"
    plain_pickle.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    text = tmp_path / "text.ckpt"
    text.write_text("hello")
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    cases = {
        holding: f"{holding}: not a readable checkpoint (it holds a Python object, ",
        plain_pickle: f"{plain_pickle}: not a readable checkpoint (not a torch checkpoint, or a "
        "damaged one)",
        text: f"{text}: not a readable checkpoint (not a torch checkpoint, or a damaged one)",
        empty: f"{empty}: not a readable checkpoint (it ends too soon: empty or cut short)",
    }
    for path, message in cases.items():
        with warnings.catch_warnings(record=True) as caught, pytest.raises(LettersError) as error:
            warnings.simplefilter("always")
            read_checkpoint(path)
        said = str(error.value)
        assert said.startswith(message), said
        assert "weights_only" not in said and "\x1b" not in said and "\n" not in said, said
        assert not caught, [str(warning.message) for warning in caught]
    assert not (tmp_path / "ran").exists()


def test_a_failed_write_leaves_the_previous_file_and_says_which(tmp_path: Path) -> None:
    """A write that fails half way (a full disk, say) names the file, keeps the old one whole
    and leaves no temporary file behind."""
    import errno

    from letters.common.errors import LettersError
    from letters.common.files import write_atomically

    target = tmp_path / "last.ckpt"
    write_atomically(target, lambda handle: handle.write(b"previous"))

    def full_disk(handle) -> None:
        handle.write(b"half of it")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(LettersError) as caught:
        write_atomically(target, full_disk)
    assert str(caught.value).startswith(f"{target}: could not be written (No space left")
    assert "the previous file is unchanged" in str(caught.value)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_file_size_limit_while_checkpointing_is_one_line(
    list_dataset: Path, tmp_path: Path, cache_dir: Path
) -> None:
    """ulimit -f below a checkpoint's size: the run ends with one line naming the checkpoint,
    exit status 1, no traceback and no half-written file."""
    import resource

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))

    data = [*list_data(list_dataset), "epochs=1", "pictures=false"]
    first = tmp_path / "first"
    # Decodes the data into the cache, without a limit.
    previous = run_training(first, *data).folder
    result = run_cli(
        "train",
        *data,
        "hidden_sizes=[64]",
        cwd=tmp_path,
        check=False,
        before_exec=limit_file_size,
    )
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: ") and ".ckpt: could not be written" in line
    assert "/checkpoints/" in line  # best.ckpt, the first checkpoint of the run
    assert "Traceback" not in result.stderr
    (run,) = (tmp_path / "outputs" / "runs").iterdir()
    assert not any(p.name.startswith(".") for p in (run / "checkpoints").iterdir())

    # Continuing a run under the same limit: its previous checkpoints stay whole.
    before = (previous / "checkpoints" / "last.ckpt").read_bytes()
    result = run_cli(
        "train",
        f"resume={previous}",
        "epochs=3",
        cwd=first,
        check=False,
        before_exec=limit_file_size,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert line.startswith(f"error: {previous}/checkpoints/") and "unchanged" in line, line
    assert (previous / "checkpoints" / "last.ckpt").read_bytes() == before
    assert not any(p.name.startswith(".") for p in (previous / "checkpoints").iterdir())


@pytest.mark.parametrize("blocked", ["pictures", "tensorboard"])
def test_a_folder_that_cannot_be_made_is_one_line(
    list_dataset: Path, tmp_path: Path, cache_dir: Path, blocked: str
) -> None:
    """A run whose pictures/ or tensorboard/ cannot be made (a file is in the way): one line
    naming it and exit status 1. Pictures come last, so the run is still tested and recorded;
    TensorBoard's folder is made before training, so no time is lost."""
    run = tmp_path / "outputs" / "fixed"
    run.mkdir(parents=True)
    (run / blocked).write_text("in the way")
    data = [*list_data(list_dataset), "epochs=1", "batch_size=16"]
    result = run_cli("train", *data, "hydra.run.dir=outputs/fixed", cwd=tmp_path, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: ") and f"{run / blocked}" in line, line
    if blocked == "pictures":
        assert "cannot be written (File exists" in line
        record = json.loads((run / "metrics.json").read_text())
        assert record["status"] == "finished" and record["test_acc"] is not None
        assert record["pictures_error"] in line
    else:
        assert not (run / "checkpoints").exists()


class RunsCode:
    """Unpickling this runs a command: what a malicious checkpoint would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoints_and_configs_handed_over_cannot_run_code(
    fast_run: Path, tmp_path: Path, cache_dir: Path
) -> None:
    """A checkpoint carrying pickled code, or naming another class to instantiate, and a run
    whose config.yaml does, are refused in one line naming the file; nothing runs."""
    run = fast_run
    good = run / "checkpoints" / "best.ckpt"
    marker = tmp_path / "code-ran"

    pickled = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": RunsCode(marker), "hyper_parameters": {}}, pickled)
    exec_target = {"_target_": "builtins.exec", "_args_": [f"open({str(marker)!r}, 'w')"]}
    instantiating = tmp_path / "instantiating.ckpt"
    checkpoint = torch.load(good, weights_only=True)
    checkpoint["hyper_parameters"]["data"] = exec_target
    torch.save(checkpoint, instantiating)
    cases = [
        (
            ["test", f"ckpt={pickled}"],
            f"error: {pickled}: not a readable checkpoint (it holds a Python object, ",
        ),
        (
            ["test", f"ckpt={instantiating}"],
            f"error: {instantiating}: hyper_parameters.data._target_='builtins.exec' is not "
            "a class letters' configs use",
        ),
    ]
    # A run to resume whose last.ckpt carries code, and one whose config.yaml names exec.
    for name, breakage in (("ckpt", "pickled"), ("config", "target")):
        other = tmp_path / "outputs" / name
        shutil.copytree(run, other)
        if breakage == "pickled":
            shutil.copy(pickled, other / "checkpoints" / "last.ckpt")
            message = (
                f"error: {other}/checkpoints/last.ckpt: not a readable checkpoint (it holds a "
                "Python object, "
            )
        else:
            text = (other / "config.yaml").read_text()
            target = "_target_: pytorch_lightning.loggers.TensorBoardLogger"
            assert target in text
            (other / "config.yaml").write_text(text.replace(target, "_target_: builtins.exec"))
            message = f"error: {other}/config.yaml: logger.tensorboard._target_='builtins.exec' is"
        cases.append((["train", f"resume={other}", "epochs=2"], message))
    for command, message in cases:
        result = run_cli(*command, cwd=tmp_path, check=False)
        assert result.returncode == 1, (command, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(message), (command, lines)
        assert not marker.exists(), command
