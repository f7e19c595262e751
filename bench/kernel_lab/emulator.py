"""Run the real CUDA kernels on the CPU: :func:`emulate` fills the launch parameters from torch
tensors, calls the torch-free launch functions of ``csrc/cuda`` (so the launch configuration and
workspace layout are the production ones) and returns the outputs with one record per kernel
launch.

Stable API (used by tests/test_cuda_emulated.py and bench/kernel_report.py)::

    outputs, launches = emulate(op, pass_, **tensors_and_flags)

* ``op``: ``"selective_scan"``, ``"ss2d_scan"`` or ``"slp_project"``; ``pass_``: ``"fwd"`` or
  ``"bwd"``.
* keyword arguments: the op's tensors and flags as in :mod:`zeromamba.reference`
  (``u``/``x``, ``delta``, ``A``, ``B``, ``C``, ``D``, ``delta_bias``, ``delta_softplus``,
  ``channel_last``, ``out_float32``; ``feat``, ``q1``, ``q2``), plus for ``"bwd"`` the output
  gradient ``dy`` (scans) or ``dout`` (slp) and ``deterministic``; ``arch`` (80 or 90, the
  launch-limit rules; default 90); ``execute=False`` checks and records every launch without
  running it (outputs stay NaN: for launch-legality checks of shapes too large to emulate);
  ``reverse_blocks=True`` runs every grid's blocks last to first (results that must not depend
  on the order blocks run in, e.g. deterministic mode, can be compared across both orders).
  CPU tensors of one activation dtype (float32, float16,
  bfloat16); A, D, delta_bias float32.
* ``outputs``: ``{"y"}`` / ``{"out"}`` forward; scans backward ``{"du", "ddelta", "dA", "dB",
  "dC", "dD", "ddelta_bias"}`` (``du`` is dx for ss2d_scan); slp backward ``{"dfeat", "dq1",
  "dq2"}``.
* ``launches``: one dict per kernel launch, in order: ``kernel`` (e.g.
  ``"scan_fwd_kernel<float, 1>"``), ``site`` (file:line of the launch), ``grid``, ``block``
  (3-tuples), ``smem_static``, ``smem_dynamic`` (bytes), ``requests``, ``sectors``, ``lines``,
  ``bytes_l2`` (= 32 * sectors), ``atomics`` (per-thread atomic operations),
  ``sectors_per_request`` and the same counts split by kind in ``load``, ``store`` and
  ``atomic`` (each ``{"requests", "sectors", "lines"}``).

Traffic model: the k-th execution of a static load/store/atomic site by the lanes of a warp is
one request; a request moves its distinct 32-byte sectors (128-byte lines), counted from the
start of each tensor (GPU allocations are 256-byte aligned). The host compiler's code stands in
for the SASS, so a site is a host instruction: loads it hoists or merges are counted as it
executes them. Counts are exact for the emulated shape; at fixed per-block work they scale
linearly with the number of blocks (batch, channels), and with L for the scans.

Errors: a launch the hardware would refuse raises :class:`LaunchError`; a sanitizer finding
(shared-memory race, barrier or warp divergence, out-of-bounds or uninitialised access) raises
:class:`SanitizerError`. Both name the kernel and the source line.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from functools import lru_cache

import torch

from .build import ROOT, Library, build

_DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
_ERRORS = {
    1: "cudaErrorInvalidValue",
    4: "cudaErrorLaunchFailure",
    9: "cudaErrorInvalidConfiguration",
}


class EmulationError(RuntimeError):
    """A kernel run in the emulator failed."""


class LaunchError(EmulationError):
    """A launch function returned a CUDA error (e.g. a launch the hardware refuses)."""


class SanitizerError(EmulationError):
    """A sanitizer of the emulator found a bug while a kernel ran."""


class _Lab:
    def __init__(self, lib: Library):
        self.lib = lib
        self.so = ctypes.CDLL(str(lib.path))
        self._lines: dict[int, str] = {}
        so = self.so
        so.cuda_emu_module_base.restype = ctypes.c_size_t
        so.cuda_emu_register_kernel.argtypes = [ctypes.c_size_t, ctypes.c_char_p]
        so.cuda_emu_register_shared.argtypes = [
            ctypes.c_size_t,
            ctypes.c_size_t,
            ctypes.c_size_t,
            ctypes.c_char_p,
        ]
        so.cuda_emu_register_alloc.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_char_p,
        ]
        so.cuda_emu_launch_info.restype = ctypes.c_char_p
        so.cuda_emu_launch_info.argtypes = [
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_longlong),
            ctypes.POINTER(ctypes.c_char_p),
        ]
        so.cuda_emu_last_message.restype = ctypes.c_char_p
        so.zm_emu_selftest.argtypes = (
            [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
            + [ctypes.c_int] * 4
            + [ctypes.c_char_p, ctypes.c_int]
        )
        for name in ("scan_fwd", "scan_bwd"):
            fn = getattr(so, f"zm_emu_{name}_workspace")
            fn.restype = ctypes.c_longlong
            fn.argtypes = [ctypes.POINTER(ctypes.c_longlong), ctypes.POINTER(ctypes.c_void_p)]
        for name in ("scan_fwd", "scan_bwd", "slp_fwd", "slp_bwd"):
            getattr(so, f"zm_emu_{name}").argtypes = [
                ctypes.POINTER(ctypes.c_longlong),
                ctypes.POINTER(ctypes.c_void_p),
                ctypes.c_char_p,
                ctypes.c_int,
            ]
        so.cuda_emu_module_base()
        for offset, name in lib.kernels.items():
            so.cuda_emu_register_kernel(offset, name.encode())
        for kernel, offset, size, name in lib.shared:
            so.cuda_emu_register_shared(kernel, offset, size, name.encode())

    def source_line(self, offset: int) -> str:
        """file:line of a code offset in the library (innermost, and the outer call when inlined)."""
        if offset not in self._lines:
            self._lines[offset] = self._source_line(offset)
        return self._lines[offset]

    def _source_line(self, offset: int) -> str:
        tool = shutil.which("addr2line")
        if tool is None:
            return f"+0x{offset:x}"
        out = subprocess.run(
            [tool, "-i", "-e", str(self.lib.path), hex(offset)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        root = str(ROOT) + "/"
        out = [re.sub(r" \(discriminator \d+\)", "", s).replace(root, "") for s in out if ":" in s]
        if not out:
            return f"+0x{offset:x}"
        return out[0] if len(out) == 1 else f"{out[0]} (inlined from {out[-1]})"

    def launches(self) -> list[dict]:
        """The launch records of the last :func:`emulate` or :func:`selftest` call."""
        return _launches(self.so)

    def message(self, raw: bytes) -> str:
        text = raw.decode(errors="replace")
        return re.sub(r"@pc:0x([0-9a-f]+)", lambda m: self.source_line(int(m.group(1), 16)), text)


@lru_cache(maxsize=1)
def lab() -> _Lab:
    """The loaded emulator (built on first use)."""
    return _Lab(build())


class _Memory:
    """Tensors handed to the kernels, registered with the emulator's bounds checker."""

    def __init__(self, so):
        self.so = so
        self.keep: list[torch.Tensor] = []

    def input(self, name: str, t: torch.Tensor | None, dtype=None) -> int:
        if t is None:
            return 0
        t = t.detach().to(dtype or t.dtype).contiguous()
        return self._register(name, t, writable=False)

    def output(self, name: str, shape, dtype) -> torch.Tensor:
        t = torch.full(shape, float("nan"), dtype=dtype)  # poison: unwritten elements are NaN
        self._register(name, t, writable=True)
        return t

    def _register(self, name: str, t: torch.Tensor, writable: bool) -> int:
        self.keep.append(t)
        if t.numel() > 0:
            nbytes = t.numel() * t.element_size()
            self.so.cuda_emu_register_alloc(t.data_ptr(), nbytes, int(writable), name.encode())
        return t.data_ptr()


def _activation_dtype(name: str, t: torch.Tensor) -> int:
    if t.dtype not in _DTYPES:
        raise TypeError(f"emulate: {name} must be float32, float16 or bfloat16, got {t.dtype}")
    if t.device.type != "cpu":
        raise ValueError(f"emulate: {name} must be a CPU tensor, got {t.device}")
    return _DTYPES[t.dtype]


def _arr(ctype, values):
    return (ctype * len(values))(*values)


def _scan_layout(op: str, kw: dict):
    """(ints without the flags, input tensors, x name, x shape) as the binding fills them."""
    if op == "selective_scan":
        u, B = kw["u"], kw["B"]
        b, d, L = u.shape
        G, N = B.shape[1], B.shape[2]
        dims = [b, d, G, N, 1, L, 1]
        strides = [d * L, L, 0, 1, d * L, 0, L, 0, 1, G * N * L, N * L, L, 0, 1]
        return dims, strides, "u"
    x, B = kw["x"], kw["B"]
    cl = bool(kw.get("channel_last", False))
    if cl:
        b, H, W, c = x.shape
        N = B.shape[4]
        xs = [H * W * c, 1, W * c, c]
        ds = [4 * H * W * c, H * W * c, 1, W * c, c]
        bs = [4 * H * W * N, H * W * N, 1, W * N, N]
    else:
        b, c, H, W = x.shape
        N = B.shape[2]
        xs = [c * H * W, H * W, W, 1]
        ds = [4 * c * H * W, c * H * W, H * W, W, 1]
        bs = [4 * N * H * W, N * H * W, H * W, W, 1]
    return [b, c, 4, N, H, W, 4], xs + ds + bs, "x"


def _run(so, fn: str, ints, ptrs) -> None:
    err = ctypes.create_string_buffer(4096)
    so.cuda_emu_clear_error()
    rc = getattr(so, f"zm_emu_{fn}")(ints, ptrs, err, len(err))
    if rc == -1:
        raise SanitizerError(lab().message(err.value))
    if rc != 0:
        detail = lab().message(so.cuda_emu_last_message())
        raise LaunchError(f"{fn}: {_ERRORS.get(rc, rc)}: {detail}")


def _launches(so) -> list[dict]:
    out = []
    vals = (ctypes.c_longlong * 20)()
    site = ctypes.c_char_p()
    for i in range(so.cuda_emu_num_launches()):
        name = so.cuda_emu_launch_info(i, vals, ctypes.byref(site)).decode()
        v = list(vals)
        kinds = {
            k: {"requests": v[8 + 3 * j], "sectors": v[9 + 3 * j], "lines": v[10 + 3 * j]}
            for j, k in enumerate(("load", "store", "atomic"))
        }
        requests = sum(k["requests"] for k in kinds.values())
        sectors = sum(k["sectors"] for k in kinds.values())
        path = site.value.decode()  # relative to the repository: the build runs there
        out.append(
            {
                "kernel": name,
                "site": f"{path}:{v[19]}",
                "grid": tuple(v[0:3]),
                "block": tuple(v[3:6]),
                "smem_static": v[6],
                "smem_dynamic": v[7],
                "requests": requests,
                "sectors": sectors,
                "lines": sum(k["lines"] for k in kinds.values()),
                "bytes_l2": 32 * sectors,
                "atomics": v[17],
                "sectors_per_request": sectors / requests if requests else 0.0,
                **kinds,
            }
        )
    return out


def emulate(op: str, pass_: str, **kw) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Run op's ``pass_`` ("fwd" or "bwd") with the CUDA kernels on the CPU; see the module doc."""
    if op not in ("selective_scan", "ss2d_scan", "slp_project"):
        raise ValueError(
            f"emulate: op must be selective_scan, ss2d_scan or slp_project, got {op!r}"
        )
    if pass_ not in ("fwd", "bwd"):
        raise ValueError(f"emulate: pass_ must be 'fwd' or 'bwd', got {pass_!r}")
    arch = int(kw.pop("arch", 90))
    if arch not in (80, 90):
        raise ValueError(f"emulate: arch must be 80 or 90, got {arch}")
    so = lab().so
    so.cuda_emu_set_arch(arch)
    so.cuda_emu_set_execute(int(bool(kw.pop("execute", True))))
    so.cuda_emu_set_reverse_blocks(int(bool(kw.pop("reverse_blocks", False))))
    so.cuda_emu_reset_attributes()
    so.cuda_emu_clear_launches()
    so.cuda_emu_clear_allocs()
    mem = _Memory(so)
    try:
        if op == "slp_project":
            outputs = _slp(so, mem, pass_, kw)
        else:
            outputs = _scan(so, mem, op, pass_, kw)
        return outputs, _launches(so)
    finally:
        so.cuda_emu_clear_allocs()


def _scan(so, mem: _Memory, op: str, pass_: str, kw: dict) -> dict[str, torch.Tensor]:
    dims, strides, xname = _scan_layout(op, kw)
    x = kw[xname]
    dt = _activation_dtype(xname, x)
    for name in ("delta", "B", "C") + (("dy",) if pass_ == "bwd" else ()):
        if name != "dy" and kw[name].dtype != x.dtype:
            raise TypeError(f"emulate: {name} must have the dtype of {xname} ({x.dtype})")
    out_f32 = bool(kw.get("out_float32", False)) and x.dtype != torch.float32
    dy = kw.get("dy")
    if pass_ == "bwd":
        if dy is None:
            raise ValueError("emulate: the backward needs dy")
        if dy.dtype not in (x.dtype, torch.float32):
            raise TypeError(f"emulate: dy must be {x.dtype} or float32, got {dy.dtype}")
        flag32 = dy.dtype == torch.float32 and x.dtype != torch.float32
    else:
        flag32 = out_f32
    ints = [
        dt,
        *dims,
        int(bool(kw.get("delta_softplus", op == "ss2d_scan"))),
        int(flag32),
        int(bool(kw.get("deterministic", False))),
        *strides,
    ]
    ptrs = [
        mem.input(xname, x),
        mem.input("delta", kw["delta"]),
        mem.input("A", kw["A"], torch.float32),
        mem.input("B", kw["B"]),
        mem.input("C", kw["C"]),
        mem.input("D", kw.get("D"), torch.float32),
        mem.input("delta_bias", kw.get("delta_bias"), torch.float32),
    ]
    c_ints = _arr(ctypes.c_longlong, ints)
    if pass_ == "fwd":
        y = mem.output("y", x.shape, torch.float32 if out_f32 else x.dtype)
        ptrs += [y.data_ptr(), 0]
        ws_floats = so.zm_emu_scan_fwd_workspace(c_ints, _arr(ctypes.c_void_p, ptrs))
        ws = mem.output("workspace", (max(ws_floats, 0),), torch.float32)
        ptrs[-1] = ws.data_ptr() if ws_floats > 0 else 0
        _run(so, "scan_fwd", c_ints, _arr(ctypes.c_void_p, ptrs))
        return {"y": y}
    rows = kw["A"].shape[0]
    N = kw["A"].shape[1]
    grads = {
        "du": mem.output("du", x.shape, x.dtype),
        "ddelta": mem.output("ddelta", kw["delta"].shape, x.dtype),
        "dB": mem.output("dB", kw["B"].shape, x.dtype),
        "dC": mem.output("dC", kw["C"].shape, x.dtype),
        "dA": mem.output("dA", (rows, N), torch.float32),
        "dD": mem.output("dD", (rows,), torch.float32),
        "ddelta_bias": mem.output("ddelta_bias", (rows,), torch.float32),
    }
    ptrs += [mem.input("dy", dy)] + [
        grads[k].data_ptr() for k in ("du", "ddelta", "dB", "dC", "dA", "dD", "ddelta_bias")
    ]
    ptrs += [0]
    ws_floats = so.zm_emu_scan_bwd_workspace(c_ints, _arr(ctypes.c_void_p, ptrs))
    ws = mem.output("workspace", (ws_floats,), torch.float32)
    ptrs[-1] = ws.data_ptr()
    _run(so, "scan_bwd", c_ints, _arr(ctypes.c_void_p, ptrs))
    return grads


def _slp(so, mem: _Memory, pass_: str, kw: dict) -> dict[str, torch.Tensor]:
    """slp_project as the binding (csrc/cuda/ops_cuda.cpp) runs it: the score and gradient GEMMs
    it hands to cuBLAS (fp32 accumulation) run here in torch on the CPU, the kernels of slp.cu
    in the emulator."""
    feat, q1, q2 = kw["feat"], kw["q1"], kw["q2"]
    dt = _activation_dtype("feat", feat)
    for name in ("q1", "q2") + (("dout",) if pass_ == "bwd" else ()):
        if kw[name].dtype != feat.dtype:
            raise TypeError(f"emulate: {name} must have the dtype of feat ({feat.dtype})")
    b, F, R = feat.shape
    A = q1.shape[0]
    q = torch.cat([q1, q2]).float()  # (2A, F)
    scores = torch.matmul(q, feat.float())  # S (b, 2A, R): s1 rows, then s2 rows
    ints = _arr(ctypes.c_longlong, [dt, b, A, R])
    ptrs = [mem.input("scores", scores)]
    if pass_ == "fwd":
        out = mem.output("out", (b, A), feat.dtype)
        _run(so, "slp_fwd", ints, _arr(ctypes.c_void_p, ptrs + [out.data_ptr()]))
        return {"out": out}
    ds = mem.output("ds", (2 * A, b, R), feat.dtype)
    ptrs += [mem.input("dout", kw["dout"]), ds.data_ptr()]
    _run(so, "slp_bwd", ints, _arr(ctypes.c_void_p, ptrs))
    ds = ds.float()
    dfeat = torch.matmul(q.t(), ds.permute(1, 0, 2))  # dfeat[b] = q^T ds[:, b]
    dq = ds.reshape(2 * A, b * R) @ feat.float().permute(1, 0, 2).reshape(F, b * R).t()
    return {
        "dfeat": dfeat.to(feat.dtype),
        "dq1": dq[:A].to(feat.dtype).contiguous(),
        "dq2": dq[A:].to(feat.dtype).contiguous(),
    }


SELFTEST_CASES = (
    "good",
    "missing_barrier",
    "write_after_read",
    "uninitialised",
    "shared_out_of_bounds",
    "global_out_of_bounds",
    "exit_before_barrier",
    "two_barrier_sites",
    "write_to_input",
    "shuffles",
    "launch",
)


def selftest(
    case: str,
    inp: torch.Tensor,
    threads: int = 64,
    smem: int = 256,
    opt_in: int = 0,
    arch: int = 90,
) -> torch.Tensor:
    """Run one case of ``csrc/emu/selftest.cu`` (known-bad kernels that the sanitizers must
    catch, warp collectives, and "launch": a copy with any block size and shared memory) on
    ``inp`` (float32, at least 320 elements); returns its output. ``threads`` per block, ``smem``
    dynamic bytes, ``opt_in``: bytes for cudaFuncSetAttribute first when positive. Raises like
    :func:`emulate`."""
    if case not in SELFTEST_CASES:
        raise ValueError(f"selftest: case must be one of {SELFTEST_CASES}, got {case!r}")
    so = lab().so
    so.cuda_emu_set_arch(arch)
    so.cuda_emu_set_execute(1)
    so.cuda_emu_reset_attributes()
    so.cuda_emu_clear_launches()
    so.cuda_emu_clear_allocs()
    mem = _Memory(so)
    try:
        ptr_in = mem.input("in", inp, torch.float32)
        out = mem.output("out", (inp.numel(),), torch.float32)
        err = ctypes.create_string_buffer(4096)
        so.cuda_emu_clear_error()
        rc = so.zm_emu_selftest(
            SELFTEST_CASES.index(case),
            out.data_ptr(),
            ptr_in,
            inp.numel(),
            threads,
            smem,
            opt_in,
            err,
            len(err),
        )
        if rc == -1:
            raise SanitizerError(lab().message(err.value))
        if rc != 0:
            detail = lab().message(so.cuda_emu_last_message())
            raise LaunchError(f"selftest: {_ERRORS.get(rc, rc)}: {detail}")
        return out
    finally:
        so.cuda_emu_clear_allocs()
