#!/usr/bin/env python
"""The CPU training step, today's model against a committed one: interleaved step times and the
per-op profile.

A step is ``zsl_loss(model(images), labels, class_att, 1.0).backward()`` (CUB's 312 attributes,
as ``bench_model.py``). Three models with the same weights run interleaved (ours, committed
unfused, committed fused, ours, ...):

* ``current``: this tree's ZeroMamba (channel-last backbone, fused ss2d_scan);
* ``<rev> unfused`` and ``<rev> fused``: the backbone code of git revision ``--baseline``
  (``zeromamba/models/vmamba.py`` at that commit, loaded from git), with this tree's ops.

The ratios are medians over rounds of baseline / current with their min-max. ``--profile`` adds
a torch.profiler table of one step per model (self CPU time by op, top rows) for the configs
given. Writes ``<out>/step-cpu.json`` and ``.md``.

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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: the bench package sits next to zeromamba
    sys.path.insert(0, str(ROOT))

import torch

from bench.report import finite, git_commit
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


def profile_table(step, rows: int = 25) -> list[dict]:
    """Self CPU time by op over one step (after a warm-up step)."""
    from torch.profiler import ProfilerActivity, profile

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return [
        {
            "op": e.key,
            "self_ms": e.self_cpu_time_total / 1e3,
            "pct": 100 * e.self_cpu_time_total / total,
            "calls": e.count,
        }
        for e in events[:rows]
    ]


def markdown(result: dict) -> str:
    m = result["meta"]
    lines = [
        f"# CPU training step: {m['config']} {m['size']} px, b={m['batch']}",
        "",
        (
            f"{m['date']}, {m['machine']}, commit {m['commit']} against the backbone of "
            f"{m['baseline']}, torch {m['torch']}, {m['threads']} threads, 1-min load average "
            f"{m['loadavg_start']:.1f} at the start, {m['loadavg_end']:.1f} at the end."
        ),
        "",
        "| model | median step s | min-max s |",
        "|---|---|---|",
    ]
    for name, ms in result["step_ms"].items():
        s = sorted(ms)
        lines.append(
            f"| {name} | {s[len(s) // 2] / 1e3:.3g} | {s[0] / 1e3:.3g}-{s[-1] / 1e3:.3g} |"
        )
    lines += [
        "",
        "| ratio (interleaved, per round) | median | min-max | rounds |",
        "|---|---|---|---|",
    ]
    for name, r in result["ratios"].items():
        lines.append(
            f"| {name} | {r['median']:.3g}x | {r['min']:.3g}-{r['max']:.3g} | {r['rounds']} |"
        )
    lines += [
        "",
        "Outputs agree (eval mode, rel. error to the first model): "
        + ", ".join(f"{k} {v:.1e}" for k, v in result["agreement"].items()),
        "",
    ]
    for name, table in result.get("profiles", {}).items():
        lines += [
            f"## Profile: {name} (self CPU time of one step, top ops)",
            "",
            "| op | self ms | % | calls |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| `{r['op']}` | {r['self_ms']:.1f} | {r['pct']:.1f} | {r['calls']} |" for r in table
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
    p.add_argument("--machine", default=None)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--tag", default="", help="suffix of the output file names")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.pop("ZEROMAMBA_POISON", None)
    out = args.out or ROOT / "bench" / "results" / "local"
    out.mkdir(parents=True, exist_ok=True)
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
        "loadavg_start": os.getloadavg()[0],
    }
    ms = models(args.config, args.baseline)
    steps, agree = step_fns(ms, args.size, args.batch)
    r = interleaved(steps, rounds=args.rounds, budget_s=1e9)
    base = [n for n in steps if n != "current"]
    result = {
        "meta": meta,
        "step_ms": r.ms,
        "ratios": {f"{n} / current": r.ratio(n, "current") for n in base},
        "agreement": agree,
    }
    if args.profile:
        result["profiles"] = {n: profile_table(steps[n]) for n in steps}
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
