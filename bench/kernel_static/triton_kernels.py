"""The Triton kernels of ``kernels/`` compiled for sm_90 without a GPU.

An op's launcher (``kernels.ss2d_scan.launch_fwd`` ...) runs on ``meta`` tensors of the real
shape with ``wrap_triton`` replaced by a recorder, so every launch it would make (kernel, grid,
arguments, constexprs, num_warps) is captured without running anything. Each launch is then
specialised exactly as Triton's JIT would (its own binder: integer width, divisibility by 16,
value 1) and compiled with ``triton.compile`` for ``GPUTarget("cuda", 90, 32)``. Registers and
shared memory come from ``cuobjdump --dump-resource-usage`` of the produced cubin (the same parser
as the CUDA objects), spills from ``ptxas -v`` on the produced PTX, the SASS from ``cuobjdump
-sass``.
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from . import sass
from .occupancy import occupancy

ARCH = 90


@dataclass
class Launch:
    fn: object  # triton JITFunction
    grid: tuple
    args: tuple
    kwargs: dict

    @property
    def name(self) -> str:
        return self.fn.__name__

    @property
    def programs(self) -> int:
        n = 1
        for g in self.grid:
            n *= int(g)
        return n


class _Recorder:
    def __init__(self, fn, log: list[Launch]):
        self.fn, self.log = fn, log

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.log.append(Launch(self.fn, tuple(grid), args, kwargs))

        return launch


def _launcher_modules() -> list:
    """The modules of ``zeromamba.kernels`` that launch kernels through ``wrap_triton``."""
    import importlib
    import pkgutil

    import zeromamba.kernels as pkg

    mods = []
    for info in pkgutil.iter_modules(pkg.__path__):
        m = importlib.import_module(f"{pkg.__name__}.{info.name}")
        if hasattr(m, "wrap_triton"):
            mods.append(m)
    return mods


@contextmanager
def launching(wrap):
    """Within the block, the Triton launchers of ``zeromamba.kernels`` call ``wrap(fn)[grid](...)``
    instead of ``wrap_triton(fn)[grid](...)``."""
    saved = {m: m.wrap_triton for m in _launcher_modules()}
    try:
        for m in saved:
            m.wrap_triton = wrap
        yield
    finally:
        for m, w in saved.items():
            m.wrap_triton = w


@contextmanager
def recording():
    """Within the block, the Triton launchers of ``zeromamba.kernels`` record their launches into
    the yielded list instead of running them."""
    log: list[Launch] = []
    with launching(lambda fn: _Recorder(fn, log)):
        yield log


def op_launches(op: str, pass_: str, inputs: dict) -> list[Launch]:
    """The launches the triton backend makes for one op pass on ``inputs`` (meta tensors)."""
    with recording() as log:
        call_op(op, pass_, inputs)
    return log


def call_op(op: str, pass_: str, inputs: dict):
    """Run the triton backend's launcher of one op pass on ``inputs`` (``meta_inputs``' keys);
    returns its outputs."""
    from zeromamba.kernels import selective_scan, slp_project, ss2d_scan

    if op == "ss2d_scan":
        i = inputs
        common = (i["x"], i["delta"], i["A"], i["B"], i["C"], i["D"], i["delta_bias"], True)
        if pass_ == "fwd":
            return ss2d_scan.launch_fwd(*common, i["channel_last"], True)
        return ss2d_scan.launch_bwd(i["dy"], *common, i["channel_last"])
    if op == "selective_scan":
        i = inputs
        common = (i["u"], i["delta"], i["A"], i["B"], i["C"], i["D"], i["delta_bias"], True)
        if pass_ == "fwd":
            return selective_scan.launch_fwd(*common, True)
        return selective_scan.launch_bwd(i["dy"], *common)
    if op == "slp_project":
        i = inputs
        args = (i["feat"], i["q1"], i["q2"])
        if pass_ == "fwd":
            return slp_project.slp_project_fwd._init_fn(*args)
        return slp_project.slp_project_bwd._init_fn(i["dout"], *args)
    raise ValueError(f"op must be ss2d_scan, selective_scan or slp_project, got {op!r}")


# --------------------------------------------------------------------------- compile


@dataclass
class Compiled:
    name: str
    key: str
    num_warps: int
    shared: int  # bytes of shared memory Triton launches the kernel with
    resources: sass.Resources
    ptxas: sass.PtxasInfo | None
    code: list[sass.Instr]
    constexprs: dict
    ttgir: str = ""  # the layouts of its memory ops (triton_layouts)


def _jit(fn):
    """The JITFunction of a kernel; under TRITON_INTERPRET=1 ``@triton.jit`` made an
    InterpretedFunction, rebuilt here from its Python function (enough to specialise; compiling
    needs the process to run without the interpreter, as bench/kernel_report.py does)."""
    from triton.runtime.jit import JITFunction

    return fn if isinstance(fn, JITFunction) else JITFunction(fn.fn)


def _specialise(launch: Launch):
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    target = GPUTarget("cuda", ARCH, 32)
    backend = make_backend(target)
    fn = _jit(launch.fn)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, spec, options = binder(*launch.args, **launch.kwargs)
    options, signature, constexprs, attrs = fn._pack_args(
        backend, launch.kwargs, bound, spec, options
    )
    return target, options, signature, constexprs, attrs


def launch_key(launch: Launch) -> str:
    _, options, signature, constexprs, attrs = _specialise(launch)
    text = repr((launch.name, sorted(signature.items()), sorted(constexprs.items()), attrs))
    return hashlib.sha256((text + repr(options)).encode()).hexdigest()[:16]


def compile_launch(launch: Launch, workdir: Path) -> Compiled:
    """Compile one recorded launch for sm_90 and read its resources back."""
    import triton
    from triton.compiler import ASTSource

    target, options, signature, constexprs, attrs = _specialise(launch)
    key = launch_key(launch)
    k = triton.compile(
        ASTSource(_jit(launch.fn), signature, constexprs, attrs),
        target=target,
        options=options.__dict__,
    )
    cubin = workdir / f"{launch.name}-{key}.cubin"
    ptx = workdir / f"{launch.name}-{key}.ptx"
    cubin.write_bytes(k.asm["cubin"])
    ptx.write_text(k.asm["ptx"])
    usage, code = sass.cuobjdump(cubin)
    res = sass.parse_resource_usage(usage)
    fname = k.metadata.name
    info = None
    ptxas = _triton_ptxas()
    if ptxas is not None:
        arch = f"sm_{ARCH}a"  # Triton compiles sm_90 as sm_90a
        r = subprocess.run(
            [ptxas, "-v", f"--gpu-name={arch}", str(ptx), "-o", str(ptx.with_suffix(".o"))],
            capture_output=True,
            text=True,
            check=False,
        )
        if r.returncode == 0:
            info = sass.parse_ptxas_verbose(r.stderr).get(fname)
    arg_names = _jit(launch.fn).arg_names
    names = {arg_names[k[0]] if isinstance(k, tuple) else str(k): v for k, v in constexprs.items()}
    return Compiled(
        launch.name,
        key,
        k.metadata.num_warps,
        k.metadata.shared,
        res[fname],
        info,
        sass.parse_sass(code).get(fname, []),
        names,
        k.asm.get("ttgir", ""),
    )


def _triton_ptxas() -> str | None:
    """The ptxas Triton compiles with (its PTX may be newer than the system toolkit's)."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        return get_ptxas(ARCH).path
    except (ImportError, AttributeError, RuntimeError, TypeError):
        return sass.find_tool("ptxas")


def meta_inputs(op: str, shape: dict, dtype: torch.dtype, layout: str) -> dict:
    """Meta tensors of the real shape for ``op_launches``."""

    def t(*s, dt=dtype):
        return torch.empty(s, dtype=dt, device="meta")

    f32 = torch.float32
    if op == "ss2d_scan":
        b, c, H, W, N = (shape[k] for k in ("b", "C", "H", "W", "N"))
        if layout == "channel_last":
            x, delta, B = t(b, H, W, c), t(b, 4, H, W, c), t(b, 4, H, W, N)
            dy = t(b, H, W, c, dt=f32)
        else:
            x, delta, B = t(b, c, H, W), t(b, 4, c, H, W), t(b, 4, N, H, W)
            dy = t(b, c, H, W, dt=f32)
        rows = 4 * c
        return {
            "x": x, "delta": delta, "B": B, "C": B.clone(), "dy": dy,
            "A": t(rows, N, dt=f32), "D": t(rows, dt=f32), "delta_bias": t(rows, dt=f32),
            "channel_last": layout == "channel_last",
        }  # fmt: skip
    if op == "selective_scan":
        b, d, L, N, G = (shape[k] for k in ("b", "d", "L", "N", "G"))
        return {
            "u": t(b, d, L), "delta": t(b, d, L), "B": t(b, G, N, L), "C": t(b, G, N, L),
            "dy": t(b, d, L, dt=f32), "A": t(d, N, dt=f32), "D": t(d, dt=f32),
            "delta_bias": t(d, dt=f32),
        }  # fmt: skip
    if op == "slp_project":
        b, A, F, R = (shape[k] for k in ("b", "A", "F", "R"))
        return {"feat": t(b, F, R), "q1": t(A, F), "q2": t(A, F), "dout": t(b, A)}
    raise ValueError(f"unknown op {op!r}")


class TritonCompiler:
    """Compiles each distinct specialisation once."""

    def __init__(self, workdir: Path | None = None):
        self._tmp = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="kernel_report_triton_")
            workdir = Path(self._tmp.name)
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cache: dict[str, Compiled] = {}
        self.used_by: dict[str, list[str]] = {}  # key -> the op passes that launch it

    def get(self, launch: Launch, used_by: str = "") -> Compiled:
        key = launch_key(launch)
        if key not in self.cache:
            self.cache[key] = compile_launch(launch, self.workdir)
        if used_by:
            self.used_by.setdefault(key, [])
            if used_by not in self.used_by[key]:
                self.used_by[key].append(used_by)
        return self.cache[key]

    def records(self) -> list[dict]:
        """The report's ``kernels`` rows of every compiled Triton specialisation; those that
        differ only in integer specialisations (same constexprs and resources) are merged."""
        rows: dict[tuple, dict] = {}
        for c in self.cache.values():
            threads = c.num_warps * 32
            occ = occupancy(threads, c.resources.regs, c.shared)
            keep = ("N", "N_PAD", "BLOCK_C", "BLOCK_T", "BLOCK_R", "BLOCK_K", "BLOCK_ROWS")
            var = {k: v for k, v in c.constexprs.items() if k in keep}
            flags = ("OFF64", "ADD_Y", "ADD_DU", "ADD_DBC")
            var.update({k: v for k, v in c.constexprs.items() if k in flags})
            same = (c.name, repr(var), c.resources.regs, c.shared, c.num_warps)
            if same in rows:
                used = rows[same]["used_by"]
                used += [u for u in self.used_by.get(c.key, []) if u not in used]
                continue
            rows[same] = {
                "backend": "triton",
                "name": c.name,
                "variant": var,
                "key": c.key,
                "regs": c.resources.regs,
                "spill_bytes": (c.ptxas.spill_stores + c.ptxas.spill_loads) if c.ptxas else None,
                "spill_stores": c.ptxas.spill_stores if c.ptxas else None,
                "stack_bytes": c.resources.stack,
                "local_bytes": c.resources.local,
                "smem_static_bytes": c.shared,
                "smem_cuobjdump": c.resources.shared,
                "threads_per_block": threads,
                "num_warps": c.num_warps,
                "occupancy_h100": occ.fraction,
                "occupancy_limiter": occ.limiter,
                "sass_instructions": sum(1 for i in c.code if i.base != "NOP"),
                "loops": len(sass.loops(c.code)),
                "sass_per_step": None,
                "used_by": list(self.used_by.get(c.key, [])),
            }
        return sorted(rows.values(), key=lambda r: (r["name"], repr(r["variant"])))
