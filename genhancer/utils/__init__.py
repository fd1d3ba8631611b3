"""Shared, model-free plumbing used by all three packages (genhancer, llava_integration, eval):
config schema, registries, errors, atomic files, provenance, rank-aware logging, the one image opener for
training data (``images``) and the safetensors-only rule for model weights (``weights``)."""
