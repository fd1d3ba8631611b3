"""Ablation grids: config overrides x seeds as ordinary runs, shared stage 1s, one report with intervals.

    python -m genhancer.experiments run --grid configs/experiments/paper-toy.yaml --seeds 0 1 2 --out DIR
    python -m genhancer.experiments run --grid configs/experiments/paper-toy.yaml --quick --out DIR
    python -m genhancer.experiments report DIR

``grid`` (the grid file and its plan), ``runner`` (subprocesses, skip, failure isolation), ``report``
(pooled intervals, findings, tables, plots).
"""
