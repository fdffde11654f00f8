"""Benchmarks: programs that print figures (not tests). Run from the repository root as
``python -m benchmarks.actors``, ``python -m benchmarks.learner``, ``python -m benchmarks.peers``,
``python -m benchmarks.replay``, ``python -m benchmarks.soak``, ``python -m benchmarks.chaos``;
results and commands are recorded in ``docs/benchmarks.md``, how each one measures in
``docs/benchmark-methods.md``."""
