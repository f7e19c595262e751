"""Test set-up: Triton's interpreter on GPU-less machines, hypothesis profiles, poisoned outputs.

TRITON_INTERPRET must be set before any Triton kernel module is imported, so it is set here,
before the tests import zeromamba. Profiles: "ci" (default; derandomized, few examples, so a
landing is never flaky) and "thorough" (many examples, for kernel work):
HYPOTHESIS_PROFILE=thorough pytest.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# Kernels fill fresh outputs with NaN first, so an element a kernel forgets to write fails.
os.environ.setdefault("ZEROMAMBA_POISON", "1")

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=8,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    max_examples=200,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
