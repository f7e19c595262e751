#!/usr/bin/env python
"""The CPU training step, today's model against a committed one: interleaved step times and the
per-op profile.

A step is ``zsl_loss(model(images), labels, class_att, 1.0).backward()`` (CUB's 312 attributes,
as ``bench_model.py``). Three models with the same weights run interleaved (ours, committed
unfused, committed fused, ours, ...):

* ``current``: this tree's ZeroMamba (fused ss2d_scan);
* ``<rev> unfused`` and ``<rev> fused``: the backbone code of git revision ``--baseline``
  (``zeromamba/models/vmamba.py`` at that commit, loaded from git), with this tree's ops.

The ratios are medians over rounds of baseline / current with their min-max. ``--profile`` adds
torch.profiler tables per model (self CPU time per step by op and by kind of op, over
``--profile-steps`` steps) and the step's GEMM and convolution FLOPs with the floor they set at
this machine's measured GEMM rate. ``--threads 1 --clock cpu`` gives the least load-dependent
figures on a shared machine. Writes ``<out>/step-cpu-<config>-<size>px[-<tag>].json`` and ``.md``.

Usage:
  python bench/bench_step.py --baseline e1cfe95 --config tiny --size 224 --batch 2 --rounds 5
  python bench/bench_step.py --config nano --size 64 --profile --out DIR
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: the bench package sits next to zeromamba
    sys.path.insert(0, str(ROOT))

import torch

from bench.report import finite, git_commit, ratio_rows
from bench.timing import interleaved
from zeromamba.models import ZeroMamba, zsl_loss
from zeromamba.testing import rel_err

ATTRIBUTES, CLASSES = 312, 150  # CUB


def committed_vmamba(rev: str):
    """zeromamba/models/vmamba.py as of git revision ``rev``, imported as a sibling module of
    today's (its relative imports resolve to this tree's ops)."""
    src = subprocess.run(
        ["git", "show", f"{rev}:zeromamba/models/vmamba.py"],
        cwd=ROOT,
        text=True,
        capture_output=True,
        check=True,
    ).stdout
    name = f"zeromamba.models._vmamba_{rev}"
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader=None))
    module.__package__ = "zeromamba.models"
    sys.modules[name] = module
    # our own file at another commit, read from this repository's git history
    exec(compile(src, f"{rev}:zeromamba/models/vmamba.py", "exec"), module.__dict__)  # noqa: S102
    return module


def models(config: str, rev: str) -> dict[str, ZeroMamba]:
    torch.manual_seed(0)
    current = ZeroMamba(config, attributes=ATTRIBUTES).train()
    old = committed_vmamba(rev)
    out = {"current": current}
    for pipeline in ("unfused", "fused"):
        m = ZeroMamba(old.vssm(config, pipeline=pipeline), attributes=ATTRIBUTES).train()
        m.load_state_dict(current.state_dict(), strict=True)
        out[f"{rev} {pipeline}"] = m
    return out


def step_fns(ms: dict[str, ZeroMamba], size: int, batch: int):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, size, size, generator=g)
    labels = torch.randint(0, CLASSES, (batch,), generator=g)
    att = torch.nn.functional.normalize(torch.rand(CLASSES, ATTRIBUTES, generator=g), dim=1)

    def make(m):
        def step():
            m.zero_grad(set_to_none=True)
            zsl_loss(m(images), labels, att, 1.0).backward()

        return step

    with torch.no_grad():
        m0 = next(iter(ms.values())).eval()
        first = m0(images)
        agree = {n: rel_err(m.eval()(images), first) for n, m in ms.items()}
    for m in ms.values():
        m.train()
    return {n: make(m) for n, m in ms.items()}, agree


# self CPU time of profiler events by kind; the first matching rule wins
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("zeromamba kernels", ("zeromamba",)),
    ("GEMM and convolution", ("aten::mm", "aten::addmm", "aten::bmm", "conv")),
    ("LayerNorm", ("layer_norm",)),
    ("activations", ("gelu", "silu", "relu")),
    ("copies and layout", ("copy_", "flip", "aten::cat", "clone", "contiguous", "_to_copy")),
    ("zero fills", ("fill_", "zero_")),
    ("elementwise and reductions", ("aten::add", "aten::mul", "aten::div", "aten::sum", "neg")),
)


def category(op: str) -> str:
    for name, keys in CATEGORIES:
        if any(k in op for k in keys):
            return name
    return "other (autograd, allocation, small ops)"


def profile_step(step, steps: int = 3, rows: int = 25) -> dict:
    """Self CPU time per step over ``steps`` profiled steps (after a warm-up step): the top
    ops, the time by category (CATEGORIES), and the step's GEMM and convolution FLOPs (forward
    and backward, counted by torch.utils.flop_counter)."""
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    by_category: dict[str, float] = {}
    for e in events:
        c = category(e.key)
        by_category[c] = by_category.get(c, 0.0) + e.self_cpu_time_total
    return {
        "steps": steps,
        "total_ms": total / 1e3 / steps,
        "gemm_flops": counter.get_total_flops(),
        "categories": [
            {"category": c, "self_ms": t / 1e3 / steps, "pct": 100 * t / total}
            for c, t in sorted(by_category.items(), key=lambda kv: -kv[1])
        ],
        "ops": [
            {
                "op": e.key,
                "self_ms": e.self_cpu_time_total / 1e3 / steps,
                "pct": 100 * e.self_cpu_time_total / total,
                "calls": e.count // steps,
            }
            for e in events[:rows]
        ],
    }


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def gemm_gflops(clock: str, n: int = 1024, runs: int = 7) -> float:
    """This machine's fp32 GEMM rate now (GFLOP/s, median of ``runs`` n x n x n products), with
    the step loop's clock and threads."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    r = interleaved({"mm": lambda: a @ b}, rounds=runs, budget_s=1e9, clock=CLOCKS[clock])
    return 2 * n**3 / (r.median_ms("mm") * 1e6)


def _run_facts(m: dict) -> str:
    """One sentence: when, where, what against what, and how it was timed."""
    return (
        f"{m['date']}, {m['machine']}, commit {m['commit']} against the backbone of "
        f"{m['baseline']}, torch {m['torch']}, {m['threads']} threads, {m['clock']} time, "
        f"1-min load average {m['loadavg_start']:.1f} at the start, "
        f"{m['loadavg_end']:.1f} at the end; fp32 GEMM rate {m['gemm_gflops']:.0f} GFLOP/s "
        "(1024^3 products, same clock)."
    )


def markdown(result: dict) -> str:
    m = result["meta"]
    title = f"# CPU training step: {m['config']} {m['size']} px, b={m['batch']}"
    lines = [title, "", _run_facts(m), ""]
    lines += ["| model | median step s | min-max s |", "|---|---|---|"]
    for name, ms in result["step_ms"].items():
        s = sorted(ms)
        lines.append(
            f"| {name} | {s[len(s) // 2] / 1e3:.3g} | {s[0] / 1e3:.3g}-{s[-1] / 1e3:.3g} |"
        )
    lines += ["", *ratio_rows(result["ratios"], "ratio (interleaved, per round)")]
    lines += [
        "",
        "Outputs agree (eval mode, rel. error to the first model): "
        + ", ".join(f"{k} {v:.1e}" for k, v in result["agreement"].items()),
        "",
    ]
    profiles = result.get("profiles", {})
    if profiles:
        names = list(profiles)
        lines += [
            "## Profile: self CPU time per step by category (ms, % of the step)",
            "",
            "GEMM floor: the step's GEMM and convolution FLOPs at the GEMM rate above.",
            "",
            "| category | " + " | ".join(names) + " |",
            "|---|" + "---|" * len(names),
        ]
        cats = {n: {c["category"]: c for c in profiles[n]["categories"]} for n in names}
        order = [c["category"] for c in profiles[names[0]]["categories"]]
        order += [c for n in names for c in cats[n] if c not in order]
        for c in order:
            cells = [cats[n].get(c) for n in names]
            lines.append(
                f"| {c} | "
                + " | ".join(
                    "-" if x is None else f"{x['self_ms']:.0f} ({x['pct']:.0f}%)" for x in cells
                )
                + " |"
            )
        lines.append(
            "| **total** | " + " | ".join(f"{profiles[n]['total_ms']:.0f}" for n in names) + " |"
        )
        lines.append(
            "| GEMM + conv GFLOP (fwd+bwd) | "
            + " | ".join(f"{profiles[n]['gemm_flops'] / 1e9:.1f}" for n in names)
            + " |"
        )
        lines.append(
            "| GEMM floor ms | "
            + " | ".join(
                f"{profiles[n]['gemm_flops'] / (m['gemm_gflops'] * 1e6):.0f}" for n in names
            )
            + " |"
        )
        lines.append("")
    for name, prof in profiles.items():
        lines += [
            f"## Profile: {name} (self CPU time per step, top ops)",
            "",
            "| op | self ms | % | calls |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| `{r['op']}` | {r['self_ms']:.1f} | {r['pct']:.1f} | {r['calls']} |"
            for r in prof["ops"]
        ]
        lines.append("")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="tiny")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--baseline", default="e1cfe95", help="git revision of the committed model")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--profile", action="store_true", help="add per-op profiles of one step")
    p.add_argument("--profile-steps", type=int, default=3, help="steps profiled per model")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument(
        "--clock",
        choices=tuple(CLOCKS),
        default="wall",
        help="wall time, or the CPU time of this process (all its threads)",
    )
    p.add_argument("--machine", default=None)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--tag", default="", help="suffix of the output file names")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.pop("ZEROMAMBA_POISON", None)
    out = args.out or ROOT / "bench" / "results" / "local"
    out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "machine": args.machine or f"{platform.node()} ({os.cpu_count()} CPUs)",
        "commit": git_commit(),
        "baseline": args.baseline,
        "config": args.config,
        "size": args.size,
        "batch": args.batch,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "clock": args.clock,
        "loadavg_start": os.getloadavg()[0],
        "gemm_gflops": gemm_gflops(args.clock),
    }
    ms = models(args.config, args.baseline)
    steps, agree = step_fns(ms, args.size, args.batch)
    r = interleaved(steps, rounds=args.rounds, budget_s=1e9, clock=CLOCKS[args.clock])
    base = [n for n in steps if n != "current"]
    result = {
        "meta": meta,
        "step_ms": r.ms,
        "ratios": {f"{n} / current": r.ratio(n, "current") for n in base},
        "agreement": agree,
    }
    if args.profile:
        result["profiles"] = {n: profile_step(steps[n], args.profile_steps) for n in steps}
    meta["loadavg_end"] = os.getloadavg()[0]
    tag = f"-{args.tag}" if args.tag else ""
    name = f"step-cpu-{args.config}-{args.size}px{tag}"
    (out / f"{name}.json").write_text(json.dumps(finite(result), indent=1))
    table = markdown(result)
    (out / f"{name}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
