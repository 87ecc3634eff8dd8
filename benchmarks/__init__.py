"""h5dask's benchmarks against raw object-store reads and the peers a user would pick.

Run ``python -m benchmarks.run`` from the repository root (see ``BENCHMARKS.md``).
"""
