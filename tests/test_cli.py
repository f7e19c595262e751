"""The ``zeromamba`` command: every subcommand's --help, info, train on a tiny config, eval, bench
location, and the error for a corrupt checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from zeromamba import cli

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("command", ["train", "eval", "report", "bench", "info"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert f"zeromamba {command}" in text


def test_top_level_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    for command in ("train", "eval", "report", "bench", "info"):
        assert command in text


def test_info(capsys):
    assert cli.main(["info"]) == 0
    text = capsys.readouterr().out
    assert "zeromamba 0.1.0" in text and "torch " in text and "reference" in text
    assert cli.main(["info", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert set(d["backends"]) >= {"reference", "cpu", "triton", "cuda"}
    for b in d["backends"].values():  # each backend: devices, or why it has none
        assert b["devices"] or b["reason"]
    assert "cuda" in d["build"]


def test_bench_locates_the_script_or_says_why(monkeypatch, tmp_path, capsys):
    script = ROOT / "bench" / "bench_ops.py"
    if script.is_file():
        assert cli.bench_script() == script
    monkeypatch.setattr(cli, "__file__", str(tmp_path / "zeromamba" / "cli.py"))
    assert cli.main(["bench", "--", "--quick"]) == 2
    assert "needs the source tree" in capsys.readouterr().err


def test_train_and_eval_commands(tmp_path, capsys):
    from test_training import write_folder_dataset

    data = write_folder_dataset(tmp_path / "data")
    out = tmp_path / "run"
    code = cli.main(
        [
            "train",
            "--data",
            str(data),
            "--model",
            "nano",
            "--image-size",
            "32",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--lr-backbone",
            "0.05",
            "--lr-grl",
            "0.05",
            "--lr-mlp",
            "0.005",
            "--threads",
            "1",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    res = json.loads((out / "results.json").read_text())
    for key in ("czsl", "S", "U", "H", "ausuc", "n_unseen", "seconds"):
        assert isinstance(res[key], (int, float)), key
    printed = capsys.readouterr().out
    assert "CZSL" in printed and "AUSUC" in printed  # the table
    from zeromamba.report import missing_files

    assert missing_files(out / "report.html") == []  # the report, with every picture
    ev_json = tmp_path / "eval.json"
    code = cli.main(
        ["eval", "--checkpoint", str(out / "best_h.pt"), "--no-progress", "--json", str(ev_json)]
    )
    assert code == 0
    ev = json.loads(ev_json.read_text())
    assert ev["H"] == pytest.approx(res["H"], abs=1e-6)
    assert f"H {res['H']:.2f}" in capsys.readouterr().out


def test_corrupt_checkpoint_is_named_in_the_error(tmp_path, capsys):
    bad = tmp_path / "best_h.pt"
    bad.write_bytes(b"\x80\x02garbage")
    assert cli.main(["eval", "--checkpoint", str(bad), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "corrupt" in err


def test_console_script_entry_point():
    done = subprocess.run(
        [sys.executable, "-m", "zeromamba.cli", "train", "--resume"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "--resume needs --out" in done.stderr


@pytest.mark.parametrize(
    ("flags", "want"), [([], None), (["--progress"], True), (["--no-progress"], False)]
)
def test_progress_flags(flags, want):
    """Neither flag: bars only on a terminal; pytest captures stdout, so none here."""
    from zeromamba.training.trainer import show_progress

    for command in (["train"], ["eval", "--checkpoint", "x.pt"]):
        a = cli.parser().parse_args(command + flags)
        assert a.progress is want
    assert show_progress(want) is (want is True)
