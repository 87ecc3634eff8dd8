"""Launchers for real servers used by tests, demos and benchmarks."""
