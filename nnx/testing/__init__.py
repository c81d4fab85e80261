"""Instrumentation for tests and the benchmark, never used by training itself.

:mod:`nnx.testing.counting` counts array operations and host syncs per step.
"""
