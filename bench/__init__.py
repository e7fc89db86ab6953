"""Clarion benchmarks: ``python -m bench [scenario ...] [--quick]`` (see bench/README.md).

Scenarios run against a dedicated database ``clarion_bench`` and Redis db 14,
never against development or test data.
"""
