"""Trainer: checkpoints (atomic, corrupt), optimiser groups, a short run, exact resume, a run
killed with SIGKILL, a 2-process gloo DDP run, evaluation of our and official checkpoints.

The runs use a tiny folder-format dataset written by the test (6 classes, 32 px PNGs) and the
nano backbone, so each takes seconds on CPU.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from zeromamba import calibration
from zeromamba.models import ZeroMamba, native_to_official
from zeromamba.training import (
    CheckpointError,
    TrainConfig,
    evaluate_checkpoint,
    load_checkpoint,
    save_atomic,
    train,
)
from zeromamba.training import trainer as trainer_mod
from zeromamba.training.checkpoint import load_file, make_checkpoint
from zeromamba.training.optim import build_optimizer, build_scheduler

ROOT = Path(__file__).resolve().parent.parent
# 6 classes x 4 attributes; classes 0-2 train, 3 val, 4-5 unseen
ATT = np.array(
    [[1, 0, 1, 0], [1, 0, 0, 1], [0, 1, 1, 0], [0, 1, 0, 1], [1, 1, 0, 0], [0, 0, 1, 1]],
    dtype=float,
)


def write_folder_dataset(
    root: Path, per_seen: int = 6, per_test: int = 2, per_unseen: int = 3, size: int = 32
) -> Path:
    """A tiny dataset in the folder format: images whose colour and a square encode the
    attributes, plus noise."""
    from PIL import Image

    rng = np.random.default_rng(0)
    names = [f"c{i}" for i in range(len(ATT))]
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(names) + "\n")
    rows = ["class,red,blue,square,stripe"]
    rows += [n + "," + ",".join(str(int(v)) for v in a) for n, a in zip(names, ATT)]
    (root / "attributes.csv").write_text("\n".join(rows) + "\n")
    lists: dict[str, list[str]] = {
        s: [] for s in ("trainval", "test_seen", "test_unseen", "train", "val")
    }
    for c, name in enumerate(names):
        (root / "images" / name).mkdir(parents=True, exist_ok=True)
        for k in range(per_seen + per_test if c < 4 else per_unseen):
            img = (rng.random((size, size, 3)) * 60).astype(np.uint8)
            img[..., 0] += np.uint8(150 * ATT[c, 0])
            img[..., 2] += np.uint8(150 * ATT[c, 1])
            if ATT[c, 2]:
                img[8:24, 8:24, 1] = 200
            if ATT[c, 3]:
                img[::4, :, 1] = 255
            rel = f"{name}/{k:03d}.png"
            Image.fromarray(img).save(root / "images" / rel)
            if c >= 4:
                lists["test_unseen"].append(rel)
            elif k < per_seen:
                lists["trainval"].append(rel)
                lists["train" if c < 3 else "val"].append(rel)
            else:
                lists["test_seen"].append(rel)
    for split, rels in lists.items():
        (root / f"{split}.txt").write_text("\n".join(rels) + "\n")
    return root


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return write_folder_dataset(tmp_path_factory.mktemp("data") / "tiny")


def tiny_config(data: Path, **kw) -> TrainConfig:
    base = {
        "data": str(data),
        "model": "nano",
        "image_size": 32,
        "epochs": 2,
        "batch_size": 8,
        "lr_backbone": 0.05,
        "lr_grl": 0.05,
        "lr_mlp": 0.005,
        "milestones": (1,),
        "seed": 3,
        "device": "cpu",
        "progress": False,
        "eval_batch_size": 16,
        "threads": 1,
    }
    return TrainConfig(**{**base, **kw})


def _state(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k, value in a.items():
        assert torch.equal(value, b[k]), k


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_roundtrip_and_corrupt_files(tmp_path):
    path = tmp_path / "ck.pt"
    save_atomic(make_checkpoint(model={"w": torch.arange(3.0)}, epoch=4), path)
    assert load_checkpoint(path)["epoch"] == 4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    for bad in (truncated, garbage):
        with pytest.raises(CheckpointError, match=bad.name):
            load_checkpoint(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a zeromamba training checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_atomic(make_checkpoint(epoch=1), path)

    def dies_midway(obj, f):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        save_atomic(make_checkpoint(epoch=2), path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_optimizer_groups_follow_the_official_recipe():
    model = ZeroMamba("nano", attributes=4, word_vectors=torch.randn(4, 300))
    opt = build_optimizer(model.param_groups(), {"backbone": 1e-3, "grl": 1e-3, "slp_mlp": 1e-4})
    by_name = {g["name"]: g for g in opt.param_groups}
    assert by_name["slp_mlp"]["lr"] == 1e-4 and by_name["grl"]["lr"] == 1e-3
    assert all(g["momentum"] == 0.9 and g["weight_decay"] == 1e-3 for g in opt.param_groups)
    # the SLP's V, W1, W2 train with the backbone, as in the official code
    backbone_ids = {id(p) for p in by_name["backbone"]["params"]}
    assert {id(model.slp.V), id(model.slp.W1), id(model.slp.W2)} <= backbone_ids
    n_all = sum(len(g["params"]) for g in opt.param_groups)
    assert n_all == len(list(model.parameters()))
    sched = build_scheduler(opt, [10, 20, 30, 40], 0.5)
    lrs = []
    for _ in range(45):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[9] == 1e-3 and lrs[10] == 5e-4 and lrs[44] == pytest.approx(1e-3 / 16)
    with pytest.raises(ValueError, match="no learning rate"):
        build_optimizer(model.param_groups(), {"backbone": 1.0})
    with pytest.raises(ValueError, match="also in an earlier group"):
        build_optimizer({"a": [model.slp.V], "b": [model.slp.V]}, {"a": 1.0, "b": 1.0})


def test_holdout_split_is_per_class_and_disjoint():
    labels = torch.tensor([0] * 10 + [1] * 5 + [2])
    kept, held = trainer_mod.holdout_split(labels, 0.2, seed=0)
    assert set(kept.tolist()).isdisjoint(held.tolist())
    assert sorted(kept.tolist() + held.tolist()) == list(range(16))
    assert torch.bincount(labels[held], minlength=3).tolist() == [2, 1, 0]


def test_dataset_recipes():
    for name, gamma, l1 in (("CUB", 0.3, 1.0), ("SUN", 0.35, 0.2), ("AWA2", 0.98, 0.0)):
        cfg = TrainConfig(data=name, select="test").resolved()
        assert (cfg.gamma, cfg.lambda_l1, cfg.lr_backbone, cfg.lr_grl, cfg.lr_mlp) == (
            gamma,
            l1,
            1e-3,
            1e-3,
            1e-4,
        )
        assert cfg.milestones == (10, 20, 30, 40) and cfg.image_size == 448
        assert TrainConfig(data=name).resolved().gamma is None  # chosen on validation


# ----------------------------------------------------------------------------- training runs
def test_short_run_writes_results_logs_plots_and_checkpoints(tiny_data, tmp_path):
    out = tmp_path / "run"
    res = train(tiny_config(tiny_data), out, say=lambda _m: None)
    on_disk = json.loads((out / "results.json").read_text())
    for key in ("czsl", "S", "U", "H", "ausuc", "n_unseen", "seconds"):
        assert key in on_disk
    assert on_disk["n_unseen"] == 2 and on_disk["select"] == "val"
    # CPU time of the training and of the baseline, each positive and at most the wall time
    # times the cores
    for key in ("cpu_seconds", "baseline_cpu_seconds"):
        assert 0 < on_disk[key] <= on_disk["seconds"] * (os.cpu_count() or 1) + 1
    # the ESZSL baseline block (read by the report page) and the calibration rule
    assert set(on_disk["baseline"]) == {"eszsl_pixels", "eszsl_features"}
    for b in on_disk["baseline"].values():
        assert set(b) == {"czsl", "S", "U", "H", "ausuc", "gamma", "hyper"}
        assert 0 <= b["czsl"] <= 100 and 0 <= b["H"] <= 100
    cal = on_disk["calibration"]
    assert cal["rule"] == "median_scaled"
    # the reported gamma is the validation gamma scaled by the two medians (calibration.py)
    assert on_disk["gamma"] == pytest.approx(
        calibration.transfer_gamma(cal["val_gamma"], cal["val_typical"], cal["final_typical"])
    )
    assert res["czsl"] == on_disk["czsl"] and 0 <= res["H"] <= 100
    for f in (
        "curves.png",
        "seen_unseen.png",
        "last.pt",
        "best_czsl.pt",
        "best_h.pt",
        "select/last.pt",
        "select/best_h.pt",
        "config.json",
    ):
        assert (out / f).is_file(), f
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["epoch"]) for r in log][:2] == [("select", 1), ("select", 2)]
    assert all("val" in r["eval"] for r in log if r["stage"] == "select")
    # the test set is evaluated only at the epochs chosen on validation
    test_epochs = [r["epoch"] for r in log if r["stage"] == "final" and "test" in r["eval"]]
    assert set(test_epochs) == set(res["epochs"].values())
    # a second run into the same folder is refused unless resumed
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny_config(tiny_data), out, say=lambda _m: None)
    # evaluating the best-H checkpoint reproduces the reported GZSL numbers
    ev = evaluate_checkpoint(out / "best_h.pt", progress=False, baseline=True)
    assert ev["checkpoint_kind"] == "zeromamba" and ev["gamma"] == pytest.approx(res["gamma"])
    for k in ("S", "U", "H", "ausuc"):
        assert ev[k] == pytest.approx(res[k], abs=1e-6)
    # the pixel baseline does not depend on the model: eval reproduces the run's
    pixels = res["baseline"]["eszsl_pixels"]
    for k in ("czsl", "H", "gamma"):
        assert ev["baseline"]["eszsl_pixels"][k] == pytest.approx(pixels[k])


@pytest.mark.parametrize("select, die_at", [("test", ("final", 2)), ("val", ("select", 2))])
def test_resume_after_interruption_gives_the_same_weights(
    tiny_data, tmp_path, monkeypatch, select, die_at
):
    cfg = tiny_config(tiny_data, select=select, gamma=0.2 if select == "test" else None, epochs=3)
    ref = tmp_path / "ref"
    train(cfg, ref, say=lambda _m: None)

    # interrupt right after an epoch's checkpoint is written (its log line comes next)
    real_append = trainer_mod.MetricsLog.append

    def append_then_die(self, record):
        real_append(self, record)
        if (record["stage"], record["epoch"]) == die_at:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod.MetricsLog, "append", append_then_die)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run, say=lambda _m: None)
    monkeypatch.undo()
    folder = run / "select" if die_at[0] == "select" else run
    assert load_checkpoint(folder / "last.pt")["epoch"] == die_at[1]
    res = train(cfg, run, resume=True, say=lambda _m: None)
    _assert_same_weights(_state(ref / "last.pt"), _state(run / "last.pt"))
    ref_res = json.loads((ref / "results.json").read_text())
    for k in ("czsl", "S", "U", "H", "ausuc", "gamma", "epochs"):
        assert res[k] == ref_res[k]
    log = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    ref_log = [json.loads(x) for x in (ref / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["epoch"], r["loss"]) for r in log] == [
        (r["stage"], r["epoch"], r["loss"]) for r in ref_log
    ]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "zeromamba.cli", *args]


def _train_args(data: Path, out: Path, *extra: str) -> list[str]:
    """`zeromamba train` arguments of a tiny CPU run (nano model, 32 px, batch 8), plus
    ``extra``."""
    tiny = (
        "--model nano --image-size 32 --batch-size 8 --select test --gamma 0.2 "
        "--no-progress --device cpu"
    )
    return ["train", "--data", str(data), *tiny.split(), *extra, "--out", str(out)]


def test_sigkill_then_resume_completes_without_losing_a_checkpoint(tiny_data, tmp_path):
    out = tmp_path / "run"
    args = _train_args(tiny_data, out, "--epochs", "6", "--milestones", "4", "--threads", "1")
    proc = subprocess.Popen(
        _cli(*args), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.time() + 240
        while not (out / "last.pt").exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline, "no checkpoint within 240 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert not (out / "results.json").exists(), "the run finished before it was killed"
    killed_at = load_checkpoint(out / "last.pt")["epoch"]  # complete and readable
    assert 1 <= killed_at < 6
    done = subprocess.run(
        _cli(*args, "--resume"), check=False, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert f"resumed from {out / 'last.pt'} at epoch {killed_at}" in done.stdout
    assert load_checkpoint(out / "last.pt")["epoch"] == 6
    res = json.loads((out / "results.json").read_text())
    assert load_checkpoint(out / "best_h.pt")["epoch"] == res["epochs"]["H"]
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]


def test_ddp_two_processes_gloo(tiny_data, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "zeromamba.cli",
        *_train_args(tiny_data, out, "--epochs", "1"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert res["world_size"] == 2 and res["n_unseen"] == 2
    # metrics come from predictions gathered over both ranks: they match a 1-process
    # evaluation of the saved weights
    ev = evaluate_checkpoint(out / "best_h.pt", progress=False)
    for k in ("S", "U", "H"):
        assert ev[k] == pytest.approx(res[k], abs=1e-6)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1  # rank 0 writes alone


def test_eval_reads_official_checkpoints(tiny_data, tmp_path):
    data = str(tiny_data)
    model = ZeroMamba("nano", attributes=4, word_vectors=torch.randn(4, 300))
    ours = tmp_path / "ours.pt"
    cfg = tiny_config(tiny_data, select="test", gamma=0.3).resolved()
    save_atomic(
        make_checkpoint(config=cfg.to_dict(), model=model.state_dict(), stage="final", epoch=0),
        ours,
    )
    official = tmp_path / "CUB_bestGZSL.pth"
    torch.save(native_to_official(model.state_dict()), official)
    a = evaluate_checkpoint(ours, progress=False)
    b = evaluate_checkpoint(
        official, data=data, model="nano", gamma=0.3, image_size=32, progress=False
    )
    assert b["checkpoint_kind"] == "official"
    for k in ("czsl", "S", "U", "H", "ausuc"):
        assert a[k] == pytest.approx(b[k], abs=1e-6)
    with pytest.raises(ValueError, match="--data"):
        evaluate_checkpoint(official)
    foreign = tmp_path / "foreign.pth"
    torch.save({"layer.weight": torch.zeros(1)}, foreign)
    with pytest.raises(CheckpointError, match="neither"):
        evaluate_checkpoint(foreign, data=data)
    assert isinstance(load_file(official), dict)
