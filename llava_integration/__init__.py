"""LLaVA-1.5-style integration: any encoder directory + any causal LM -> an HF
LlavaForConditionalGeneration."""
