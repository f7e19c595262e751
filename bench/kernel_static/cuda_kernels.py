"""Every ``__global__`` instantiation of ``csrc/cuda`` compiled for sm_90, with its resources and
SASS figures.

Each ``.cu`` is compiled alone with nvcc and the flags setup.py uses (``-O3 --use_fast_math
-lineinfo --expt-relaxed-constexpr -std=c++17``), for ``sm_90`` only, plus ``-Xptxas -v`` for the
spill counts. Registers, stack and shared memory come from ``cuobjdump --dump-resource-usage`` of
the same object; ptxas' register count must agree with it (checked). Objects are cached under
``build/kernel_report/<hash of sources and flags>/``.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import sass
from .occupancy import occupancy

ROOT = Path(__file__).resolve().parents[2]
CUDA_DIR = ROOT / "csrc" / "cuda"
NVCC_FLAGS = ("-O3", "--use_fast_math", "-lineinfo", "--expt-relaxed-constexpr", "-std=c++17")
ARCH = ("-gencode", "arch=compute_90,code=sm_90")


@dataclass
class CompiledObject:
    source: Path
    obj: Path
    resources: dict[str, sass.Resources]
    ptxas: dict[str, sass.PtxasInfo]
    code: dict[str, list[sass.Instr]]


def _key(sources: list[Path], flags: tuple[str, ...]) -> str:
    h = hashlib.sha256(" ".join(flags).encode())
    for p in sorted(CUDA_DIR.glob("*")):
        if p.suffix in (".cu", ".cuh", ".h"):
            h.update(p.name.encode())
            h.update(p.read_bytes())
    for s in sources:
        h.update(str(s).encode())
        h.update(s.read_bytes())
    return h.hexdigest()[:16]


def compile_object(source: Path, out_dir: Path, nvcc: str = "nvcc", extra: tuple = ()) -> Path:
    """nvcc -c ``source`` for sm_90 into ``out_dir``; writes ``<stem>.ptxas.txt`` (ptxas -v)."""
    obj = out_dir / (source.stem + ".o")
    log = out_dir / (source.stem + ".ptxas.txt")
    if obj.exists() and log.exists():
        return obj
    cmd = [nvcc, "-c", *NVCC_FLAGS, *ARCH, "-Xptxas", "-v", *extra]
    cmd += ["-I", str(source.parent), str(source), "-o", str(obj) + ".tmp"]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"nvcc failed on {source}:\n{r.stderr[-4000:]}")
    log.write_text(r.stderr)
    Path(str(obj) + ".tmp").rename(obj)
    return obj


def read_object(source: Path, obj: Path) -> CompiledObject:
    usage, code = sass.cuobjdump(obj)
    log = obj.with_suffix(".ptxas.txt").read_text()
    return CompiledObject(
        source,
        obj,
        sass.parse_resource_usage(usage),
        sass.parse_ptxas_verbose(log),
        sass.parse_sass(code),
    )


def compile_all(
    build_dir: Path | None = None, nvcc: str = "nvcc", sources: list[Path] | None = None
) -> list[CompiledObject]:
    """Every ``csrc/cuda/*.cu`` (or ``sources``) compiled in parallel and read back."""
    sources = sorted(CUDA_DIR.glob("*.cu")) if sources is None else list(sources)
    out = (build_dir or ROOT / "build" / "kernel_report") / _key(sources, NVCC_FLAGS + ARCH)
    out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(len(sources)) as pool:
        objs = list(pool.map(lambda s: compile_object(s, out, nvcc), sources))
    return [read_object(s, o) for s, o in zip(sources, objs)]


# --------------------------------------------------------------------------- kernel records


def demangle(names: list[str]) -> dict[str, str]:
    """Mangled -> readable names (c++filt), identity where it is missing."""
    try:
        r = subprocess.run(
            ["c++filt"], input="\n".join(names), capture_output=True, text=True, check=False
        )
        out = r.stdout.splitlines()
        if r.returncode == 0 and len(out) == len(names):
            return dict(zip(names, out))
    except OSError:
        pass
    return {n: n for n in names}


_DTYPES = {"float": "fp32", "__half": "fp16", "__nv_bfloat16": "bf16"}
_SHORT = re.compile(r"(?:\w+::)*(\w+_kernel)(?:<([^>]*)>)?")


def variant(readable: str) -> tuple[str, dict]:
    """'zeromamba::cuda::scan::scan_fwd_kernel<__nv_bfloat16, 1>(...)' ->
    ('scan_fwd_kernel', {'dtype': 'bf16', 'N': 1})."""
    m = _SHORT.search(readable)
    if m is None:
        return readable, {}
    name, targs = m.group(1), m.group(2)
    v: dict = {}
    if targs:
        parts = [t.strip() for t in targs.split(",")]
        if parts and parts[0] in _DTYPES:
            v["dtype"] = _DTYPES[parts[0]]
        if len(parts) > 1:
            v["N"] = int(parts[1])  # kMaxN: the kernel serves d_state up to this
    return name, v


def _constant(text: str, name: str) -> int:
    m = re.search(rf"constexpr int {name} = (\d+);", text)
    if m is None:
        raise RuntimeError(f"constant {name} not found in csrc/cuda/scan.cuh")
    return int(m.group(1))


def scan_constants() -> dict[str, int]:
    """kThreads, kItems and kLaneChannels (channels per block of the channel-last ``*_cl_kernel``
    scans) of the scan kernels, read from csrc/cuda/scan.cuh."""
    text = (CUDA_DIR / "scan.cuh").read_text()
    return {
        "threads": _constant(text, "kThreads"),
        "items": _constant(text, "kItems"),
        "lane_channels": _constant(text, "kLaneChannels"),
    }


def _threads_per_block(name: str, code: list[sass.Instr]) -> int | None:
    """Block size of a kernel: __launch_bounds__ / the launch sites (scan: kThreads, slp:
    kThreads, small grid-stride kernels: kSmallThreads)."""
    sizes = {
        "scan_fwd_kernel": ("scan.cuh", "kThreads"),
        "scan_bwd_kernel": ("scan.cuh", "kThreads"),
        "scan_fwd_cl_kernel": ("scan.cuh", "kThreads"),
        "scan_fwd_cf_kernel": ("scan.cuh", "kThreads"),
        "scan_bwd_cl_kernel": ("scan.cuh", "kThreads"),
        "slp_fwd_kernel": ("slp.cu", "kThreads"),
        "slp_bwd_kernel": ("slp.cu", "kThreads"),
        "bc_grad_store_kernel": ("scan_bwd.cu", "kSmallThreads"),
        "param_grad_reduce_kernel": ("scan_bwd.cu", "kSmallThreads"),
    }
    if name not in sizes:
        return None
    file, const = sizes[name]
    return _constant((CUDA_DIR / file).read_text(), const)


# Kernels whose per-tile loops split the steps between them: the channel-first ss2d forward runs
# one loop over the row directions' steps and two (the column fold, then the scan) over the
# column directions', so a step costs half the sum of its hot loops. Elsewhere every hot loop
# runs over every step (the backward's two sweeps).
STEP_SHARES = {"scan_fwd_cf_kernel": 2}


def kernel_records(objects: list[CompiledObject]) -> list[dict]:
    """One record per kernel instantiation (the report's ``kernels`` rows, CUDA part)."""
    consts = scan_constants()
    rows = []
    for co in objects:
        names = demangle(list(co.resources))
        for mangled, res in co.resources.items():
            name, var = variant(names[mangled])
            info = co.ptxas.get(mangled)
            if info is not None and info.regs != res.regs:
                raise RuntimeError(
                    f"{name}: ptxas reports {info.regs} registers, cuobjdump {res.regs}"
                )
            threads = _threads_per_block(name, co.code.get(mangled, []))
            smem_static = info.smem if info is not None else res.shared
            occ = occupancy(threads, res.regs, smem_static) if threads else None
            hot = sass.hot_loops(co.code.get(mangled, []))
            per_step = None
            if name.startswith("scan_") and hot:
                per_step = sum(lp.path for lp in hot) / consts["items"] / STEP_SHARES.get(name, 1)
            rows.append(
                {
                    "backend": "cuda",
                    "name": name,
                    "variant": var,
                    "source": co.source.name,
                    "regs": res.regs,
                    "spill_bytes": (info.spill_stores + info.spill_loads) if info else None,
                    "spill_stores": info.spill_stores if info else None,
                    "stack_bytes": res.stack,
                    "local_bytes": res.local,
                    "smem_static_bytes": smem_static,
                    "smem_cuobjdump": res.shared,
                    "threads_per_block": threads,
                    "occupancy_h100": occ.fraction if occ else None,
                    "occupancy_limiter": occ.limiter if occ else None,
                    "sass_instructions": sum(
                        1 for i in co.code.get(mangled, []) if i.base != "NOP"
                    ),
                    "hot_loops": [
                        {
                            "head": hex(lp.head),
                            "path": lp.path,
                            "static": lp.instructions,
                            "barriers": lp.barriers,
                        }
                        for lp in hot
                    ],
                    "sass_per_step": per_step,
                    "mangled": mangled,
                }
            )
    rows.sort(key=lambda r: (r["source"], r["name"], str(r["variant"])))
    return rows
