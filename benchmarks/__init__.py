"""Benchmarks comparing uow with hand-written code and the alternatives; run ``python benchmarks/run.py``."""
