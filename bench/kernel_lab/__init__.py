"""The kernel lab: the CUDA kernels of ``csrc/cuda`` run on the CPU under an emulator with
sanitizers and a memory-traffic model. Entry point: :func:`emulate` (API in
:mod:`kernel_lab.emulator`). Import it with ``bench/`` on ``sys.path``."""

from .emulator import EmulationError, LaunchError, SanitizerError, emulate, lab

__all__ = ["EmulationError", "LaunchError", "SanitizerError", "emulate", "lab"]
