"""The chaos run (issue 18): every fault at once, at random, with independent consumers checking invariants.

`uv run python -m bench.chaos --seconds N --seed S [--workers K]`; see RELIABILITY.md, "Chaos run".
"""
