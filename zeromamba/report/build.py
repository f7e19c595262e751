"""Building the report of a run folder or of a checkpoint: evaluate the model on the test
splits once, draw every picture into ``report/``, write ``report.html`` beside it."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import evaluation
from ..data import transforms
from ..training import plots
from ..training.checkpoint import write_text_atomic
from ..training.evaluate import LoadedCheckpoint, load_for_eval
from ..training.metrics_log import MetricsLog
from . import attention, embedding, page, per_class

PAGE = "report.html"
FOLDER = "report"  # the pictures, beside the page
RUN_CHECKPOINT = "best_h.pt"  # the model of the run's S, U, H


def _display_transform(size: int) -> transforms.Compose:
    """The model's view of an image without the normalisation: for drawing."""
    return transforms.Compose([transforms.ToFloat(), transforms.Resize(size)])


def _attention_examples(
    loaded: LoadedCheckpoint,
    split: str,
    predicted: Tensor,
    device: torch.device,
    per_kind: int,
) -> tuple[list[attention.AttentionExample], tuple[int, int]]:
    """The chosen images of ``split`` with their attention maps, and the map's (h, w)."""
    data, net = loaded.data, loaded.model
    ds = data.splits[split]
    chosen = attention.choose_examples(ds.labels, predicted, per_kind)
    if not chosen:
        return [], (0, 0)
    model_in = ds.with_transform(transforms.eval_transform(data.image_size))
    shown = ds.with_transform(_display_transform(data.image_size))
    images = torch.stack([model_in[i][0] for i in chosen]).to(device)
    pred, attn = attention.attribute_attention(net, images)
    examples = []
    for k, i in enumerate(chosen):
        y = int(ds.labels[i])
        examples.append(
            attention.AttentionExample(
                image=shown[i][0],
                attention=attn[k].cpu(),
                pred=pred[k].cpu(),
                true_name=data.class_names[y],
                predicted_name=data.class_names[int(predicted[i])],
                class_attributes=data.attributes[y],
            )
        )
    return examples, tuple(attn.shape[-2:])


def build_report(
    loaded: LoadedCheckpoint,
    out_dir: str | os.PathLike,
    *,
    source: str,
    results: dict[str, Any] | None = None,
    history: list[dict[str, Any]] | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 128,
    embedding_method: str = "auto",
    examples_per_kind: int = 2,
    progress: bool = False,
) -> Path:
    """Evaluate ``loaded`` on its test splits and write ``out_dir/report.html`` with its
    pictures in ``out_dir/report/``. Returns the page's path.

    source: what the model is (shown under the title); results: the run's ``results.json``
    (its metrics table; None: the table shows this evaluation); history: the run's per-epoch
    records (training curves; None: no curves).
    """
    from ..training import distributed
    from ..training.scoring import (
        predict_sets,
        seen_unseen_points,
        test_sets,
        zero_shot_metrics,
    )

    out_dir = Path(out_dir)
    figs = out_dir / FOLDER
    figs.mkdir(parents=True, exist_ok=True)
    dev = distributed.pick_device(str(device))
    env = distributed.DistEnv(0, 1, 0, dev)
    data, gamma = loaded.data, loaded.gamma
    loaded.model.to(dev)

    sets = test_sets(data, transforms.eval_transform(data.image_size))
    p_seen, p_unseen = predict_sets(loaded.model, sets, env, batch_size, True, progress)
    metrics = zero_shot_metrics(p_seen, p_unseen, sets, data.attributes, gamma)
    att = data.attributes.float()
    y_seen, y_unseen = sets.seen_set.labels, sets.unseen_set.labels
    s_scores, u_scores = p_seen @ att.T, p_unseen @ att.T
    g_seen = evaluation.calibrated_predict(s_scores, data.seen, data.unseen, gamma)
    g_unseen = evaluation.calibrated_predict(u_scores, data.seen, data.unseen, gamma)
    c_unseen = data.unseen[u_scores[:, data.unseen].argmax(dim=1)]

    # --- per-class results and the seen-unseen curve
    names = data.class_names
    seen_names = [names[c] for c in data.seen.tolist()]
    unseen_names = [names[c] for c in data.unseen.tolist()]
    per_class.plot_class_accuracy(
        seen_names,
        per_class.class_accuracy(g_seen, y_seen, data.seen),
        unseen_names,
        per_class.class_accuracy(c_unseen, y_unseen, data.unseen),
        per_class.class_accuracy(g_unseen, y_unseen, data.unseen),
        figs / "class_accuracy.png",
        gamma=gamma,
    )
    per_class.plot_confusion(
        per_class.confusion(c_unseen, y_unseen, data.unseen), unseen_names, figs / "confusion.png"
    )
    plots.plot_seen_unseen(
        *seen_unseen_points(p_seen, p_unseen, sets, data.attributes),
        figs / "seen_unseen.png",
        ausuc=metrics["ausuc"],
        point=(metrics["S"], metrics["U"]),
        title=f"{data.name} test: seen-unseen curve",
    )

    # --- the embedding map
    _, used = embedding.plot_embedding(
        torch.cat([p_seen, p_unseen]),
        torch.cat([y_seen, y_unseen]),
        data.attributes,
        data.seen,
        data.unseen,
        names,
        figs / "embedding.png",
        method=embedding_method,
        title=f"{data.name}: visual embeddings and class prototypes",
    )

    # --- attention maps
    regions = (0, 0)
    for split, predicted, label in (
        ("test_seen", g_seen, "seen"),
        ("test_unseen", g_unseen, "unseen"),
    ):
        examples, hw = _attention_examples(loaded, split, predicted, dev, examples_per_kind)
        regions = hw if hw != (0, 0) else regions
        attention.plot_attention(
            examples,
            data.attribute_names,
            figs / f"attention_{label}.png",
            title=f"{data.name}: {label}-class test images (GZSL prediction, gamma {gamma:.2f})",
        )

    # --- training curves
    if history:
        plots.plot_training_curves(history, figs / "curves.png")

    html = page.render(
        f"ZeroMamba report: {data.name}",
        source,
        _meta(loaded, metrics, regions, used, dev),
        page.metrics_rows(results) if results is not None else _eval_rows(metrics),
        _sections(loaded, metrics, regions, used, bool(history), c_unseen, y_unseen),
        loaded.config,
        metrics_note=_metrics_note(results, metrics, len(data.unseen)),
    )
    return write_text_atomic(html, out_dir / PAGE)


def _eval_rows(metrics: dict[str, float]) -> list[page.MetricsRow]:
    return [
        page.MetricsRow(
            "ZeroMamba, test",
            {k: metrics[k] for k, _ in page.METRIC_COLUMNS},
            metrics["gamma"],
            "evaluated for this report",
        )
    ]


def _metrics_note(results: dict[str, Any] | None, metrics: dict[str, float], n_unseen: int) -> str:
    note = (
        "Percent. CZSL: mean per-class accuracy of unseen-class images among the unseen "
        "classes. S, U: mean per-class accuracy of seen / unseen test images among all classes "
        "with calibrated stacking (gamma subtracted from the seen classes' probabilities); "
        "H = 2SU/(S+U); AUSUC: area under the seen-unseen curve. "
        f"Chance CZSL with {n_unseen} unseen classes: {100 / n_unseen:.1f}."
    )
    if results is not None:
        note += (
            f" The pictures below come from the run's {RUN_CHECKPOINT} (its test CZSL "
            f"{metrics['czsl']:.2f}; the table's CZSL is that of best_czsl.pt)."
        )
        if "baseline" not in results:
            note += " This run recorded no baseline."
    return note


def _meta(
    loaded: LoadedCheckpoint,
    metrics: dict[str, float],
    regions: tuple[int, int],
    used: str,
    device: torch.device,
) -> list[tuple[str, str]]:
    from .. import __version__

    d = loaded.data
    epoch = f", epoch {loaded.epoch}" if loaded.epoch is not None else ""
    classes = f"{len(d.seen)} seen and {len(d.unseen)} unseen classes"
    images = f"{len(d.splits['test_seen'])} of seen, {len(d.splits['test_unseen'])} of unseen"
    model = f"{loaded.config.get('model')} ({loaded.kind} checkpoint{epoch})"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    return [
        ("dataset", f"{d.name}: {classes}, {d.attributes.shape[1]} attributes"),
        ("test images", f"{images} classes"),
        ("model", f"{model}, {d.image_size} px, {regions[0]}x{regions[1]} SLP regions"),
        ("calibration", f"gamma {loaded.gamma:.3f}"),
        ("generated", f"{stamp} by zeromamba {__version__} on {device}; embedding by {used}"),
    ]


def _sections(
    loaded: LoadedCheckpoint,
    metrics: dict[str, float],
    regions: tuple[int, int],
    used: str,
    has_curves: bool,
    c_unseen: Tensor,
    y_unseen: Tensor,
) -> list[page.Section]:
    F = page.Figure
    out = []
    if has_curves:
        out.append(
            page.Section(
                "Training",
                "Training loss and zero-shot accuracy per epoch (validation during model "
                "selection, test during the final stage).",
                [F(f"{FOLDER}/curves.png", "loss and accuracy per epoch")],
            )
        )
    out.append(
        page.Section(
            "Seen-unseen trade-off",
            "Calibrated stacking trades seen for unseen accuracy as gamma grows; the star is "
            f"the operating point at gamma {loaded.gamma:.3f} (S {metrics['S']:.1f}, "
            f"U {metrics['U']:.1f}).",
            [F(f"{FOLDER}/seen_unseen.png", f"seen-unseen curve, AUSUC {metrics['ausuc']:.2f}")],
        )
    )
    out.append(
        page.Section(
            "Per-class results",
            "Each class's accuracy, sorted; the means of the bars are the table's CZSL, U and S "
            "of this checkpoint. The confusion matrix shows which unseen classes the model "
            "mistakes for which (CZSL: unseen images among the unseen classes).",
            [
                F(
                    f"{FOLDER}/class_accuracy.png",
                    "per-class accuracy of the unseen and seen classes",
                ),
                F(
                    f"{FOLDER}/confusion.png",
                    "confusion among the unseen classes (rows: true "
                    f"class; {float((c_unseen == y_unseen).double().mean()) * 100:.1f}% of the "
                    "unseen images right)",
                ),
            ],
        )
    )
    out.append(
        page.Section(
            "Embedding map",
            f"{used} map of the test images' predicted attribute vectors, L2-normalised (dots: "
            "seen classes, triangles: unseen classes; one colour per class). Each star is a "
            "class's attribute vector, placed at the mean position of the 10 images closest to "
            "it (cosine): a star inside its own class's cluster means the model's embeddings of "
            "that class line up with its attributes. "
            + (
                "PCA, because scikit-learn is not installed (pip install 'zeromamba[viz]' "
                "for t-SNE)."
                if used == "PCA" and not embedding.tsne_available()
                else ""
            ),
            [F(f"{FOLDER}/embedding.png", "visual embeddings and class prototypes")],
        )
    )
    h, w = regions
    text = (
        "Where the SLP looks for an attribute: its softmax weights over the last-stage map's "
        f"{h}x{w} regions, upsampled over the image (red: high weight). Per image: its "
        "top predicted attributes (with the predicted value), then its true class's strongest "
        "attributes (with the class's value). Two correct (green title) and two wrong (red) "
        "predictions per split, chosen deterministically."
    )
    if h * w == 1:
        text += (
            f" At {loaded.data.image_size} px the last-stage map is a single region, so every "
            "attention map is uniform; train with larger images (e.g. --image-size 128, 4x4 "
            "regions) to see the SLP localise attributes."
        )
    out.append(
        page.Section(
            "Attribute attention",
            text,
            [
                F(f"{FOLDER}/attention_seen.png", "test images of seen classes"),
                F(f"{FOLDER}/attention_unseen.png", "test images of unseen classes"),
            ],
        )
    )
    return out


# ----------------------------------------------------------------------------- entry points
def report_for_run(
    run_dir: str | os.PathLike,
    *,
    device: str | torch.device = "auto",
    batch_size: int = 128,
    backend: str | None = None,
    embedding_method: str = "auto",
    progress: bool = False,
) -> Path:
    """(Re)build ``run_dir/report.html`` from the run's ``best_h.pt``, ``results.json`` and
    ``metrics.jsonl``. Raises FileNotFoundError when ``run_dir`` is not a finished run."""
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"run folder not found: {run}")
    ckpt = run / RUN_CHECKPOINT
    if not ckpt.is_file():
        hint = (
            " (training has not finished: stage 1 is still running)"
            if (run / "select").is_dir()
            else ""
        )
        raise FileNotFoundError(
            f"{run} is not a finished run: {RUN_CHECKPOINT} is missing{hint}; pass a folder "
            "written by `zeromamba train`, or --checkpoint FILE"
        )
    loaded = load_for_eval(ckpt)
    if backend is not None:
        loaded.model.set_backend(backend)
    results_path = run / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else None
    history = MetricsLog(run / "metrics.jsonl").read()
    return build_report(
        loaded,
        run,
        source=f"run {run.resolve()}, model {RUN_CHECKPOINT}",
        results=results,
        history=history,
        device=device,
        batch_size=batch_size,
        embedding_method=embedding_method,
        progress=progress,
    )


def report_for_checkpoint(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "auto",
    batch_size: int = 128,
    backend: str | None = None,
    embedding_method: str = "auto",
    progress: bool = False,
    **load_kwargs: Any,
) -> Path:
    """Write a report of a single checkpoint (ours or an official ZeroMamba ``.pth``) into
    ``out_dir`` (default: ``<checkpoint name>-report/`` beside it). ``load_kwargs``: data,
    data_root, image_root, w2v_root, image_size, data_seed, model, gamma as
    :func:`zeromamba.training.evaluate.load_for_eval`."""
    checkpoint = Path(checkpoint)
    loaded = load_for_eval(checkpoint, **load_kwargs)
    if backend is not None:
        loaded.model.set_backend(backend)
    if out_dir is None:
        out_dir = checkpoint.parent / f"{checkpoint.stem}-report"
    return build_report(
        loaded,
        out_dir,
        source=f"checkpoint {checkpoint.resolve()}",
        device=device,
        batch_size=batch_size,
        embedding_method=embedding_method,
        progress=progress,
    )


def report_after_training(
    run_dir: str | os.PathLike, device: torch.device, say: Callable[[str], None]
) -> Path | None:
    """The trainer's last step: the run's report. A failure here must not fail a finished
    training run (its results are written), so it is reported and None returned."""
    try:
        path = report_for_run(run_dir, device=device)
    except Exception as e:  # noqa: BLE001 - any drawing problem; the run itself succeeded
        say(
            f"zeromamba train: the report could not be written ({type(e).__name__}: {e}); "
            f"rebuild it with `zeromamba report {run_dir}`"
        )
        return None
    say(f"report: {path}")
    return path
