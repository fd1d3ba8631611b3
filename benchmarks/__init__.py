"""Benchmarks and paper-scale checks (run from the repository root: ``python -m benchmarks.<name>``)."""
