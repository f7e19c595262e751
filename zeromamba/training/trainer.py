"""The training run: stages, epochs, evaluation, checkpoints, resume, results.

Protocol (``TrainConfig.select``):

* ``"val"`` (default, honest): the test classes and test images take no part in any choice.
  Stage ``select`` trains on the "train" classes, minus a held-out fraction of each class's
  images, and after every epoch scores the "val" classes as unseen and the held-out "train"
  images as seen (the label space is train + val classes). It picks the epoch of the best
  validation CZSL, the epoch of the best validation H, and the calibration gamma that maximises
  H at that epoch (unless ``gamma`` is given). Stage ``final`` then retrains from scratch on
  "trainval" (all seen classes; without a fixed ``gamma`` minus a held-out fraction of each
  class's images that calibrates gamma, :mod:`zeromamba.calibration`) for the larger of the two
  epoch counts, with the same schedule; the model at the CZSL epoch (``best_czsl.pt``) gives the
  reported CZSL, the model at the H epoch (``best_h.pt``) the reported S, U, H (with the
  calibrated gamma) and AUSUC, both on the test splits, evaluated once.
  After the stages, ESZSL is fitted on the same splits with the same protocol
  (:mod:`zeromamba.baselines`) and reported beside ours (``results["baseline"]``).
* ``"test"`` (the official code's protocol, for comparison): one stage on "trainval", evaluated
  on the test splits after every epoch with the fixed ``gamma``; the best test CZSL and best
  test H over the epochs are reported (``best_czsl.pt`` / ``best_h.pt``). Numbers chosen this
  way are optimistic: model selection saw the test set.

Every stage keeps ``last.pt`` (model, optimiser, scheduler, epoch, best metrics, history, elapsed
seconds) in its folder, rewritten atomically after every epoch; ``resume=True`` continues from it.
The random streams are reseeded at every epoch from (seed, stage, epoch, rank), so a resumed run
reproduces an uninterrupted one exactly (same weights on CPU with ``num_workers=0``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, RandomSampler
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from .. import calibration
from .. import data as zdata
from ..models import ZeroMamba, zsl_loss
from . import distributed, plots, recipe, seeding
from .checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_weights,
    make_checkpoint,
    remove_stale_temporaries,
    save_atomic,
    write_text_atomic,
)
from .config import TrainConfig
from .config_checks import check_config, read_config_file
from .metrics_log import MetricsLog
from .optim import build_optimizer, build_scheduler
from .preflight import check_protocol
from .runlock import RunLock
from .scoring import (
    EvalSets,
    autocast,
    predict,
    predict_sets,
    seen_unseen_points,
    show_progress,
    test_sets,
    unwrap,
    zero_shot_metrics,
)
from .weight_average import WeightAverage

STAGE_IDS = {"select": 1, "final": 2}


# ----------------------------------------------------------------------------- model
def build_model(cfg: TrainConfig, data: zdata.ZeroShotData) -> ZeroMamba:
    """The ZeroMamba model of ``cfg`` for ``data``'s attributes (backbone weights from
    ``cfg.pretrained`` when given)."""
    model = ZeroMamba(
        cfg.model,
        attributes=data.attributes.shape[1],
        word_vectors=data.word_vectors,
        **cfg.extra,
    )
    if cfg.pretrained:
        load_backbone_weights(model, cfg.pretrained)
    return model


def load_backbone_weights(model: ZeroMamba, path: str | os.PathLike) -> None:
    """Load a VMamba ImageNet checkpoint (``{"model": state_dict}`` or a bare state dict) into
    the backbone; the key names match VMamba's, so nothing is renamed."""
    from .checkpoint import load_file

    obj = load_file(path)
    state = obj.get("model", obj) if isinstance(obj, dict) else obj
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: no state dict found (expected a VMamba checkpoint)")
    try:
        model.backbone.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(
            f"{path} does not fit the {type(model.backbone).__name__} backbone: {e}"
        ) from e


# ----------------------------------------------------------------------------- helpers
def holdout_split(labels: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Split item indices per class into (kept, held out): ``fraction`` of each class's items
    (at least one, when the class has two or more) are held out, drawn with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    kept, held = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)].tolist()
        n_held = min(len(idx) - 1, max(1, round(fraction * len(idx)))) if len(idx) > 1 else 0
        held += idx[:n_held]
        kept += idx[n_held:]
    return (
        torch.tensor(sorted(kept), dtype=torch.long),
        torch.tensor(sorted(held), dtype=torch.long),
    )


@dataclass
class Stage:
    """One training stage: what it trains on, how long, and how it is evaluated."""

    name: str  # "select" or "final"
    train_set: zdata.ImageDataset
    train_classes: Tensor  # the classes of the loss (global ids, sorted)
    epochs: int
    eval_sets: EvalSets
    eval_epochs: set[int] | None  # epochs evaluated; None: every epoch
    gamma: float | None  # fixed, or None: chosen on the eval sets / by the calibration rule
    save_at: dict[str, int] = field(default_factory=dict)  # "best_czsl"/"best_h" -> epoch
    # held-out seen images and the validation (gamma, median threshold) that set gamma on them
    # (zeromamba.calibration)
    calibration: zdata.ImageDataset | None = None
    transfer_from: tuple[float, float] | None = None


@dataclass
class RunContext:
    cfg: TrainConfig
    out: Path
    env: distributed.DistEnv
    data: zdata.ZeroShotData
    log: MetricsLog
    say: Callable[[str], None]
    started: float  # time.time() of this process's start, minus seconds of earlier sessions


def _stage_dir(ctx: RunContext, stage: Stage) -> Path:
    if ctx.cfg.select == "val" and stage.name == "select":
        return ctx.out / "select"
    return ctx.out


def _train_loader(ctx: RunContext, stage: Stage, epoch: int) -> DataLoader:
    cfg, env = ctx.cfg, ctx.env
    seed = seeding.derive_seed(cfg.seed, STAGE_IDS[stage.name], epoch)
    if env.distributed:
        sampler = DistributedSampler(
            stage.train_set,
            env.world_size,
            env.rank,
            shuffle=True,
            seed=seed % 2**31,
            drop_last=False,
        )
        sampler.set_epoch(epoch)
        per_rank = max(1, cfg.batch_size // env.world_size)
    else:
        sampler = RandomSampler(stage.train_set, generator=seeding.generator(seed))
        per_rank = cfg.batch_size
    return DataLoader(
        stage.train_set,
        batch_size=per_rank,
        sampler=sampler,
        num_workers=cfg.num_workers,
        worker_init_fn=seeding.worker_init if cfg.num_workers else None,
        generator=seeding.generator(seed + 1),
        pin_memory=env.device.type == "cuda",
        persistent_workers=False,
    )


def _evaluate(
    ctx: RunContext, model: nn.Module, stage: Stage
) -> tuple[dict[str, float], tuple[list[float], list[float]]]:
    """Metrics on the stage's eval sets and the (S, U) points of the calibration sweep."""
    cfg, sets = ctx.cfg, stage.eval_sets
    show = show_progress(cfg.progress) and ctx.env.is_main
    p_seen, p_unseen = predict_sets(model, sets, ctx.env, cfg.eval_batch_size, cfg.amp, show)
    gamma, typical = stage.gamma, None
    if gamma is None and stage.calibration is not None:
        p_cal = predict(
            model, stage.calibration, ctx.env, cfg.eval_batch_size, cfg.amp, "calibration", show
        )
        t = calibration.thresholds(
            p_cal @ ctx.data.attributes.float().T, sets.seen_classes, sets.unseen_classes
        )
        typical = calibration.typical_threshold(t)
        gamma = calibration.transfer_gamma(*stage.transfer_from, typical)
    metrics = zero_shot_metrics(p_seen, p_unseen, sets, ctx.data.attributes, gamma)
    if typical is not None:
        metrics["calibration_typical"] = typical
    return metrics, seen_unseen_points(p_seen, p_unseen, sets, ctx.data.attributes)


def _plot_curve(
    ctx: RunContext,
    path: Path,
    points,
    metrics: dict[str, float],
    stage: Stage,
    epoch: int,
    what: str,
) -> None:
    if ctx.env.is_main:
        plots.plot_seen_unseen(
            *points,
            path,
            ausuc=metrics["ausuc"],
            point=(metrics["S"], metrics["U"]),
            title=f"{ctx.data.name} {stage.eval_sets.name}: {what} (epoch {epoch})",
        )


def _checkpoint_fields(
    ctx: RunContext, stage: Stage, epoch: int, model: nn.Module
) -> dict[str, Any]:
    return {
        "config": ctx.cfg.to_dict(),
        "stage": stage.name,
        "epoch": epoch,
        "model": unwrap(model).state_dict(),
        "classes": {"seen": ctx.data.seen.tolist(), "unseen": ctx.data.unseen.tolist()},
    }


# ----------------------------------------------------------------------------- one stage
def run_stage(ctx: RunContext, stage: Stage, resume: bool) -> dict[str, Any]:
    """Train ``stage`` to its last epoch (continuing from its ``last.pt`` when resuming).

    Returns ``{"history": [per-epoch records], "best": {...}, "evals": {name: metrics}}`` where
    evals holds the metrics measured when the ``save_at`` checkpoints were written.
    """
    cfg, env = ctx.cfg, ctx.env
    folder = _stage_dir(ctx, stage)
    last_path = folder / "last.pt"
    stage_id = STAGE_IDS[stage.name]

    seeding.seed_everything(seeding.derive_seed(cfg.seed, stage_id, 0))
    model = build_model(cfg, ctx.data).to(env.device)
    net = unwrap(model)
    optimizer = build_optimizer(
        net.param_groups(),
        {"backbone": cfg.lr_backbone, "grl": cfg.lr_grl, "slp_mlp": cfg.lr_mlp},
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
    )
    scheduler = build_scheduler(optimizer, cfg.milestones, cfg.lr_factor)
    average = None
    if cfg.average_epochs:  # evaluate and save a moving average of the weights
        steps_per_epoch = -(-len(stage.train_set) // cfg.batch_size)
        average = WeightAverage(net, max(1.0, cfg.average_epochs * steps_per_epoch))
    state = {
        "epoch": 0,
        "best": {"czsl": -1.0, "czsl_epoch": 0, "H": -1.0, "H_epoch": 0},
        "history": [],
        "evals": {},
    }
    if resume and last_path.is_file():
        ckpt = load_checkpoint(last_path, required=("stage", "epoch", "model", "history"))
        if ckpt["stage"] != stage.name:
            raise CheckpointError(
                f"{last_path} belongs to stage {ckpt['stage']!r}, not {stage.name!r}"
            )
        load_weights(net, ckpt["model"], last_path)
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            for key in ("epoch", "best", "history", "evals"):
                state[key] = ckpt[key]
            if average is not None:
                average.load_state_dict(ckpt["average"])
        except (KeyError, ValueError, TypeError) as e:
            raise CheckpointError(
                f"{last_path}: optimizer, scheduler or progress entries are missing or do not "
                f"fit ({type(e).__name__}: {e})"
            ) from e
        ctx.say(f"[{stage.name}] resumed from {last_path} at epoch {state['epoch']}")
    if state["epoch"] >= stage.epochs:
        return state
    if env.distributed:
        ids = [env.device.index] if env.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(net, device_ids=ids)

    seen_att = ctx.data.attributes[stage.train_classes].to(env.device)
    to_local = torch.full((ctx.data.attributes.shape[0],), -1, dtype=torch.long)
    to_local[stage.train_classes] = torch.arange(len(stage.train_classes))
    to_local = to_local.to(env.device)

    for epoch in range(state["epoch"] + 1, stage.epochs + 1):
        seeding.seed_everything(seeding.derive_seed(cfg.seed, stage_id, epoch, env.rank))
        model.train()
        loader = _train_loader(ctx, stage, epoch)
        total = torch.zeros(2, dtype=torch.float64)
        bar = tqdm(
            loader,
            desc=f"[{stage.name}] epoch {epoch}/{stage.epochs}",
            leave=False,
            disable=not (show_progress(cfg.progress) and env.is_main),
            file=sys.stdout,
        )
        for images, labels in bar:
            images = images.to(env.device, non_blocking=True)
            y = to_local[labels.to(env.device, non_blocking=True)]
            optimizer.zero_grad(set_to_none=True)
            with autocast(env.device, cfg.amp):
                pred = model(images)
            loss = zsl_loss(pred.float(), y, seen_att, cfg.lambda_l1)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"[{stage.name}] epoch {epoch}: the loss is {loss.item()}; lower the "
                    "learning rates"
                )
            loss.backward()
            optimizer.step()
            if average is not None:
                average.update(net)
            total += torch.tensor([loss.item() * len(y), len(y)], dtype=torch.float64)
            bar.set_postfix(loss=f"{total[0] / total[1]:.4f}")
        scheduler.step()
        total = distributed.all_reduce_sum(total, env)
        record = {
            "stage": stage.name,
            "epoch": epoch,
            "loss": float(total[0] / total[1]),
            "lr": [g["lr"] for g in optimizer.param_groups],
            "eval": {},
        }

        metrics = None
        judged = model if average is None else average.model  # what is evaluated and saved
        if stage.eval_epochs is None or epoch in stage.eval_epochs:
            metrics, points = _evaluate(ctx, judged, stage)
            record["eval"][stage.eval_sets.name] = metrics
            best = state["best"]
            # a stage without fixed save epochs keeps its best models; ties: the later epoch
            # for CZSL, the earlier for H, as the official code
            if not stage.save_at and metrics["czsl"] >= best["czsl"]:
                best.update(czsl=metrics["czsl"], czsl_epoch=epoch)
                _save_best(ctx, folder / "best_czsl.pt", stage, epoch, judged, metrics)
            if not stage.save_at and metrics["H"] > best["H"]:
                best.update(H=metrics["H"], H_epoch=epoch, gamma=metrics["gamma"])
                _save_best(ctx, folder / "best_h.pt", stage, epoch, judged, metrics)
                _plot_curve(
                    ctx, folder / "seen_unseen.png", points, metrics, stage, epoch, "best-H model"
                )
            if stage.save_at.get("best_h") == epoch:
                _plot_curve(
                    ctx, folder / "seen_unseen.png", points, metrics, stage, epoch, "selected model"
                )
        for name, at in stage.save_at.items():
            if at == epoch:
                _save_best(ctx, folder / f"{name}.pt", stage, epoch, judged, metrics)
                state["evals"][name] = metrics
        state["epoch"] = epoch
        state["seconds"] = record["seconds"] = time.time() - ctx.started
        state["history"].append(record)
        if env.is_main:
            save_atomic(
                make_checkpoint(
                    **_checkpoint_fields(ctx, stage, epoch, model),
                    optimizer=optimizer.state_dict(),
                    scheduler=scheduler.state_dict(),
                    best=state["best"],
                    history=state["history"],
                    evals=state["evals"],
                    seconds=state["seconds"],
                    **({} if average is None else {"average": average.state_dict()}),
                ),
                last_path,
            )
            ctx.log.append(record)
            ctx.say(_epoch_line(record))
        distributed.barrier(env)
    return state


def _save_best(
    ctx: RunContext,
    path: Path,
    stage: Stage,
    epoch: int,
    model: nn.Module,
    metrics: dict[str, float] | None,
) -> None:
    if ctx.env.is_main:
        save_atomic(
            make_checkpoint(**_checkpoint_fields(ctx, stage, epoch, model), metrics=metrics), path
        )


def _epoch_line(record: dict[str, Any]) -> str:
    line = (
        f"[{record['stage']}] epoch {record['epoch']:3d}  {record['seconds']:6.0f} s  "
        f"loss {record['loss']:.4f}"
    )
    for split, m in record["eval"].items():
        line += (
            f"  {split}: CZSL {m['czsl']:.1f}  S {m['S']:.1f}  U {m['U']:.1f}"
            f"  H {m['H']:.1f}  (gamma {m['gamma']:.2f})"
        )
    return line


# ----------------------------------------------------------------------------- the run
def _select_from(history: list[dict[str, Any]], gamma: float | None) -> dict[str, Any]:
    """The stage-1 choice: epochs of the best validation CZSL and H, and H's gamma."""
    rows = [r for r in history if "val" in r["eval"]]
    if not rows:
        raise RuntimeError("the select stage has no validation record to choose from")
    # same tie rules as the per-epoch tracking: later epoch for CZSL, earlier for H
    czsl_row = max(reversed(rows), key=lambda r: r["eval"]["val"]["czsl"])
    h_row = max(rows, key=lambda r: r["eval"]["val"]["H"])
    return {
        "epoch_czsl": czsl_row["epoch"],
        "epoch_h": h_row["epoch"],
        "gamma": float(h_row["eval"]["val"]["gamma"]) if gamma is None else float(gamma),
        "seen_typical": h_row["eval"]["val"].get("seen_typical"),
        "val": {
            "czsl": czsl_row["eval"]["val"]["czsl"],
            **{k: h_row["eval"]["val"][k] for k in ("S", "U", "H", "ausuc")},
        },
    }


def load_data(cfg: TrainConfig) -> zdata.ZeroShotData:
    """The dataset of ``cfg`` (``cfg.data``: builtin, CUB, SUN, AWA2 or a folder)."""
    return zdata.load(
        cfg.data,
        data_root=cfg.data_root,
        image_root=cfg.image_root,
        w2v_root=cfg.w2v_root,
        image_size=cfg.image_size,
        seed=cfg.data_seed,
        word_vectors=cfg.word_vectors,
        trust_pickle=cfg.trust_pickle,
    )


def train(
    cfg: TrainConfig,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the protocol of ``cfg`` and write everything into ``out``.

    Writes (rank 0 only): ``config.json``, ``metrics.jsonl``, ``curves.png``,
    ``seen_unseen.png``, ``last.pt`` / ``best_czsl.pt`` / ``best_h.pt`` (and, for
    ``select="val"``, the same under ``select/`` for stage 1), ``results.json``, ``report.html``
    (pictures in ``report/``). Returns the
    results dict (percent: ``czsl``, ``S``, ``U``, ``H``, ``ausuc``; ``n_unseen``, ``seconds``,
    ...). With ``resume=True`` the run continues from the checkpoints in ``out``; the stored
    configuration is used and ``cfg`` is ignored.
    """
    out = Path(out)
    if resume and (out / "config.json").is_file():
        cfg = read_config_file(out / "config.json")
    else:
        check_config(cfg)
    env = distributed.setup(cfg.device)
    threads = torch.get_num_threads()
    if not (resume and (out / "config.json").is_file()):
        # the from-scratch recipe for folder data without --pretrained, told to the user
        cfg = recipe.choose(cfg, say if env.is_main else (lambda _msg: None))
    wanted = cfg.resolved().threads
    lock = RunLock(out) if env.is_main else None
    try:
        if lock is not None:
            lock.acquire()  # before anything in the folder is read or written
        if wanted:
            torch.set_num_threads(wanted)
        return _train(cfg, out, env, resume, say if env.is_main else (lambda _msg: None))
    finally:
        if lock is not None:
            lock.release()
        torch.set_num_threads(threads)
        distributed.teardown()


def _train(
    cfg: TrainConfig, out: Path, env: distributed.DistEnv, resume: bool, say: Callable[[str], None]
) -> dict[str, Any]:
    t0, cpu0 = time.time(), time.process_time()
    cfg_path = out / "config.json"
    prior_seconds = 0.0
    if resume:
        if not cfg_path.is_file():
            raise FileNotFoundError(f"--resume {out}: no run there ({cfg_path} is missing)")
        cfg = read_config_file(cfg_path)
        for p in (out / "last.pt", out / "select" / "last.pt"):
            if p.is_file():
                prior_seconds = max(prior_seconds, float(load_checkpoint(p).get("seconds", 0.0)))
    else:
        cfg = cfg.resolved()
        if (out / "last.pt").exists() or (out / "select" / "last.pt").exists():
            raise FileExistsError(
                f"{out} already holds a run: pass --resume to continue it, or choose another --out"
            )
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out)
        remove_stale_temporaries(out / "select")
        if not resume:
            write_text_atomic(json.dumps(cfg.to_dict(), indent=2) + "\n", cfg_path)
    distributed.barrier(env)

    data = load_data(cfg)
    check_protocol(data, cfg.select)
    train_tf = zdata.transforms.train_transform(data.image_size, grayscale=cfg.grayscale)
    eval_tf = zdata.transforms.eval_transform(data.image_size)
    log = MetricsLog(out / "metrics.jsonl")
    ctx = RunContext(cfg, out, env, data, log, say, t0 - prior_seconds)
    say(
        f"zeromamba train: {data.name}, {len(data.class_names)} classes "
        f"({len(data.seen)} seen, {len(data.unseen)} unseen), model {cfg.model}, "
        f"{data.image_size} px, device {env.device}"
        + (f" x {env.world_size} processes" if env.distributed else "")
        + f", selection on {cfg.select}, word vectors: {data.word_vector_source}"
    )

    if resume and env.is_main:
        kept = []
        for p in (out / "select" / "last.pt", out / "last.pt"):
            if p.is_file():
                kept += load_checkpoint(p, required=("history",))["history"]
        log.truncate_to(sorted(kept, key=lambda r: (STAGE_IDS[r["stage"]], r["epoch"])))

    history: list[dict[str, Any]] = []
    test_task = test_sets(data, eval_tf)
    trainval = data.splits["trainval"].with_transform(train_tf)
    if cfg.select == "val":
        train_split = data.splits["train"]
        kept_idx, held_idx = holdout_split(train_split.labels, cfg.holdout_fraction, cfg.seed)
        val_sets = EvalSets(
            "val",
            train_split.subset(held_idx).with_transform(eval_tf),
            data.splits["val"].with_transform(eval_tf),
            data.classes("train"),
            data.classes("val"),
        )
        select = Stage(
            "select",
            train_split.subset(kept_idx).with_transform(train_tf),
            data.classes("train"),
            cfg.epochs,
            val_sets,
            None,
            cfg.gamma,
        )
        s1 = run_stage(ctx, select, resume)
        history += s1["history"]
        choice = _select_from(s1["history"], cfg.gamma)
        calibrate = cfg.gamma is None and choice["seen_typical"] is not None
        say(
            f"[select] chose epoch {choice['epoch_czsl']} for CZSL, epoch {choice['epoch_h']} "
            f"for H, gamma {choice['gamma']:.3f} (validation: CZSL {choice['val']['czsl']:.1f}, "
            f"H {choice['val']['H']:.1f})"
            + (
                f"; held-out seen images' median threshold {choice['seen_typical']:.3f}: the "
                "final model's gamma is scaled by its own median over this"
                if calibrate
                else ""
            )
        )
        final_train, held_seen = trainval, None
        if calibrate:  # hold out seen images to set the final model's gamma (calibration.py)
            kept_tv, held_tv = holdout_split(trainval.labels, cfg.holdout_fraction, cfg.seed)
            final_train = trainval.subset(kept_tv)
            held_seen = data.splits["trainval"].subset(held_tv).with_transform(eval_tf)
        final = Stage(
            "final",
            final_train,
            data.seen,
            max(choice["epoch_czsl"], choice["epoch_h"]),
            test_task,
            {choice["epoch_czsl"], choice["epoch_h"]},
            None if calibrate else choice["gamma"],
            {"best_czsl": choice["epoch_czsl"], "best_h": choice["epoch_h"]},
            held_seen,
            (choice["gamma"], choice["seen_typical"]) if calibrate else None,
        )
        s2 = run_stage(ctx, final, resume)
        history += s2["history"]
        czsl_m, h_m = s2["evals"]["best_czsl"], s2["evals"]["best_h"]
        epochs = {"czsl": choice["epoch_czsl"], "H": choice["epoch_h"]}
    else:
        final = Stage("final", trainval, data.seen, cfg.epochs, test_task, None, cfg.gamma)
        s2 = run_stage(ctx, final, resume)
        history += s2["history"]
        best = s2["best"]
        by_epoch = {r["epoch"]: r["eval"]["test"] for r in s2["history"]}
        czsl_m, h_m = by_epoch[best["czsl_epoch"]], by_epoch[best["H_epoch"]]
        epochs = {"czsl": best["czsl_epoch"], "H": best["H_epoch"]}
        choice = None

    results = {
        "dataset": data.name,
        "select": cfg.select,
        "czsl": czsl_m["czsl"],
        "S": h_m["S"],
        "U": h_m["U"],
        "H": h_m["H"],
        "ausuc": h_m["ausuc"],
        "gamma": h_m["gamma"],
        "seen_only": h_m.get("seen_only"),  # S's ceiling: seen images among seen classes alone
        "epochs": epochs,
        "n_seen": len(data.seen),
        "n_unseen": len(data.unseen),
        "chance_czsl": 100.0 / len(data.unseen),
        "world_size": env.world_size,
        "seconds": time.time() - ctx.started,
        # this process's CPU time over all its threads (a resumed run: this session's only)
        "cpu_seconds": time.process_time() - cpu0,
    }
    if choice is not None:
        results["validation"] = choice["val"]
        if calibrate:
            results["calibration"] = {
                "rule": "median_scaled",
                "val_gamma": choice["gamma"],
                "val_typical": choice["seen_typical"],
                "final_typical": h_m.get("calibration_typical"),
            }
    if env.is_main:
        say("[baseline] ESZSL on pixels and on the trained backbone's pooled features")
        cpu1 = time.process_time()
        results["baseline"] = _baselines(ctx)
        results["baseline_cpu_seconds"] = time.process_time() - cpu1
        results["seconds"] = time.time() - ctx.started
        plots.plot_training_curves(history, out / "curves.png")
        write_text_atomic(json.dumps(results, indent=2) + "\n", out / "results.json")
        say(format_table(results))
        from ..report import report_after_training  # here: the report imports the trainer

        report_after_training(out, env.device, say)
        say(f"wrote {out}")
    distributed.barrier(env)
    return results


def _baselines(ctx: RunContext) -> dict[str, Any]:
    """ESZSL on the run's splits and protocol (:mod:`zeromamba.baselines`)."""
    from ..baselines import run_baselines

    def model(path: Path) -> ZeroMamba | None:
        if not path.is_file():
            return None
        net = build_model(dataclasses.replace(ctx.cfg, pretrained=None), ctx.data)
        net.load_state_dict(load_checkpoint(path)["model"])
        return net

    final = model(ctx.out / "best_h.pt")
    stage1 = model(ctx.out / "select" / "best_h.pt") if ctx.cfg.select == "val" else final
    return run_baselines(
        ctx.data,
        ctx.cfg.holdout_fraction,
        ctx.cfg.seed,
        {"val": stage1, "test": final},
        ctx.env.device,
        ctx.cfg.eval_batch_size,
    )


def format_table(results: dict[str, Any]) -> str:
    """The CZSL / GZSL table of a results dict."""
    sel = (
        "selected on validation"
        if results["select"] == "val"
        else "selected on the test set (official protocol)"
    )
    e = results["epochs"]
    head = (
        f"{results['dataset']}: {results['n_unseen']} unseen classes (CZSL chance "
        f"{results['chance_czsl']:.1f}%), {sel}; epochs CZSL {e['czsl']}, H {e['H']}, "
        f"gamma {results['gamma']:.3f}"
    )
    row = (
        f"  {results['czsl']:6.2f} | {results['S']:6.2f} {results['U']:6.2f} "
        f"{results['H']:6.2f} | {results['ausuc']:6.2f} | {results['seconds']:.0f}"
    )
    lines = [head, f"  {'CZSL':>6} | {'S':>6} {'U':>6} {'H':>6} | {'AUSUC':>6} | seconds", row]
    if results.get("baseline"):
        from ..baselines.in_run import format_baselines

        lines += ["  baselines, same splits and validation protocol:"]
        lines += format_baselines(results["baseline"])
    return "\n".join(lines)
