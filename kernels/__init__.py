"""Triton kernels of zeromamba (installed as zeromamba.kernels)."""
