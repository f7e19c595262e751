"""Memory traffic of the triton backend's ops at the report's shapes, from interpreter runs at a
scaled-down shape (``triton_traffic``): **modeled, not measured**.

As for the CUDA kernels (``traffic.py``), each op runs at a shape that keeps every per-program
quantity of the real one (the whole map or sequence, N, F, R) and shrinks only the number of
programs: batch and channels (scans) or batch (slp_project). Each launch is then scaled by the
ratio of its program count at the real shape to the emulated one. That is exact when both
launches run the same specialisation on programs of equal work, so the emulated channel count
starts at one and doubles until every launch has the real launch's constexprs (tile sizes,
flags), checked on meta tensors before anything runs. Along a grid axis of more than
``PROGRAMS_PER_AXIS`` programs (the chunks of a long map) only the first, the last and evenly
spaced inner programs run, each weighted by the programs it stands for: exact when the inner
programs do equal work, as the chunks of a scan do.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from . import traffic
from . import triton_kernels as tk
from .triton_traffic import TrafficRecorder, fast_scans, sampled_programs

# programs run per grid axis (first, last and evenly spaced inner ones; see
# triton_traffic.sampled_programs); 0 runs every program
PROGRAMS_PER_AXIS = 8
# the channel-like size an op's emulated shape grows along when specialisations differ
_GROW = {"ss2d_scan": "C", "selective_scan": "d", "slp_project": "A"}


def emulated_shape(op: str, shape: dict, layout: str) -> dict:
    """The smallest shape tried: batch 1 and one channel (16 channel-last, so a position's bf16
    channels fill a sector as at the real C); slp_project keeps every attribute, so its last
    partial attribute tile is the real one."""
    s = dict(shape)
    s["b"] = 1
    if op == "ss2d_scan":
        s["C"] = min(shape["C"], 16 if layout == "channel_last" else 1)
    elif op == "selective_scan":
        s["d"], s["G"] = 1, 1
    return s


def _same(log: list, real: list[dict]) -> bool:
    return len(log) == len(real) and all(
        a.name == b["name"] and constexprs(a) == b["constexprs"] for a, b in zip(log, real)
    )


def matching_shape(op: str, pass_: str, shape: dict, dtype, layout: str, real: list[dict]):
    """The smallest emulated shape whose launches have the real launches' constexprs, growing
    the channel count by doubling (checked on meta tensors: nothing runs)."""
    s = emulated_shape(op, shape, layout)
    grow = _GROW[op]
    while True:
        log = tk.op_launches(op, pass_, tk.meta_inputs(op, s, dtype, layout))
        if _same(log, real):
            return s
        if s[grow] >= shape[grow]:
            raise RuntimeError(
                f"{op} {pass_}: no scaled-down shape up to {s} launches the real shape's "
                f"kernels with the same constexprs ({[ln.name for ln in log]} vs "
                f"{[ln['name'] for ln in real]})"
            )
        s[grow] = min(shape[grow], 2 * s[grow])


def constexprs(launch: tk.Launch) -> dict:
    """The launch's compile-time choices (its ``tl.constexpr`` keyword arguments and launch
    options), as text; runtime scalars (sizes, strides) differ between shapes and don't count."""
    names = _constexpr_names(launch.fn) | {"num_warps", "num_stages"}
    return {k: repr(v) for k, v in launch.kwargs.items() if k in names}


def _constexpr_names(fn) -> set[str]:
    """Parameters of a (jitted or interpreted) Triton kernel annotated ``tl.constexpr``."""
    py = getattr(fn, "fn", fn)
    while hasattr(py, "fn"):
        py = py.fn
    params = inspect.signature(py).parameters.values()
    return {p.name for p in params if "constexpr" in str(p.annotation)}


def real_launch(launch: tk.Launch) -> dict:
    """What the model needs of a launch at the real shape (JSON): name, grid, constexprs."""
    return {
        "name": launch.name,
        "grid": [int(g) for g in launch.grid],
        "constexprs": constexprs(launch),
    }


class _Runner:
    """``wrap(fn)[grid](*args, **kwargs)`` that runs ``fn`` in the interpreter, recording."""

    def __init__(self, recorder: TrafficRecorder, log: list, ttgir, per_axis: int):
        self.recorder, self.log, self.ttgir, self.per_axis = recorder, log, ttgir, per_axis

    def __call__(self, fn):
        return _Launcher(self, fn)


class _Launcher:
    def __init__(self, runner: _Runner, fn):
        self.runner, self.fn = runner, fn

    def __getitem__(self, grid):
        from triton.runtime.interpreter import InterpretedFunction

        if callable(grid):
            raise TypeError("triton_op_traffic: grids given as functions are not supported")
        fn = self.fn
        interp = fn if isinstance(fn, InterpretedFunction) else InterpretedFunction(fn.fn)

        def launch(*args, **kwargs):
            r = self.runner
            index = len(r.log)
            r.log.append(tk.Launch(fn, tuple(grid), args, kwargs))
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            nw = int(kwargs.get("num_warps", 4))
            splits = (int(kwargs["row_programs"]),) if "row_programs" in kwargs else ()
            with (
                r.recorder.launch(fn, grid, nw, tensors, r.ttgir(index, fn)),
                # the scans' row programs come first, their column programs after them
                sampled_programs(grid, r.per_axis, r.recorder, splits) as sample,
            ):
                interp[sample](*args, **kwargs)

        return launch


def run_emulated(
    op: str, pass_: str, emu: dict, dtype, layout: str, ttgir, per_axis: int = PROGRAMS_PER_AXIS
) -> tuple[list, list]:
    """(launches, LaunchTraffic per launch) of one op pass run in the interpreter at ``emu``;
    ``ttgir(index, fn)`` gives the TTGIR of the index-th launch (None: default layouts)."""
    inputs = traffic.emulator_inputs(op, pass_, emu, dtype, layout)
    inputs.setdefault("channel_last", layout == "channel_last")
    rec, log = TrafficRecorder(), []
    with tk.launching(_Runner(rec, log, ttgir, per_axis)), fast_scans():
        tk.call_op(op, pass_, inputs)
    return log, rec.launches


def triton_traffic(
    op: str,
    pass_: str,
    shape: dict,
    dtype,
    layout: str,
    real: list[dict],
    ttgir: list[str],
    per_axis: int = PROGRAMS_PER_AXIS,
) -> dict:
    """Per-launch traffic of the triton backend at ``shape``; runs kernels, so the process must
    have TRITON_INTERPRET=1 set before triton was imported (see :func:`triton_traffic_batch`).
    ``real``: ``real_launch`` of each launch at the real shape; ``ttgir``: each one's TTGIR.

    Returns {"emulated_shape", "launches": [{"kernel", "grid", "scale", requests, sectors,
    ideal_sectors, lines, bytes_l2, atomics (scaled), "kinds", "sites" (emulated shape),
    "approximated"}]}."""
    emu = matching_shape(op, pass_, shape, dtype, layout, real)

    def ttgir_of(index, fn):
        if index < len(real) and real[index]["name"] == getattr(fn, "__name__", ""):
            return ttgir[index]
        return None

    log, counts = run_emulated(op, pass_, emu, dtype, layout, ttgir_of, per_axis)
    if not _same(log, real):
        raise RuntimeError(f"{op} {pass_}: the interpreter run at {emu} launched other kernels")
    rows = []
    for ln, c, r in zip(log, counts, real):
        f = tk.Launch(None, tuple(r["grid"]), (), {}).programs / ln.programs
        d = c.as_dict()
        row = {"kernel": d["kernel"], "grid": r["grid"], "scale": f}
        for k in ("requests", "sectors", "ideal_sectors", "lines", "bytes_l2", "atomics"):
            row[k] = d[k] * f
        row.update(kinds=d["kinds"], sites=d["sites"], approximated=d["approximated"])
        rows.append(row)
    return {"emulated_shape": emu, "launches": rows}


def triton_traffic_batch(jobs: list[dict], timeout: float = 3600) -> list[dict]:
    """``triton_traffic`` of each job ({"op", "pass", "shape", "layout", "real", "ttgir"}) in one
    child process with TRITON_INTERPRET=1 (the interpreter must be on before triton is imported,
    while the sm_90 compiles need it off)."""
    with tempfile.TemporaryDirectory(prefix="triton_traffic_") as tmp:
        src, dst = Path(tmp) / "jobs.json", Path(tmp) / "traffic.json"
        src.write_text(json.dumps(jobs))
        env = {**os.environ, "TRITON_INTERPRET": "1"}
        bench = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join([bench, *filter(None, [env.get("PYTHONPATH")])])
        r = subprocess.run(
            [sys.executable, "-m", "kernel_static.triton_op_traffic", str(src), str(dst)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if r.returncode != 0:
            raise RuntimeError(f"triton traffic model failed:\n{r.stderr[-4000:]}")
        return json.loads(dst.read_text())


def _main(argv: list[str]) -> int:
    jobs = json.loads(Path(argv[0]).read_text())
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    out = []
    for j in jobs:
        out.append(
            triton_traffic(
                j["op"], j["pass"], j["shape"], dtypes[j.get("dtype", "bf16")], j["layout"],
                j["real"], j["ttgir"], j.get("per_axis", PROGRAMS_PER_AXIS),
            )
        )  # fmt: skip
    Path(argv[1]).write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
