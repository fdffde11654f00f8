"""Benchmarks: programs that print figures (not tests). Run from the repository root as
``python -m benchmarks.actors``, ``python -m benchmarks.learner``, ``python -m benchmarks.peers``;
results and commands are recorded in ``docs/benchmarks.md``."""
