#!/usr/bin/env python
"""End-to-end model benchmark: ZeroMamba forward + backward (images/s, peak memory)
on the fused SS2D pipeline (``ss2d_scan``) against the unfused one (cross_scan ->
selective_scan -> cross_merge, VMamba's original data flow on our ops).

``--device cpu`` (fp32): VMamba-T backbone ("tiny"), 224 px, b = 2; variants ``fused:cpu`` and
  ``unfused:cpu``. ``--variants fused:cpu unfused:reference`` adds the pure-PyTorch reference
  loop, timed from a single run when slow (its autograd backward at 224 px takes minutes, so it
  is not in the default set; use a smaller ``--size`` for it).
``--device cuda`` (bf16 autocast): VMamba-S backbone ("small"), 448 px, b = 32; variants
  ``fused`` and ``unfused`` on the default CUDA backend (``--cuda-variants`` adds others),
  with the peak memory of a step (``torch.cuda.max_memory_allocated``).
Without CUDA the GPU part is skipped (exit code 0). ``--quick`` runs a tiny smoke configuration.

A step: ``zsl_loss(model(images), labels, class_att, 1.0).backward()`` with CUB's 312
attributes; gradients are dropped between steps. Every variant starts from the same weights; its
first prediction is compared with the first variant's (``rel_err``, no assertion). Timing:
medians after warm-up (``triton.testing.do_bench`` on GPU, ``torch.utils.benchmark`` on CPU).
Results go to ``<out>/model-<device>[-<tag>].json`` and ``.md``; the table is printed last.

Usage:
  python bench/bench_model.py --device cpu [--out DIR] [--machine "2-core CPU box"]
  python bench/bench_model.py --device cuda --out DIR
  python bench/bench_model.py --device cpu --quick
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

import zeromamba
from zeromamba import backends
from zeromamba.models import ZeroMamba, zsl_loss

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: the bench package sits next to zeromamba
    sys.path.insert(0, str(ROOT))

from bench.report import git_commit
from zeromamba.testing import rel_err

ATTRIBUTES = 312  # CUB
CLASSES = 150  # CUB's seen classes


@dataclass
class Setting:
    device: str
    config: str
    size: int
    batch: int
    dtype: str  # "float32" or "bfloat16" (autocast)
    variants: list[str]  # "pipeline:backend", backend "default" = the device's default


def parse_variant(text: str) -> tuple[str, str | None]:
    pipeline, _, backend = text.partition(":")
    if pipeline not in ("fused", "unfused"):
        raise SystemExit(f"variant {text!r}: pipeline must be fused or unfused")
    backend = backend or "default"
    return pipeline, None if backend == "default" else backend


def resolve_backend(backend: str | None, device: str) -> tuple[str | None, str]:
    """(resolved name, "") or (None, why it cannot run)."""
    try:
        return backends.resolve(backend, torch.device(device)), ""
    except (RuntimeError, ValueError) as e:
        return None, str(e)


# --------------------------------------------------------------------------- timing


def time_cpu(fn: Callable[[], object], min_run_s: float, single_run_s: float) -> dict:
    """Median over runs after one warm-up run; a warm-up slower than ``single_run_s`` is
    reported as the single measurement."""
    from torch.utils import benchmark

    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    if first > single_run_s:
        return {"ms": first * 1e3, "runs": 1}
    timer = benchmark.Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    m = timer.blocked_autorange(min_run_time=max(min_run_s, 2 * first))
    return {"ms": m.median * 1e3, "runs": len(m.times) * m.number_per_run}


def time_gpu(fn: Callable[[], object], warmup_ms: int, rep_ms: int) -> dict:
    """Median of ``triton.testing.do_bench`` (CUDA events)."""
    from triton.testing import do_bench

    ms = do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median")
    return {"ms": ms, "runs": max(1, round(rep_ms / max(ms, 1e-3)))}


# --------------------------------------------------------------------------- one setting


def run_setting(s: Setting, args: argparse.Namespace) -> list[dict]:
    device = torch.device(s.device)
    torch.manual_seed(0)
    model = ZeroMamba(s.config, attributes=ATTRIBUTES, use_checkpoint=args.checkpointing)
    model = model.to(device).train()
    g = torch.Generator().manual_seed(0)
    images = torch.randn(s.batch, 3, s.size, s.size, generator=g).to(device)
    labels = torch.randint(0, CLASSES, (s.batch,), generator=g).to(device)
    class_att = torch.nn.functional.normalize(torch.rand(CLASSES, ATTRIBUTES, generator=g), dim=1)
    class_att = class_att.to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=s.dtype == "bfloat16")

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with autocast:
            pred = model(images)
        zsl_loss(pred, labels, class_att, 1.0).backward()

    rows, first_pred = [], None
    for text in s.variants:
        pipeline, asked = parse_variant(text)
        backend, why = resolve_backend(asked, s.device)
        row = {
            "device": s.device,
            "config": s.config,
            "size": s.size,
            "batch": s.batch,
            "dtype": s.dtype,
            "pipeline": pipeline,
            "backend": backend or asked,
        }
        if backend is None:
            rows.append({**row, "skipped": why})
            print(f"skip {text}: {why}", file=sys.stderr)
            continue
        model.set_backend(backend)
        model.backbone.set_pipeline(pipeline)
        try:
            model.eval()  # no drop-path, so the variants' predictions compare
            with torch.no_grad(), autocast:
                pred = model(images).float()
            model.train()
            first_pred = pred if first_pred is None else first_pred
            row["rel_err_vs_first"] = rel_err(pred, first_pred)
            if s.device == "cuda":
                model.zero_grad(set_to_none=True)  # the baseline: weights only
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
                step()
                torch.cuda.synchronize()
                row["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
                row["step_peak_mb"] = (torch.cuda.max_memory_allocated() - before) / 2**20
                timing = time_gpu(step, args.warmup_ms, args.rep_ms)
            else:
                timing = time_cpu(step, args.min_run_s, args.single_run_s)
        except RuntimeError as e:  # out of memory, or a kernel failing: report, go on
            rows.append({**row, "skipped": f"{type(e).__name__}: {str(e).splitlines()[0]}"})
            print(f"{text}: {type(e).__name__}: {e}", file=sys.stderr)
            model.zero_grad(set_to_none=True)
            if s.device == "cuda":
                torch.cuda.empty_cache()
            continue
        row.update(timing)
        row["images_per_s"] = s.batch / (timing["ms"] / 1e3)
        rows.append(row)
        print(
            f"{text:>20}: {timing['ms']:10.1f} ms/step  {row['images_per_s']:8.2f} img/s",
            file=sys.stderr,
        )
    _ratios(rows)
    return rows


def _ratios(rows: list[dict]) -> None:
    """Speed-up of each timed row over the unfused pipeline on the same backend and over the
    unfused reference; memory ratio over the unfused pipeline on the same backend."""
    timed = [r for r in rows if "ms" in r]
    ref = next(
        (r for r in timed if r["pipeline"] == "unfused" and r["backend"] == "reference"), None
    )
    for r in timed:
        base = next(
            (u for u in timed if u["pipeline"] == "unfused" and u["backend"] == r["backend"]), None
        )
        if base is not None and base is not r:
            r["speedup_vs_unfused"] = base["ms"] / r["ms"]
            if "step_peak_mb" in r and base.get("step_peak_mb"):
                r["memory_vs_unfused"] = r["step_peak_mb"] / base["step_peak_mb"]
        if ref is not None and ref is not r:
            r["speedup_vs_reference"] = ref["ms"] / r["ms"]


# --------------------------------------------------------------------------- report


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"# Model benchmark: ZeroMamba forward + backward ({result['device']})",
        "",
        f"{result['date']}, commit {result['commit']}, {m['name']}; torch {m['torch']}, "
        f"{m['threads']} CPU threads" + (f", {m['gpu']}" if m.get("gpu") else "") + ".",
        f"Step: zsl_loss(model(images)).backward(), {ATTRIBUTES} attributes"
        + (", gradient checkpointing" if result["checkpointing"] else "")
        + ".",
        "",
        (
            "| backbone | px | batch | dtype | pipeline | backend | ms/step | images/s | "
            "step peak MB | x vs unfused | mem vs unfused | x vs reference | rel err |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        head = (
            f"| {r['config']} | {r['size']} | {r['batch']} | {r['dtype']} | {r['pipeline']} "
            f"| {r['backend']} "
        )
        if "skipped" in r:
            lines.append(head + f"| skipped: {r['skipped']} |" + " |" * 6)
            continue
        lines.append(
            head
            + f"| {r['ms']:.1f} | {r['images_per_s']:.2f} | {_fmt(r.get('step_peak_mb'), '.0f')} "
            f"| {_fmt(r.get('speedup_vs_unfused'), '.2f')} "
            f"| {_fmt(r.get('memory_vs_unfused'), '.2f')} "
            f"| {_fmt(r.get('speedup_vs_reference'), '.1f')} "
            f"| {_fmt(r.get('rel_err_vs_first'), '.1e')} |"
        )
    if result["notes"]:
        lines += ["", *[f"- {n}" for n in result["notes"]]]
    return "\n".join(lines) + "\n"


def machine(args: argparse.Namespace, device: str) -> dict:
    info = {
        "name": args.machine or platform.node(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


# --------------------------------------------------------------------------- main


# per device: the quick (config, px, batch, dtype), the full one, the full run's variants
_SETTINGS = {
    "cpu": (("nano", 32, 2, "float32"), ("tiny", 224, 2, "float32"), ["fused:cpu", "unfused:cpu"]),
    "cuda": (
        ("nano", 64, 4, "bfloat16"),
        ("small", 448, 32, "bfloat16"),
        ["fused:default", "unfused:default"],
    ),
}


def settings(args: argparse.Namespace) -> Setting:
    quick, (config, size, batch, dtype), variants = _SETTINGS[args.device]
    if args.quick:
        return Setting(args.device, *quick, ["fused:default", "unfused:default"])
    return Setting(
        args.device,
        args.config or config,
        args.size or size,
        args.batch or batch,
        dtype,
        args.variants or variants,
    )


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--config", help="backbone config (default tiny on CPU, small on CUDA)")
    p.add_argument("--size", type=int, help="image size in px (default 224 CPU, 448 CUDA)")
    p.add_argument("--batch", type=int, help="batch size (default 2 CPU, 32 CUDA)")
    p.add_argument(
        "--variants",
        nargs="+",
        metavar="PIPELINE:BACKEND",
        help="e.g. fused:cpu unfused:reference; backend 'default' = fastest available",
    )
    p.add_argument("--quick", action="store_true", help="tiny smoke configuration")
    p.add_argument("--checkpointing", action="store_true", help="gradient checkpointing per block")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--min-run-s", type=float, default=3.0, help="CPU: time measured per variant")
    p.add_argument(
        "--single-run-s",
        type=float,
        default=20.0,
        help="CPU: a warm-up slower than this is the single measurement",
    )
    p.add_argument("--warmup-ms", type=int, default=500, help="CUDA: do_bench warm-up")
    p.add_argument("--rep-ms", type=int, default=3000, help="CUDA: do_bench measuring time")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--machine", help="machine description for the report")
    p.add_argument("--tag", help="suffix of the result files: model-<device>-<tag>.json/.md")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_model: no CUDA device; GPU part skipped")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    s = settings(args)
    notes = []
    if any(v.startswith("unfused:reference") for v in s.variants) and s.device == "cpu":
        notes.append(
            "reference backend: its autograd backward through the Python scan loop "
            "dominates; timed from a single run when slower than "
            f"{args.single_run_s:.0f} s"
        )
    rows = run_setting(s, args)
    result = {
        "bench": "model",
        "device": s.device,
        "setting": asdict(s),
        "checkpointing": args.checkpointing,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "zeromamba": zeromamba.__version__,
        "machine": machine(args, s.device),
        "rows": rows,
        "notes": notes,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    tag = args.tag or ("quick" if args.quick else "")
    stem = f"model-{s.device}" + (f"-{tag}" if tag else "")
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (args.out / f"{stem}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
