"""Numerical kernels (numba) working on whole tiles held in memory."""
