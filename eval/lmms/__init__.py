"""lmms-eval integration: a batched model adapter for HF LLaVA directories, the toy and vision-centric task
suites, and ``python -m eval.lmms run`` which drives the real lmms-eval CLI and normalises its results.

Import-light on purpose: ``eval.lmms.manifest`` is loaded by lmms-eval's entry-point registry at start-up,
so nothing here imports torch, transformers or lmms_eval at module level.
"""
