"""Fixtures of the LLaVA tests: a tiny toy LLM (sentencepiece tokenizer, random weights), a tiny fake world
with its LLaVA JSON, and a tiny assembled LLaVA -- all built from config into temporary directories."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"llava_tests_{name}", _HERE / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def llava_world(tmp_path_factory):
    from toyworld.llava_data import write_llava_data

    root = _load("fakeworld").make_world(tmp_path_factory.mktemp("llava_world"))
    write_llava_data(root, seed=0)
    return root


@pytest.fixture(scope="session")
def toy_llm_dir(tmp_path_factory, llava_world):
    from toyworld.llava_data import llm_texts
    from toyworld.llm import ToyLlmConfig, build_toy_llm

    cfg = ToyLlmConfig(
        vocab_size=400,
        hidden_size=32,
        intermediate_size=64,
        num_layers=2,
        num_heads=2,
        num_kv_heads=1,
        steps=0,
    )
    return build_toy_llm(llm_texts(llava_world), tmp_path_factory.mktemp("toy_llm") / "llm", cfg)


@pytest.fixture(scope="session")
def assembled_dir(tmp_path_factory, tiny_clip_dir, toy_llm_dir):
    from llava_integration.build import build
    from llava_integration.config import ModelConfig

    out = tmp_path_factory.mktemp("llava") / "assembled"
    return build(ModelConfig(encoder=str(tiny_clip_dir), llm=str(toy_llm_dir)), out)


@pytest.fixture(scope="session")
def assembled_processor(assembled_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(assembled_dir)
