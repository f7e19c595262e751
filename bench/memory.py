"""Activation memory of a forward and of a forward + backward step, CPU and CUDA."""

from __future__ import annotations

from collections.abc import Callable

import torch

Fn = Callable[..., torch.Tensor]


def _cpu_allocation_trace(fn: Callable[[], object]) -> tuple[int, int, object]:
    """(peak, net) bytes allocated while ``fn`` runs, from the profiler's allocation events, and
    fn's result. Replays every CPU allocation and free in time order; counts kernel scratch too."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    # The raw records: EventList keeps only the allocations made outside any op.
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]"
    )
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak, live, result


def memory(run: Fn, args: tuple[torch.Tensor, ...], dy: torch.Tensor) -> dict[str, int]:
    """Bytes above what is allocated before the step (inputs and dy):

    fwd_peak: high-water mark during the forward (autograd recording);
    saved: still allocated when the forward returns (output + tensors saved for backward);
    step_peak: high-water mark over forward + backward, the returned gradients included.
    CPU: replay of the profiler's allocation events; CUDA: torch.cuda memory statistics.
    """
    if dy.device.type == "cuda":
        return _cuda_memory(run, args, dy)
    fwd_peak, saved, y = _cpu_allocation_trace(lambda: run(*args))
    bwd_peak, _, _ = _cpu_allocation_trace(lambda: torch.autograd.grad(y, args, dy))
    return {"fwd_peak": fwd_peak, "saved": saved, "step_peak": max(fwd_peak, saved + bwd_peak)}


def _cuda_memory(run: Fn, args: tuple[torch.Tensor, ...], dy: torch.Tensor) -> dict[str, int]:
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    y = run(*args)
    torch.cuda.synchronize()
    fwd_peak = torch.cuda.max_memory_allocated() - base
    saved = torch.cuda.memory_allocated() - base
    torch.cuda.reset_peak_memory_stats()
    torch.autograd.grad(y, args, dy)
    torch.cuda.synchronize()
    step_peak = max(fwd_peak, torch.cuda.max_memory_allocated() - base)
    return {"fwd_peak": fwd_peak, "saved": saved, "step_peak": step_peak}
