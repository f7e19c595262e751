"""Hostile options, checkpoints and run folders: every bad value is refused before training with
a one-line message naming the option (or file and key), the bad value and what was expected;
the CLI exits non-zero without a traceback (``--debug`` shows it)."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_training import tiny_config, write_folder_dataset

from zeromamba import cli
from zeromamba.training import CheckpointError, evaluate_checkpoint, train
from zeromamba.training.checkpoint import make_checkpoint, save_atomic, write_text_atomic
from zeromamba.training.config_checks import ConfigError, check_config, read_config_file
from zeromamba.training.runlock import RunFolderBusyError, RunLock
from zeromamba.training.trainer import build_model, load_data

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_folder_dataset(tmp_path_factory.mktemp("hostile") / "tiny", per_seen=3)


def _cli(args, capsys) -> tuple[int, str]:
    code = cli.main(args)
    err = capsys.readouterr().err.strip()
    return code, err


# ----------------------------------------------------------------------------- options (7, 10, 11)

BAD_OPTIONS = [
    (["--epochs", "0"], r"--epochs must be an integer in \[1, 1000000\], got 0"),
    (["--epochs", "-2"], r"--epochs must be an integer in \[1, 1000000\], got -2"),
    (["--select", "test", "--gamma", "0.3", "--epochs", "0"], "--epochs must be an integer in"),
    (["--gamma", "nan"], r"--gamma must be a number in \[-1, 1\], got nan"),
    (["--gamma", "inf"], r"--gamma must be a number in \[-1, 1\], got inf"),
    (["--threads", "-1"], r"--threads must be an integer in \[1, 1000000\], got -1"),
    (["--threads", "0"], r"--threads must be an integer in \[1, 1000000\], got 0"),
    (["--drop-path", "2"], r"--drop-path must be a number in \[0, 1\), got 2.0"),
    (["--lr-backbone", "nan"], "--lr-backbone must be a number >= 0, got nan"),
    (["--lr-backbone", "-1"], "--lr-backbone must be a number >= 0, got -1.0"),
    (["--lr-factor", "nan"], "--lr-factor must be a number > 0, got nan"),
    (["--image-size", "0"], r"--image-size must be an integer in \[32, 1000000\], got 0"),
    (["--holdout-fraction", "1.5"], r"--holdout-fraction must be a number in \(0, 1\), got 1.5"),
    (["--eval-batch-size", "0"], r"--eval-batch-size must be an integer in \[1, 1000000\], got 0"),
    (["--batch-size", "0"], r"--batch-size must be an integer in \[1, 1000000\], got 0"),
    (["--workers", "-1"], r"--workers must be an integer in \[0, 1024\], got -1"),
    (["--momentum", "1.5"], r"--momentum must be a number in \[0, 1\), got 1.5"),
    (["--grayscale", "1.5"], r"--grayscale must be a number in \[0, 1\], got 1.5"),
    (["--weight-decay", "-1"], "--weight-decay must be a number >= 0, got -1.0"),
    (["--milestones", "0,3"], r"--milestones \(each epoch\) must be an integer >= 1, got 0"),
    (["--model", "huge"], "--model must be one of"),
    (["--seed", "-1"], "--seed must be an integer"),
    (["--backend", "nonsense"], "--backend must be one of"),
]


@pytest.mark.parametrize("args, message", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_options_are_refused_before_anything_runs(tmp_path, capsys, data, args, message):
    out = tmp_path / "run"
    code, err = _cli(["train", "--data", str(data), "--out", str(out), *args], capsys)
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("zeromamba train: error: ")
    assert re.search(message, err), err
    assert not out.exists()  # refused before the run folder was touched


def test_device_and_backend_that_cannot_run_are_refused(tmp_path, capsys, data, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, err = _cli(["train", "--data", str(data), "--device", "cuda"], capsys)
    assert code == 2 and "--device cuda: no CUDA device is visible" in err
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    code, err = _cli(["train", "--data", str(data), "--backend", "triton"], capsys)
    assert code == 2 and "--backend triton cannot run on cpu here" in err


def test_check_config_names_file_and_key():
    cfg = tiny_config(Path("d"), epochs="5")
    with pytest.raises(ConfigError, match=r"run/config.json: key 'epochs' must be an integer"):
        check_config(cfg, "run/config.json")


# ----------------------------------------------------------------------------- config.json (10, 12)


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"data": "builtin", "epochs": ', r"config.json:1:\d+: not valid JSON"),
        ('["not", "an", "object"]', "expected a JSON object"),
        ('{"data": "builtin", "epochs": "ten"}', "key 'epochs' must be an integer"),
        ('{"data": "builtin", "lr_grl": "fast"}', "key 'lr_grl' must be a number"),
        ('{"data": "builtin", "milestones": 3}', "key 'milestones' must be a list"),
        ('{"data": 7}', "key 'data' must be a non-empty string"),
        ('{"data": "builtin", "amp": "yes"}', "key 'amp' must be true or false"),
    ],
    ids=["corrupt", "not-object", "epochs-str", "lr-str", "milestones-int", "data-int", "amp"],
)
def test_a_bad_config_json_is_named_on_resume(tmp_path, capsys, text, message):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(text)
    code, err = _cli(["train", "--out", str(out), "--resume"], capsys)
    assert code == 2 and "Traceback" not in err
    assert str(out / "config.json") in err
    assert re.search(message, err), err


def test_resume_with_changed_options_is_refused(tmp_path, capsys, data):
    out = tmp_path / "run"
    out.mkdir()
    write_text_atomic(json.dumps(tiny_config(data).resolved().to_dict()), out / "config.json")
    code, err = _cli(
        ["train", "--data", str(data), "--out", str(out), "--resume", "--epochs", "7"], capsys
    )
    assert code == 2 and "--epochs 7 (stored: 2)" in err
    # the options of the run itself, or ones that only change speed, are fine: it gets as far
    # as the missing checkpoints (no run to continue: a fresh start under the stored config)
    assert read_config_file(out / "config.json").epochs == 2


# ----------------------------------------------------------------------------- run folder (8, 15)


def test_a_second_run_into_the_same_folder_is_refused(tmp_path, data):
    out = tmp_path / "run"
    busy = pytest.raises(RunFolderBusyError, match=f"{out} is in use by .*pid {os.getpid()}")
    with RunLock(out), busy:
        train(tiny_config(data), out)
    assert not (out / "config.json").exists()


def test_a_lock_left_by_a_killed_process_is_not_a_lock(tmp_path):
    out = tmp_path / "run"
    code = (
        f"import sys, time; sys.path.insert(0, {str(ROOT)!r})\n"
        "from zeromamba.training.runlock import RunLock\n"
        f"RunLock({str(out)!r}).acquire(); print('locked', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderBusyError):
            RunLock(out).acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (out / ".lock").exists()  # the file stays, the lock does not
    lock = RunLock(out)
    lock.acquire()
    lock.release()


def test_atomic_files_respect_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        p = save_atomic({"a": 1}, tmp_path / "x.pt")
        q = write_text_atomic("{}", tmp_path / "y.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o640
    assert stat.S_IMODE(q.stat().st_mode) == 0o640


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_out_is_named(tmp_path, capsys, data):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        code, err = _cli(["train", "--data", str(data), "--out", str(out / "run")], capsys)
    finally:
        out.chmod(0o700)
    assert code == 2 and str(out / "run") in err and "Permission denied" in err


def test_write_errors_name_the_file(tmp_path, monkeypatch):
    def full_disk(obj, f):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match=r"cannot write .*last.pt: No space left on device"):
        save_atomic({}, tmp_path / "last.pt")
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- protocol (12)


def test_a_one_image_train_class_is_refused_before_training(tmp_path, capsys):
    d = write_folder_dataset(tmp_path / "d", per_seen=3)
    lines = (d / "train.txt").read_text().split()
    kept = [x for x in lines if not x.startswith("c0/")] + ["c0/000.png"]
    (d / "train.txt").write_text("\n".join(kept) + "\n")
    tv = (d / "trainval.txt").read_text().split()
    (d / "trainval.txt").write_text("\n".join(x for x in tv if x in kept or "c3/" in x) + "\n")
    code, err = _cli(["train", "--data", str(d), "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and "class(es) ['c0'] of split 'train' have a single image" in err


# ----------------------------------------------------------------------------- checkpoints (7, 10)


@pytest.fixture(scope="module")
def our_checkpoint(tmp_path_factory, data) -> tuple[Path, dict]:
    cfg = tiny_config(data).resolved()
    net = build_model(cfg, load_data(cfg))
    blob = make_checkpoint(
        config=cfg.to_dict(),
        stage="final",
        epoch=1,
        model=net.state_dict(),
        metrics={"gamma": 0.1},
    )
    path = tmp_path_factory.mktemp("ck") / "best_h.pt"
    save_atomic(blob, path)
    return path, blob


def _variant(tmp_path, blob, **changes) -> Path:
    path = tmp_path / "variant.pt"
    save_atomic({**blob, **changes}, path)
    return path


def test_checkpoint_gamma_nan_is_refused(tmp_path, our_checkpoint):
    _, blob = our_checkpoint
    path = _variant(tmp_path, blob, metrics={"gamma": float("nan")})
    with pytest.raises(ValueError, match=rf"the gamma of {path} must be a number in \[-1, 1\]"):
        evaluate_checkpoint(path, progress=False)
    with pytest.raises(ValueError, match="--gamma must be a number"):
        evaluate_checkpoint(our_checkpoint[0], gamma=float("nan"), progress=False)


def test_checkpoint_with_nan_weights_is_refused(tmp_path, our_checkpoint):
    _, blob = our_checkpoint
    state = dict(blob["model"])
    key = next(iter(state))
    state[key] = state[key].clone().fill_(float("nan"))
    path = _variant(tmp_path, blob, model=state)
    with pytest.raises(CheckpointError, match=f"{path}: weight '{key}' holds NaN or Inf"):
        evaluate_checkpoint(path, progress=False)


def test_checkpoint_without_weights_or_of_another_model(tmp_path, our_checkpoint, capsys):
    _, blob = our_checkpoint
    no_model = {k: v for k, v in blob.items() if k != "model"}
    path = tmp_path / "nomodel.pt"
    save_atomic(no_model, path)
    code, err = _cli(["eval", "--checkpoint", str(path), "--no-progress"], capsys)
    assert code == 2 and f"{path}: the checkpoint's 'model' entry is missing" in err
    other = _variant(tmp_path, blob, config={**blob["config"], "model": "tiny"})
    with pytest.raises(CheckpointError, match=f"{other} does not fit this model"):
        evaluate_checkpoint(other, progress=False)
    future = _variant(tmp_path, blob, version=99)
    with pytest.raises(CheckpointError, match="checkpoint version 99 is not 1"):
        evaluate_checkpoint(future, progress=False)
    weird = _variant(tmp_path, blob, version="1")
    with pytest.raises(CheckpointError, match="checkpoint version '1' is not 1"):
        evaluate_checkpoint(weird, progress=False)


# ----------------------------------------------------------------------------- the CLI itself


def test_cli_prints_one_line_and_debug_shows_the_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "zeromamba.cli", "train", "--epochs", "0"]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (
        "zeromamba train: error: --epochs must be an integer in [1, 1000000], got 0"
    )
    r = subprocess.run(
        [*cmd, "--debug"], capture_output=True, text=True, env=env, cwd=tmp_path, check=False
    )
    assert r.returncode != 0 and "Traceback" in r.stderr and "ConfigError" in r.stderr
    assert time.time() - t0 < 120


def test_unexpected_errors_are_one_line_too(monkeypatch, capsys):
    def boom(a):
        raise IndexError("list index out of range")

    monkeypatch.setattr(cli, "cmd_info", boom)
    code, err = _cli(["info"], capsys)
    assert code == 1
    assert err == (
        "zeromamba info: internal error (IndexError): list index out of range "
        "(run with --debug for the traceback)"
    )


def test_non_finite_predictions_are_refused_before_the_metrics():
    from zeromamba.training.trainer import EvalSets, zero_shot_metrics

    class _Split:
        labels = torch.tensor([0, 1])

    sets = EvalSets("val", _Split(), _Split(), torch.tensor([0]), torch.tensor([1]))
    pred = torch.tensor([[float("nan"), 1.0], [0.0, 1.0]])
    with pytest.raises(FloatingPointError, match="predictions on the val seen images"):
        zero_shot_metrics(pred, pred.nan_to_num(), sets, torch.eye(2), 0.1)
