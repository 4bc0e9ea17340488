"""Benchmarks for steadyloop: `python -m bench [--only NAME]` (or `make bench ONLY=NAME`).

Each scenario is one module that compares the alternatives side by side in one run and writes
`bench/results/<scenario>.md` and `bench/results/<scenario>.png`.
"""
