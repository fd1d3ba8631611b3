"""Evaluation: MMVP-VLM for encoders, lmms-eval suites for MLLMs, and leaderboard comparison.

Import as ``from eval import ...`` / ``python -m eval.<module>``; never ``import eval`` bare (it shadows the
builtin)."""
