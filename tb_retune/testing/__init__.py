"""Helpers for tests and benchmarks (synthetic experiments); not on the runtime path."""
