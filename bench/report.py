"""Reports of the op benchmarks: the target ratios, the markdown table with its footnotes, the
run's metadata (commit, load) and strict JSON."""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path

from bench.cases import CPU_STAGE1, QUICK_SS2D, ss2d_case

ROOT = Path(__file__).resolve().parent.parent


def _find(
    rows: list[dict], suite: str, impl: str, mode: str, key: str = "ms", case: str | None = None
) -> float | None:
    """The first measured ``key`` of (suite, impl, mode), in ``case`` when given."""
    for r in rows:
        if (
            (r["suite"], r["impl"], r["mode"]) == (suite, impl, mode)
            and key in r
            and case in (None, r["case"])
        ):
            return r[key]
    return None


def key_ratios(
    device: str, rows: list[dict], quick: bool, interleaved: list[dict] | None = None
) -> list[dict]:
    """The ratios the performance targets are set on (value None when a side was not measured);
    on CPU the speed ratios come from ``interleaved`` (median and min-max over rounds)."""
    out = []

    def add(name, num, den, target, cmp=">="):
        value = num / den if num is not None and den else None
        out.append({"name": name, "value": value, "target": target, "cmp": cmp})

    if device == "cpu":
        # Speed ratios: medians of interleaved rounds (see interleaved_ratios in bench_ops.py).
        for e in interleaved or []:
            out.append(
                {k: e[k] for k in ("name", "target", "cmp")}
                | {"value": e["median"], "spread": [e["min"], e["max"]], "loadavg": e["loadavg"]}
            )
        stage1 = ss2d_case(*(QUICK_SS2D[0] if quick else CPU_STAGE1))
        add(
            f"ss2d fwd+bwd {stage1}: reference / cpu (separate medians)",
            _find(rows, "ss2d_scan", "reference", "fwd+bwd", case=stage1),
            _find(rows, "ss2d_scan", "cpu", "fwd+bwd", case=stage1),
            100,
        )
        add(
            "slp peak activation memory (fwd peak): einsum / cpu",
            _find(rows, "slp_project", "einsum", "fwd", "fwd_peak"),
            _find(rows, "slp_project", "cpu", "fwd", "fwd_peak"),
            10,
        )
        add(
            "slp activations saved for backward: einsum / cpu",
            _find(rows, "slp_project", "einsum", "fwd", "saved"),
            _find(rows, "slp_project", "cpu", "fwd", "saved"),
            10,
        )
        return out
    for case in dict.fromkeys(r["case"] for r in rows if r["suite"] == "ss2d_scan"):
        label = case.split(":")[0]
        for n in ("cuda", "triton"):
            add(
                f"ss2d fwd+bwd {label}: unfused-{n} / {n}",
                _find(rows, "ss2d_scan", f"unfused-{n}", "fwd+bwd", case=case),
                _find(rows, "ss2d_scan", n, "fwd+bwd", case=case),
                3,
            )
            out.append(
                {
                    "name": f"ss2d fwd+bwd {label}: {n} % of copy bandwidth",
                    "value": _find(rows, "ss2d_scan", n, "fwd+bwd", "pct_copy", case),
                    "target": 70,
                    "cmp": ">=",
                }
            )
        add(
            f"ss2d fwd+bwd {label}: triton / cuda",
            _find(rows, "ss2d_scan", "triton", "fwd+bwd", case=case),
            _find(rows, "ss2d_scan", "cuda", "fwd+bwd", case=case),
            1.5,
            "<=",
        )
    for n in ("cuda", "triton"):
        add(
            f"slp fwd+bwd time: einsum / {n}",
            _find(rows, "slp_project", "einsum", "fwd+bwd"),
            _find(rows, "slp_project", n, "fwd+bwd"),
            2,
        )
        add(
            f"slp peak activation memory (fwd peak): einsum / {n}",
            _find(rows, "slp_project", "einsum", "fwd", "fwd_peak"),
            _find(rows, "slp_project", n, "fwd", "fwd_peak"),
            10,
        )
        add(
            f"slp activations saved for backward: einsum / {n}",
            _find(rows, "slp_project", "einsum", "fwd", "saved"),
            _find(rows, "slp_project", n, "fwd", "saved"),
            10,
        )
    return out


def meets(k: dict) -> bool:
    """Whether a key ratio meets its target."""
    return k["value"] >= k["target"] if k["cmp"] == ">=" else k["value"] <= k["target"]


def interleaved_table(entries: list[dict]) -> list[str]:
    """Markdown lines: every interleaved comparison, its per-impl median ms and ratio spread."""
    if not entries:
        return []
    lines = [
        "## Interleaved comparisons",
        "",
        "| comparison | median ms (num / den) | ratio median | p25-p75 | min-max | rounds | load |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        num, den = e["ms"].values()
        lines.append(
            f"| {e['name']} | {num:.4g} / {den:.4g} | {e['median']:.3g} | "
            f"{e['p25']:.3g}-{e['p75']:.3g} | {e['min']:.3g}-{e['max']:.3g} | {e['rounds']} | "
            f"{e['loadavg']:.1f} |"
        )
    return [*lines, ""]


def ratio_rows(ratios: dict[str, dict], head: str) -> list[str]:
    """Markdown table of interleaved ratios: median, min-max and rounds, one row per ratio."""
    lines = [f"| {head} | median | min-max | rounds |", "|---|---|---|---|"]
    for name, r in ratios.items():
        lines.append(
            f"| {name} | {r['median']:.3g}x | {r['min']:.3g}-{r['max']:.3g} | {r['rounds']} |"
        )
    return lines


def _ms(r: dict | None) -> str:
    if r is None:
        return ""
    if "error" in r:
        return "error"
    if "skipped" in r:
        return "skipped"
    if "ms" not in r:
        return ""
    tail = " (1 run)" if r.get("runs") == 1 else ""
    return f"{r['ms']:.3g}{tail}"


def _mb(n: int | None) -> str:
    return "" if n is None else f"{n / 2**20:.3g}"


def markdown(result: dict) -> str:
    meta, rows = result["meta"], result["rows"]
    device = meta["device"]
    lines = [
        f"# Op benchmarks, {device}: {meta['machine']}",
        "",
        f"{meta['date']}, commit {meta['commit']} (extension built "
        f"{meta.get('extension_built', '?')}), torch {meta['torch']}"
        + (f", triton {meta['triton']}" if meta.get("triton") else "")
        + f", {meta['threads']} threads"
        + (", --quick sizes" if meta["quick"] else "")
        + (
            f", 1-min load average {meta['loadavg_start']:.1f} at the start, "
            f"{meta['loadavg_end']:.1f} at the end"
            if "loadavg_end" in meta
            else ""
        )
        + (" (PARTIAL: the run did not finish)" if meta.get("partial") else ""),
        "",
    ]
    modes = ["fwd", "bwd", "fwd+bwd"] if device == "cuda" else ["fwd", "fwd+bwd"]
    for suite in dict.fromkeys(r["suite"] for r in rows):
        srows = [r for r in rows if r["suite"] == suite]
        gbps = any("gbps" in r for r in srows) and device == "cuda"
        head = ["case", "impl"] + [f"{m} ms" for m in modes]
        if gbps:
            head += ["fwd+bwd GB/s", "% copy"]
        head += [
            "fwd peak MB",
            "saved MB",
            "fwd+bwd peak MB",
            "fwd+bwd / first row",
            "fwd rel diff to first row",
        ]
        lines += [
            f"## {suite} ({srows[0]['dtype']})",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
        ]
        for case in dict.fromkeys(r["case"] for r in srows):
            crows = [r for r in srows if r["case"] == case]
            first = None
            for impl in dict.fromkeys(r["impl"] for r in crows):
                by_mode = {r["mode"]: r for r in crows if r["impl"] == impl}
                full = by_mode.get("fwd+bwd", {}).get("ms")
                first = full if first is None else first
                fwd = by_mode.get("fwd", {})
                cells = [case, impl] + [_ms(by_mode.get(m)) for m in modes]
                if gbps:
                    fb = by_mode.get("fwd+bwd", {})
                    cells += [
                        f"{fb['gbps']:.0f}" if "gbps" in fb else "",
                        f"{fb['pct_copy']:.0f}%" if "pct_copy" in fb else "",
                    ]
                diff = next((v for k, v in fwd.items() if k.startswith("rel_diff_vs_")), None)
                cells += [
                    _mb(fwd.get("fwd_peak")),
                    _mb(fwd.get("saved")),
                    _mb(fwd.get("step_peak")),
                    f"{full / first:.3g}x" if full and first else "",
                    "" if diff is None else f"{diff:.1e}",
                ]
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "## Key ratios",
        "",
        "| ratio | measured (median) | spread (min-max) | target | met |",
        "|---|---|---|---|---|",
    ]
    for k in result["ratios"]:
        unit = "%" if "% of copy" in k["name"] else "x"
        v = "not measured" if k["value"] is None else f"{k['value']:.3g}{unit}"
        spread = "-".join(f"{x:.3g}" for x in k["spread"]) if k.get("spread") else ""
        met = "" if k["value"] is None else ("yes" if meets(k) else "**no**")
        lines.append(f"| {k['name']} | {v} | {spread} | {k['cmp']} {k['target']}{unit} | {met} |")
    lines.append("")
    lines += interleaved_table(result.get("interleaved", []))
    problems = [r for r in rows if "error" in r or "memory_error" in r]
    for r in problems:
        lines.append(
            f"- error: {r['suite']} {r['case']} {r['impl']} {r['mode']}: "
            f"{r.get('error') or r.get('memory_error')}"
        )
    for c in meta["checks"]:
        what = f"{c['op']} {c['impl']} vs reference"
        lines.append(
            f"- check: {what}: "
            + (
                f"max rel err {c['max_rel_err']:.2e} "
                f"({c['dtype']}, shape {c['shape']}, output and "
                "all gradients)"
                if "error" not in c
                else c["error"]
            )
        )
    lines += [f"- {n}" for n in meta["notes"]]
    lines += ["", *(f"{i}. {n}" for i, n in enumerate(FOOTNOTES[device], 1)), ""]
    return "\n".join(lines)


FOOTNOTES = {
    "cpu": [
        (
            "Times: median (ms) of torch.utils.benchmark blocked_autorange after one warm-up run, "
            "all cores; a case whose warm-up took over 10 s (the reference loop at large L) is timed "
            "from one run after the warm-up, marked (1 run). fwd runs with autograd recording; "
            "fwd+bwd is the forward plus torch.autograd.grad w.r.t. every input (ss2d: x, delta, "
            "A, B, C, D, delta_bias)."
        ),
        (
            "Memory: the profiler's CPU allocation events (torch.profiler, profile_memory=True) "
            "replayed in time order, bytes above what was live before the step. fwd peak: "
            "high-water mark of the forward; saved: still allocated after it (output + tensors "
            "saved for backward); fwd+bwd peak: over the whole step, the returned gradients "
            'included. "Peak activation memory" in the ratios is the fwd peak.'
        ),
        (
            "mambapy: x cross-scanned with torch views (flip/transpose), then dA = exp(dt A) and "
            "dt B u for the four orders as one (b, L, 4C, N) scan by mambapy.pscan (which pads L to "
            "a power of two), contracted with C, + D u, merged. delta, B, C are handed to it already "
            "in scan order and in its (b, L, .) layout, as VMamba's unfused SS2D produces them: "
            "that layout work is not timed. Checked against zeromamba.reference (fp64, output and "
            "gradients) before timing."
        ),
        "einsum: zeromamba.reference.slp_project (two einsums, softmax over R, product, sum).",
        (
            "Key ratios and interleaved comparisons: both sides run once per round, alternating, "
            "in one loop after a warm-up; the ratio is the median over rounds of the per-round "
            "ratio, with its quartiles and min-max, and the 1-min load average at the loop's end. "
            "fwd runs without autograd, bwd is torch.autograd.grad on a retained graph. floor: "
            "torch.exp over (1 + N) and torch.log1p over 1 value per (batch, direction, channel, "
            "step), into preallocated outputs. N=16 per state: the N = 16 backward time / 16 "
            "over the N = 1 backward time."
        ),
    ],
    "cuda": [
        (
            "Times: triton.testing.do_bench median (ms) with warm-up, p20/p80 in the JSON. fwd runs "
            "with autograd recording; bwd is torch.autograd.grad w.r.t. every input on a retained "
            "graph; fwd+bwd both."
        ),
        (
            "GB/s: ss2d_min_bytes (bench/byte_model.py): forward reads x, delta, B, C once and writes y; "
            "backward reads dy, x, delta, B, C and writes dx, ddelta, dB, dC; A, D, delta_bias not "
            "counted. % copy: of a 1 GiB device-to-device torch copy measured in the same run "
            "(read + write bytes)."
        ),
        (
            "unfused-<backend>: ops.cross_scan -> ops.selective_scan (same backend, fp32 out) -> "
            "ops.cross_merge; delta, B, C handed to it already in scan order (as VMamba's unfused "
            "SS2D has them), untimed."
        ),
        (
            "Memory: torch.cuda.max_memory_allocated / memory_allocated above the step's start. "
            "fwd peak: high-water mark of the forward; saved: allocated after it; fwd+bwd peak: "
            "over the step, returned gradients included."
        ),
        "einsum: zeromamba.reference.slp_project.",
    ],
}


def _git(*cmd: str) -> str | None:
    try:
        return subprocess.run(
            ["git", *cmd], cwd=ROOT, text=True, capture_output=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def git_commit() -> str:
    """Short commit, "+dirty" when the tree has uncommitted changes (untracked files too);
    $ZEROMAMBA_COMMIT where the copy has no git metadata."""
    commit = _git("rev-parse", "--short", "HEAD")
    if commit is None:
        return os.environ.get("ZEROMAMBA_COMMIT", "unknown")
    return commit + ("+dirty" if _git("status", "--porcelain") else "")


def finite(o):
    """The result with non-finite floats (a NaN error, say) as strings: strict JSON."""
    if isinstance(o, dict):
        return {k: finite(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [finite(v) for v in o]
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    return o
