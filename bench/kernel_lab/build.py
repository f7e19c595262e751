"""Build the kernel lab's emulator library: the real ``csrc/cuda`` kernel sources compiled by the
host compiler against ``csrc/emu/cuda_emu.h``, plus the emulator runtime and the C harness.

The kernel objects are compiled with ``-fsanitize=thread`` so that every memory access of kernel
code calls a ``__tsan_*`` hook; the emulator (``csrc/emu/runtime.cpp``) defines those hooks itself
(no ThreadSanitizer runtime is linked). The library is cached under
``build/kernel_lab/<hash of sources, flags and compiler>/``.

Besides the path, :func:`build` returns the symbol table facts the emulator needs: every kernel
(functions named ``*_kernel``, as in ``csrc/cuda``) with its address and a short name, and every
``__shared__`` variable (a function-local static under the emulator) with its owner, address and
size; the sum of a kernel's variables is its static shared memory.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KERNEL_SOURCES = (
    "csrc/cuda/scan_fwd.cu",
    "csrc/cuda/scan_fwd_cf.cu",
    "csrc/cuda/scan_bwd.cu",
    "csrc/cuda/scan_bwd_cl.cu",
    "csrc/cuda/slp.cu",
    "csrc/emu/selftest.cu",
)
RUNTIME_SOURCES = ("csrc/emu/runtime.cpp", "csrc/emu/fiber.cpp", "csrc/emu/harness.cpp")
COMMON_FLAGS = ("-std=c++17", "-fPIC", "-g1", "-Wall", "-Wno-unknown-pragmas", "-Icsrc/emu/include")
KERNEL_FLAGS = ("-fsanitize=thread", "--param=tsan-instrument-func-entry-exit=0", "-x", "c++")


@dataclass
class Library:
    """A built emulator library and what its symbol table says about the kernels."""

    path: Path
    kernels: dict[int, str] = field(default_factory=dict)  # address offset -> short name
    # (kernel offset, variable offset, size, variable name)
    shared: list[tuple[int, int, int, str]] = field(default_factory=list)


def _compiler() -> str:
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise RuntimeError(f"kernel lab: the host C++ compiler {cxx!r} (CXX) was not found")
    return cxx


def _key(cxx: str, opt: str) -> str:
    h = hashlib.sha256()
    h.update(
        subprocess.run(
            [cxx, "--version"], capture_output=True, text=True, check=False
        ).stdout.encode()
    )
    h.update(" ".join((*COMMON_FLAGS, *KERNEL_FLAGS, opt)).encode())
    for d in ("csrc/cuda", "csrc/emu", "csrc/emu/include"):
        for p in sorted((ROOT / d).glob("*")):
            if p.is_file() and p.suffix in (".cu", ".cuh", ".h", ".cpp"):
                h.update(p.name.encode())
                h.update(p.read_bytes())
    return h.hexdigest()[:16]


def short_name(demangled: str) -> str:
    """``void ns::scan_fwd_kernel<float, 1>(ns::P, bool)`` -> ``scan_fwd_kernel<float, 1>``."""
    s = demangled
    depth = 0
    for i in range(len(s) - 1, -1, -1):  # drop the parameter list: the last top-level (...)
        if s[i] == ")":
            depth += 1
        elif s[i] == "(":
            depth -= 1
            if depth == 0:
                s = s[:i]
                break
    depth, start, cut = 0, 0, []
    for i, ch in enumerate(s):  # drop the return type and the namespaces at template depth 0
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif depth == 0 and ch == " ":
            start = i + 1
        elif depth == 0 and s[i : i + 2] == "::":
            cut.append(i + 2)
    cut = [c for c in cut if c > start]
    return s[max([start, *cut]) :]


def _symbols(cxx: str, lib: Path) -> tuple[dict[int, str], list[tuple[int, int, int, str]]]:
    nm = shutil.which("nm") or "nm"
    out = subprocess.run(
        [nm, "--defined-only", "-S", str(lib)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    rows = []
    for line in out:
        parts = line.split()
        if len(parts) == 4:
            rows.append((int(parts[0], 16), int(parts[1], 16), parts[2], parts[3]))
    filt = shutil.which("c++filt") or "c++filt"
    demangled = subprocess.run(
        [filt], input="\n".join(r[3] for r in rows), capture_output=True, text=True, check=True
    ).stdout.splitlines()
    funcs = {r[3]: r[0] for r in rows if r[2] in "tTwW"}
    kernels: dict[int, str] = {}
    for (addr, _, kind, _), dem in zip(rows, demangled, strict=True):
        if kind in "tTwW":
            name = short_name(dem)
            if re.match(r"\w+_kernel(<|$)", name):
                kernels[addr] = name
    shared = []
    for addr, size, kind, mangled in rows:
        m = re.match(r"^_ZZ(.*)E(\d+)(\w+?)(_\d+)?$", mangled)
        if kind not in "bBuVdD" or m is None or len(m.group(3)) != int(m.group(2)):
            continue
        owner = funcs.get("_Z" + m.group(1))
        if owner is not None and owner in kernels:
            shared.append((owner, addr, size, m.group(3)))
    return kernels, shared


def build(opt: str = "-O1", verbose: bool = False) -> Library:
    """Compile (or reuse) the emulator library; returns it with its kernel symbols."""
    cxx = _compiler()
    out_dir = ROOT / "build" / "kernel_lab" / _key(cxx, opt)
    lib = out_dir / "libzm_emu.so"
    if not lib.exists():
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out_dir.parent))
        jobs = [(src, (*COMMON_FLAGS, opt, *KERNEL_FLAGS)) for src in KERNEL_SOURCES]
        jobs += [(src, (*COMMON_FLAGS, "-O2")) for src in RUNTIME_SOURCES]

        def compile_one(job):
            src, flags = job
            obj = tmp / (Path(src).stem + ".o")
            cmd = [cxx, *flags, "-c", src, "-o", str(obj)]
            r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
            if r.returncode != 0 or (verbose and r.stderr):
                raise RuntimeError(f"kernel lab: {' '.join(cmd)} failed:\n{r.stderr}")
            return obj

        with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), os.cpu_count() or 1))) as ex:
            objs = list(ex.map(compile_one, jobs))
        cmd = [cxx, "-shared", "-o", str(tmp / lib.name), *map(str, objs), "-Wl,-z,defs"]
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"kernel lab: link failed:\n{r.stderr}")
        try:
            tmp.rename(out_dir)
        except OSError:  # built concurrently by another process: use theirs
            shutil.rmtree(tmp, ignore_errors=True)
    kernels, shared = _symbols(cxx, lib)
    return Library(lib, kernels, shared)
