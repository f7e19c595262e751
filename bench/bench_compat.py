"""Speed-ups of the three "Use it in your code" recipes (README), measured interleaved.

Each recipe is timed against what its user runs without zeromamba, in alternation (ours, peer,
ours, peer, ...) so that load changes on a shared machine hit both sides alike; the result is
the median of the per-pair ratios peer / ours with their min and max.

1. mamba_ssm user: ``compat.mamba.selective_scan_fn`` (z gating, last state) against the
   per-step PyTorch loop that is mamba_ssm's path without CUDA (``selective_scan_ref``'s
   algorithm; here our ``reference`` backend).
2. VMamba user: a VMamba-T model after ``patch_vssm`` against VMamba's own flow with a PyTorch
   loop scan (its CPU path; here our model's ``"unfused"`` pipeline on the ``reference`` backend,
   which has VMamba's parameter names and data flow).
3. Our own model: ``vssm("tiny")`` fused against the same model unfused on the same kernels.

    python bench/bench_compat.py --out bench/results/<date>-cpu-2core --pairs 7
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from zeromamba.compat import mamba, vmamba
from zeromamba.models import vssm


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(ours, peer, pairs: int) -> dict:
    ours(), peer()  # warm-up
    t_ours, t_peer = [], []
    for _ in range(pairs):
        t_ours.append(_time(ours))
        t_peer.append(_time(peer))
    ratios = [p / o for o, p in zip(t_ours, t_peer)]
    return {
        "ours_s": statistics.median(t_ours),
        "peer_s": statistics.median(t_peer),
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "pairs": pairs,
    }


def mamba_case(pairs: int) -> dict:
    b, d, L, N = 1, 768, 256, 16
    g = torch.Generator().manual_seed(0)
    u, delta, z = (torch.randn(b, d, L, generator=g, requires_grad=True) for _ in range(3))
    A = -torch.rand(d, N, generator=g) - 0.5
    B, C = (torch.randn(b, N, L, generator=g, requires_grad=True) for _ in range(2))
    D, bias = torch.ones(d), torch.zeros(d)

    def step(backend):
        def run():
            out, last = mamba.selective_scan_fn(
                u, delta, A, B, C, D, z, bias, True, True, backend=backend
            )
            (out.sum() + last.sum()).backward()

        return run

    res = interleaved(step(None), step("reference"), pairs)
    res["what"] = f"selective_scan_fn fwd+bwd, z + last state, b={b} d={d} L={L} N={N}"
    return res


def model_step(model, images):
    def run():
        model.zero_grad(set_to_none=True)
        model(images)[1].sum().backward()

    return run


def vmamba_case(pairs: int, px: int) -> dict:
    torch.manual_seed(0)
    images = torch.randn(2, 3, px, px)
    peer = vssm("tiny", pipeline="unfused", backend="reference")
    ours = vssm("tiny", pipeline="unfused")
    ours.load_state_dict(peer.state_dict())
    vmamba.patch_vssm(ours)
    res = interleaved(model_step(ours, images), model_step(peer, images), pairs)
    res["what"] = (
        f"VMamba-T train step (fwd+bwd), b=2, {px} px: patched vs VMamba flow + torch loop"
    )
    return res


def own_case(pairs: int, px: int) -> dict:
    torch.manual_seed(0)
    images = torch.randn(2, 3, px, px)
    fused = vssm("tiny")
    unfused = vssm("tiny", pipeline="unfused")
    unfused.load_state_dict(fused.state_dict())
    res = interleaved(model_step(fused, images), model_step(unfused, images), pairs)
    res["what"] = f"vssm('tiny') train step, b=2, {px} px: fused vs unfused, same cpu kernels"
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--pairs", type=int, default=7)
    ap.add_argument("--px", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = {
        "machine": "2-core shared CPU dev box (other jobs running)",
        "cpu": platform.processor() or platform.machine(),
        "threads": args.threads,
        "torch": torch.__version__,
        "cases": {
            "mamba_ssm user": mamba_case(args.pairs),
            "VMamba user": vmamba_case(args.pairs, args.px),
            "own model": own_case(args.pairs, args.px),
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compat-cpu.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        f"# compat recipes, CPU ({results['machine']}, {args.threads} threads, fp32)",
        "",
        "| recipe | what | ours | peer | peer / ours, median [min, max] |",
        "|---|---|---|---|---|",
    ]
    for name, r in results["cases"].items():
        lines.append(
            f"| {name} | {r['what']} | {r['ours_s'] * 1e3:.0f} ms | {r['peer_s'] * 1e3:.0f} ms "
            f"| {r['ratio_median']:.1f}x [{r['ratio_min']:.1f}, {r['ratio_max']:.1f}], "
            f"{r['pairs']} pairs |"
        )
    (args.out / "compat-cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
