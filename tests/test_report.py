"""The report: attention weights taken from the SLP (equal to its softmax, summing to 1), example
choice, per-class numbers consistent with S and U, the embedding map, the metrics table with
and without the in-run baseline, the page's links, and the ``zeromamba report`` command's errors.

Checkpoints are built, not trained: the nano backbone on the tiny folder dataset of
test_training (6 classes, 64 px so the last-stage map has 2x2 regions).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_training import tiny_config, write_folder_dataset

from zeromamba import cli, evaluation
from zeromamba.models import ZeroMamba, native_to_official
from zeromamba.models.zeromamba import SemanticProjection
from zeromamba.report import (
    attribute_attention,
    choose_examples,
    embed_2d,
    metrics_rows,
    missing_files,
    page,
    per_class,
    report_for_checkpoint,
    report_for_run,
)
from zeromamba.training import save_atomic
from zeromamba.training.checkpoint import make_checkpoint
from zeromamba.training.trainer import build_model, load_data


# ----------------------------------------------------------------------------- attention
def test_attention_of_a_known_input_is_the_softmax_of_its_scores():
    # 2 attributes, 2 channels, V = I so q1 = W1; regions (1, 0), (0, 1), (1, 1)/sqrt(2)
    slp = SemanticProjection(2, 2, word_vectors=torch.eye(2, dtype=torch.float64))
    with torch.no_grad():
        slp.W1.copy_(torch.tensor([[2.0, 0.0], [0.0, -1.0]]))
        slp.W2.copy_(torch.tensor([[1.0, 1.0], [0.5, 0.0]]))
    x = torch.tensor([[[1.0, 0.0, 3.0], [0.0, 2.0, 3.0]]]).reshape(1, 2, 1, 3)
    with torch.no_grad():
        out, attn = slp(x, return_attention=True)
    assert attn.shape == (1, 2, 1, 3)
    r = 1 / math.sqrt(2)
    scores = [[2.0, 0.0, 2 * r], [0.0, -1.0, -r]]  # q1[i] . feat[:, r]
    for i, s in enumerate(scores):
        z = sum(math.exp(v) for v in s)
        expected = torch.tensor([math.exp(v) / z for v in s])
        torch.testing.assert_close(attn[0, i, 0], expected)
    # the SLP's output is those weights applied to the q2 scores
    s2 = [[1.0, 1.0, 2 * r], [0.5, 0.0, 0.5 * r]]
    for i in range(2):
        assert float(out[0, i]) == pytest.approx(float((attn[0, i, 0] * torch.tensor(s2[i])).sum()))


@pytest.mark.parametrize("backend", ["reference", None])
def test_attention_weights_are_the_ones_the_fused_slp_applies(backend):
    torch.manual_seed(0)
    slp = SemanticProjection(7, 16, embed_dim=5, backend=backend)
    x = torch.randn(3, 16, 3, 4)
    plain = slp(x)
    out, attn = slp(x, return_attention=True)
    torch.testing.assert_close(out, plain)
    assert attn.shape == (3, 7, 3, 4)
    torch.testing.assert_close(attn.sum(dim=(-2, -1)), torch.ones(3, 7))
    assert bool((attn >= 0).all())
    feat, _, q2 = slp.queries(x)
    s2 = torch.einsum("af,bfr->bar", q2, feat)
    torch.testing.assert_close((attn.flatten(2) * s2).sum(-1), out, rtol=1e-5, atol=1e-6)


def test_model_returns_the_slp_attention_of_its_own_forward():
    torch.manual_seed(0)
    model = ZeroMamba("nano", attributes=5, embed_dim=4).eval()
    images = torch.randn(2, 3, 64, 64)
    pred, attn = attribute_attention(model, images)
    with torch.no_grad():
        torch.testing.assert_close(pred, model(images))
        x_pre, _ = model.backbone(images)
        _, expected = model.slp(x_pre, return_attention=True)
    assert attn.shape == (2, 5, 2, 2)  # 64 px / 32 = 2x2 regions
    torch.testing.assert_close(attn, expected)
    torch.testing.assert_close(attn.sum(dim=(-2, -1)), torch.ones(2, 5))


def test_examples_are_deterministic_and_show_right_and_wrong():
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    predicted = torch.tensor([0, 1, 1, 0, 2, 2, 0, 3])
    chosen = choose_examples(labels, predicted, per_kind=2)
    assert chosen == choose_examples(labels, predicted, per_kind=2)
    right, wrong = chosen[:2], chosen[2:]
    assert all(predicted[i] == labels[i] for i in right)
    assert all(predicted[i] != labels[i] for i in wrong) and len(wrong) == 2
    assert len({int(labels[i]) for i in right}) == 2  # distinct classes first
    only_right = choose_examples(labels, labels, per_kind=2)
    assert len(only_right) == 2  # no wrong ones to show


# ----------------------------------------------------------------------------- numbers
def test_per_class_bars_average_to_s_and_u():
    torch.manual_seed(1)
    seen, unseen = torch.tensor([0, 1, 2]), torch.tensor([3, 4])
    y_s, y_u = torch.tensor([0, 0, 1, 2, 2, 2]), torch.tensor([3, 3, 4, 4, 4])
    s_scores, u_scores = torch.randn(6, 5), torch.randn(5, 5)
    gamma = 0.1
    gz = evaluation.gzsl(s_scores, y_s, u_scores, y_u, seen, unseen, gamma)
    g_s = evaluation.calibrated_predict(s_scores, seen, unseen, gamma)
    g_u = evaluation.calibrated_predict(u_scores, seen, unseen, gamma)
    assert float(per_class.class_accuracy(g_s, y_s, seen).mean()) == pytest.approx(gz["S"])
    assert float(per_class.class_accuracy(g_u, y_u, unseen).mean()) == pytest.approx(gz["U"])
    c_u = unseen[u_scores[:, unseen].argmax(1)]
    cm = per_class.confusion(c_u, y_u, unseen)
    torch.testing.assert_close(cm.sum(1), torch.full((2,), 100.0, dtype=torch.float64))
    torch.testing.assert_close(cm.diagonal(), per_class.class_accuracy(c_u, y_u, unseen))
    assert float(per_class.class_accuracy(c_u, y_u, unseen).mean()) == pytest.approx(
        evaluation.czsl(u_scores, y_u, unseen)
    )


def test_embedding_methods():
    x = torch.randn(30, 6)
    xy, used = embed_2d(x, "pca")
    assert xy.shape == (30, 2) and used == "PCA"
    # PCA keeps the direction of largest spread on the first axis
    line = torch.linspace(-1, 1, 30)[:, None] * torch.tensor([[3.0, 0, 0, 0, 0, 0]])
    xy, _ = embed_2d(line + 0.01 * x, "pca")
    assert abs(xy[:, 0]).max() > 10 * abs(xy[:, 1]).max()
    with pytest.raises(ValueError, match="embedding method"):
        embed_2d(x, "umap")
    pytest.importorskip("sklearn")
    xy, used = embed_2d(x, "auto")
    assert xy.shape == (30, 2) and used == "t-SNE"


# ----------------------------------------------------------------------------- the page
RESULTS = {
    "dataset": "data",
    "select": "val",
    "czsl": 61.5,
    "S": 40.0,
    "U": 50.0,
    "H": 44.44,
    "ausuc": 30.1,
    "gamma": 0.42,
    "epochs": {"czsl": 2, "H": 1},
    "validation": {"czsl": 70.0, "S": 50.0, "U": 60.0, "H": 54.5, "ausuc": 35.0},
}
BASELINE = {
    "eszsl_pixels": {
        "czsl": 33.3,
        "S": 20.0,
        "U": 10.0,
        "H": 13.3,
        "ausuc": 5.0,
        "gamma": 0.2,
        "hyper": {"alpha": 1.0, "beta": 0.01},
    },
    "eszsl_features": {
        "czsl": 45.0,
        "S": 30.0,
        "U": 25.0,
        "H": 27.3,
        "ausuc": 9.0,
        "gamma": 0.3,
        "hyper": {"alpha": 10.0, "beta": 1.0},
    },
}


def test_metrics_table_with_and_without_the_baseline():
    rows = metrics_rows(RESULTS)
    assert [r.name for r in rows] == ["ZeroMamba, test", "ZeroMamba, validation"]
    html = page.render("t", "s", [], rows, [], None)
    assert "ESZSL" not in html and "61.50" in html and "44.44" in html
    rows = metrics_rows({**RESULTS, "baseline": BASELINE})
    names = [r.name for r in rows]
    assert names[2:] == ["ESZSL on pixels (baseline)", "ESZSL on features (baseline)"]
    assert rows[2].values["H"] == 13.3 and rows[3].gamma == 0.3
    assert "alpha 1" in rows[2].note and "beta 0.01" in rows[2].note
    html = page.render("t", "s", [], rows, [], None)
    assert "ESZSL on features (baseline)" in html and "27.30" in html
    # a partial or unknown block renders with dashes, not an error
    rows = metrics_rows({**RESULTS, "baseline": {"other": {"czsl": 1.0}}, "validation": None})
    assert rows[-1].name == "other" and "–" in page.render("t", "s", [], rows, [], None)


def test_page_escapes_run_text():
    fig = page.Figure("report/a.png", "<b>caption</b>")
    html = page.render(
        "<script>x</script>", "s", [("k", "a&b")], [], [page.Section("S", "t<", [fig])], {}
    )
    assert "<script>x" not in html and "&lt;script&gt;" in html and "a&amp;b" in html
    assert page.referenced_files(html) == ["report/a.png", "report/a.png"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny dataset and an untrained model's checkpoint in the run-folder layout."""
    root = tmp_path_factory.mktemp("report")
    data_dir = write_folder_dataset(root / "data", size=64)
    cfg = tiny_config(data_dir, image_size=64).resolved()
    torch.manual_seed(0)
    model = build_model(cfg, load_data(cfg))
    run = root / "run"
    run.mkdir()
    save_atomic(
        make_checkpoint(
            config=cfg.to_dict(),
            stage="final",
            epoch=1,
            model=model.state_dict(),
            metrics={"gamma": 0.5},
        ),
        run / "best_h.pt",
    )
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    history = [
        {"stage": "final", "epoch": e, "loss": 2.0 / e, "lr": [0.1], "eval": {}} for e in (1, 2)
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    return {"data": data_dir, "run": run, "model": model, "root": root}


def _images_of(page_path: Path) -> list[str]:
    return [r for r in page.referenced_files(page_path.read_text()) if r.endswith(".png")]


def _check_run_page(path: Path) -> str:
    assert missing_files(path) == []
    text = path.read_text()
    assert {Path(p).name for p in _images_of(path)} == {
        "curves.png",
        "seen_unseen.png",
        "class_accuracy.png",
        "confusion.png",
        "embedding.png",
        "attention_seen.png",
        "attention_unseen.png",
    }
    # nothing from the network: every reference is a relative file
    assert not [r for r in page.referenced_files(text) if "://" in r or r.startswith("/")]
    assert "2x2 SLP regions" in text
    return text


def test_run_report_with_the_baseline(tiny):
    run = tiny["run"]
    (run / "results.json").write_text(json.dumps({**RESULTS, "baseline": BASELINE}))
    path = report_for_run(run, device="cpu", embedding_method="pca")
    assert path == run / "report.html"
    text = _check_run_page(path)
    assert "ESZSL on pixels" in text and "recorded no baseline" not in text


def test_official_checkpoint_report_on_xlsa17_data(tmp_path):
    """An official-layout checkpoint on a CUB-like xlsa17 fixture (6 classes, 5 attributes)."""
    from test_data import write_xlsa17

    data_root, image_root, _, wv = write_xlsa17(str(tmp_path / "data"))
    torch.manual_seed(0)
    model = ZeroMamba("nano", attributes=5, word_vectors=torch.from_numpy(wv).float())
    official = tmp_path / "official.pth"
    torch.save(native_to_official(model.state_dict()), official)
    path = report_for_checkpoint(
        official,
        device="cpu",
        data="CUB",
        data_root=data_root,
        image_root=image_root,
        image_size=64,
        model="nano",
        embedding_method="pca",
    )
    assert path == tmp_path / "official-report" / "report.html"
    assert missing_files(path) == []
    text = path.read_text()
    assert "official checkpoint" in text and "evaluated for this report" in text
    assert "gamma 0.300" in text  # CUB's official gamma
    assert "curves.png" not in text  # no training history


# ----------------------------------------------------------------------------- the command
def test_report_command_without_a_baseline(tiny, capsys):
    (tiny["run"] / "results.json").write_text(json.dumps(RESULTS))
    assert cli.main(["report", str(tiny["run"]), "--embedding", "pca", "--no-progress"]) == 0
    assert f"wrote {tiny['run'] / 'report.html'}" in capsys.readouterr().out
    text = _check_run_page(tiny["run"] / "report.html")
    assert "ESZSL" not in text and "recorded no baseline" in text


def test_report_command_errors(tiny, tmp_path, capsys):
    def error(*argv: str) -> str:
        assert cli.main(["report", *argv]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.startswith("zeromamba report: error:")
        return err

    missing = tmp_path / "no-such-run"
    assert str(missing) in error(str(missing)) and "not found" in error(str(missing))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "best_h.pt is missing" in error(str(empty))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80\x02garbage")
    err = error("--checkpoint", str(bad))
    assert str(bad) in err and "corrupt" in err
    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(2)}, foreign)
    assert "neither a zeromamba checkpoint nor an official" in error("--checkpoint", str(foreign))
    official = tmp_path / "official.pth"
    torch.save({"VisionMamba.x": torch.zeros(1)}, official)
    assert "pass --data" in error("--checkpoint", str(official))
    assert "a run folder" in error()
    assert "a run folder" in error(str(tiny["run"]), "--checkpoint", str(bad))
    assert "--data: only with --checkpoint" in error(str(tiny["run"]), "--data", "builtin")
    assert not (empty / "report.html").exists()


def test_attention_maps_drawn_for_a_model(tiny, tmp_path):
    """The figure for a few real images: one row per example, the image file written."""
    from zeromamba.report import attention

    model = tiny["model"].eval()
    images = torch.rand(2, 3, 64, 64)
    pred, attn = attribute_attention(model, images)
    ex = [
        attention.AttentionExample(
            images[k], attn[k], pred[k], "a", "b", F.normalize(pred[k], dim=0)
        )
        for k in range(2)
    ]
    out = attention.plot_attention(ex, [f"att{i}" for i in range(4)], tmp_path / "a.png")
    assert out.is_file() and out.stat().st_size > 1000
    assert attention.overlay(images[0], attn[0, 0]).shape == (64, 64, 3)
