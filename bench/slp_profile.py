"""The SLP projection on CPU against its einsum form: the matrix products each runs (shapes,
time, GFLOP/s, from the profiler), the time outside them, the activation memory, and the bound
that the product counts put on the fwd+bwd ratio.

The fused form keeps neither the (b, A, R) scores nor the pooled (b, A, F) tensor, so its
backward recomputes the scores: 8 products of the size of one score GEMM (A x F x b R) against
the einsum form's 6. ``floor 8`` and ``floor 6`` time exactly those products as the largest
GEMMs they can be (q1 and q2 stacked, the batch folded into the columns); einsum / floor 8 is
the most any kernel with the fused form's memory could reach against the einsum form here.

    python bench/slp_profile.py --threads 1 --rounds 7 --machine "..." --out DIR
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench.cases import CPU_SLP
from bench.memory import memory
from bench.report import finite, git_commit, ratio_rows
from bench.timing import interleaved
from zeromamba import ops, reference
from zeromamba.testing import slp_inputs

GEMMS = ("aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm")


def gemm_flops(op: str, shapes: list) -> int:
    """FLOPs of one call from the profiler's input shapes (out= / in-place forms included)."""
    if op == "aten::bmm":
        (bs, m, k), (_, _, n) = shapes[0], shapes[1]
        return 2 * bs * m * k * n
    if op == "aten::mm":
        (m, k), (_, n) = shapes[0], shapes[1]
        return 2 * m * k * n
    (m, k), (_, n) = shapes[1][-2:], shapes[2][-2:]  # addmm(self, mat1, mat2), baddbmm alike
    return 2 * m * k * n * (shapes[1][0] if len(shapes[1]) == 3 else 1)


def profile(step, steps: int = 3) -> dict:
    """Self time per step of the products (by op and shapes) and of everything else. The
    profiler's times are wall-clock, which load inflates: they are scaled to the process's CPU
    time over the profiled steps (on one thread, the time the step itself ran)."""
    from torch.profiler import ProfilerActivity, profile

    step()
    cpu0 = time.process_time()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            step()
    cpu_ms = (time.process_time() - cpu0) * 1e3 / steps
    events = prof.key_averages(group_by_input_shape=True)
    scale = cpu_ms / max(sum(e.self_cpu_time_total for e in events) / 1e3 / steps, 1e-9)
    rows = []
    for e in events:
        if e.key not in GEMMS:
            continue
        shapes = [s for s in e.input_shapes if s]
        ms = e.self_cpu_time_total / 1e3 / steps * scale
        flops = gemm_flops(e.key, shapes) * e.count // steps
        rows.append(
            {
                "op": e.key,
                "shapes": shapes[:3],
                "calls": e.count // steps,
                "self_ms": ms,
                "gflop": flops / 1e9,
                "gflops": flops / 1e6 / max(ms, 1e-9),
            }
        )
    rows.sort(key=lambda r: -r["self_ms"])
    gemm_ms = sum(r["self_ms"] for r in rows)
    return {
        "total_ms": cpu_ms,
        "gemm_ms": gemm_ms,
        "other_ms": cpu_ms - gemm_ms,
        "gflop": sum(r["gflop"] for r in rows),
        "gemms": rows,
    }


def product_floors(feat: torch.Tensor, q1: torch.Tensor, q2: torch.Tensor):
    """The 8 (fused) and 6 (einsum) score-sized products as 4 and 3 large GEMMs."""
    b, F, R = feat.shape
    fp = feat.detach().permute(1, 0, 2).reshape(F, b * R)  # the einsum form's own layout
    Q = torch.cat([q1, q2]).detach()  # (2A, F)
    S = torch.empty(Q.shape[0], b * R)
    dQ, dfp = torch.empty_like(Q), torch.empty_like(fp)

    def floor8():  # forward scores; backward: scores again, d q, d feat
        torch.mm(Q, fp, out=S)
        torch.mm(Q, fp, out=S)
        torch.mm(S, fp.t(), out=dQ)
        torch.mm(Q.t(), S, out=dfp)

    def floor6():
        torch.mm(Q, fp, out=S)
        torch.mm(S, fp.t(), out=dQ)
        torch.mm(Q.t(), S, out=dfp)

    return floor8, floor6


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    b, A, F, R = CPU_SLP[0]
    i = slp_inputs(b, A, F, R, torch.float32, "cpu")
    feat, q1, q2 = (i[k].detach().requires_grad_(True) for k in ("feat", "q1", "q2"))
    dy = torch.randn(b, A, generator=torch.Generator().manual_seed(7))
    sides = {
        "ours": lambda *a: ops.slp_project(*a, backend="cpu"),
        "einsum": reference.slp_project,
    }

    def step(fn):
        return lambda: torch.autograd.grad(fn(feat, q1, q2), (feat, q1, q2), dy)

    floor8, floor6 = product_floors(feat, q1, q2)
    load0 = os.getloadavg()[0]
    r = interleaved(
        {
            "ours": step(sides["ours"]),
            "einsum": step(sides["einsum"]),
            "floor 8": floor8,
            "floor 6": floor6,
        },
        rounds=args.rounds,
        budget_s=1e9,
        clock=clock,
    )
    return {
        "date": datetime.date.today().isoformat(),
        "machine": args.machine,
        "commit": git_commit(),
        "torch": torch.__version__,
        "threads": args.threads,
        "clock": args.clock,
        "shape": {"b": b, "A": A, "F": F, "R": R},
        "loadavg_start": load0,
        "loadavg_end": r.loadavg,
        "median_ms": {k: r.median_ms(k) for k in r.ms},
        "ratios": {
            "einsum / ours": r.ratio("einsum", "ours"),
            "floor 8 / ours": r.ratio("floor 8", "ours"),
            "einsum / floor 8 (the bound)": r.ratio("einsum", "floor 8"),
            "einsum / floor 6": r.ratio("einsum", "floor 6"),
        },
        "profiles": {k: profile(step(fn)) for k, fn in sides.items()},
        "memory": {k: memory(fn, (feat, q1, q2), dy) for k, fn in sides.items()},
    }


def _facts(res: dict) -> str:
    """One sentence: when, where, which code, how it was timed and under what load."""
    return (
        f"{res['date']}, {res['machine']}, commit {res['commit']}, torch {res['torch']}, "
        f"{res['threads']} threads, {res['clock']} time, 1-min load average "
        f"{res['loadavg_start']:.1f} at the start, {res['loadavg_end']:.1f} at the end."
    )


def markdown(res: dict) -> str:
    s = res["shape"]
    title = f"# SLP fwd+bwd on CPU: b={s['b']} A={s['A']} F={s['F']} R={s['R']}, fp32"
    out = [title, "", _facts(res), "", *ratio_rows(res["ratios"], "interleaved (per round)")]
    out += [
        "",
        "Median ms: " + ", ".join(f"{k} {v:.1f}" for k, v in res["median_ms"].items()),
        "",
        "| form | fwd peak MB | saved MB |",
        "|---|---|---|",
    ]
    for k, m in res["memory"].items():
        out.append(f"| {k} | {m['fwd_peak'] / 2**20:.2f} | {m['saved'] / 2**20:.2f} |")
    for k, p in res["profiles"].items():
        out += [
            "",
            f"## {k}: self time per fwd+bwd (profiled over 3 steps, scaled to CPU time)",
            "",
            (
                f"Total {p['total_ms']:.1f} ms: products {p['gemm_ms']:.1f} ms "
                f"({p['gflop']:.2f} GFLOP), everything else {p['other_ms']:.1f} ms."
            ),
            "",
            "| op | input shapes | calls | ms | GFLOP | GFLOP/s |",
            "|---|---|---|---|---|---|",
        ]
        for g in p["gemms"]:
            out.append(
                f"| `{g['op']}` | {g['shapes']} | {g['calls']} | {g['self_ms']:.1f} | "
                f"{g['gflop']:.2f} | {g['gflops']:.0f} |"
            )
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--machine", default="unnamed machine")
    p.add_argument("--tag", default="")
    p.add_argument("--out", type=Path, default=Path("."))
    args = p.parse_args(argv)
    res = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"slp-cpu-{args.threads}thread-{args.clock}" + (f"-{args.tag}" if args.tag else "")
    (args.out / f"{stem}.json").write_text(json.dumps(finite(res), indent=1) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
