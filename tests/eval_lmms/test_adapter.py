"""The batched adapter: registration, answers equal to llava_hf's, likelihood scores, loud failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from eval.lmms import inprocess, suites
from eval.lmms.modeldir import check_llava_dir
from genhancer.utils.errors import ConfigError, ModelDirError


def test_registered_with_lmms_eval_registry():
    from lmms_eval.models import MODEL_REGISTRY_V2, get_model

    from eval.lmms.adapter import GenhancerLlava, GenhancerLlavaChat

    assert get_model("genhancer_llava") is GenhancerLlava
    assert MODEL_REGISTRY_V2.resolve("genhancer_llava").model_type == "simple"
    assert get_model("genhancer_llava_chat") is GenhancerLlavaChat


def test_answers_equal_llava_hf(tiny_llava_dir, toy_world, tmp_path):
    include, names = suites.write_include_dir(
        ["toy_mmvp", "toy_pope_random", "toy_cv_bench"], tmp_path / "inc", toy_data=toy_world
    )
    ref = inprocess.evaluate_instance(inprocess.load_llava_hf(tiny_llava_dir), names, include, 3)
    ours = inprocess.evaluate_instance(
        inprocess.load_genhancer_llava(tiny_llava_dir, batch_size=3), names, include, 3
    )
    assert ref.n_samples == ours.n_samples == 9
    assert inprocess.compare_answers(ours, ref) == []


class _Req:
    def __init__(self, args):
        self.args = args


def _doc_to_visual(doc):
    return [doc["image"]]


def test_loglikelihood_batched_equals_unpadded_forward(tiny_llava_dir):
    model = inprocess.load_genhancer_llava(tiny_llava_dir, batch_size=4)
    docs = [{"image": Image.new("RGB", (40, 40), c)} for c in ("red", "blue")]
    model.task_dict = {"t": {"test": docs}}
    prompts = ["Is there a circle in the image?", "How many stars are in the image? A. one B. two C. three"]
    reqs = [
        _Req((p, cont, _doc_to_visual, i, "t", "test"))
        for i, p in enumerate(prompts)
        for cont in (" A", " yes", " left right")
    ]
    got = model.loglikelihood(reqs)

    proc, net = model.processor, model.model
    for req, (ll, greedy) in zip(reqs, got):
        ctx, cont, _, doc_id, _, _ = req.args
        prompt = model.build_prompt(ctx, 1)
        full = proc(text=[prompt + cont], images=[docs[doc_id]["image"]], return_tensors="pt")
        n = len(proc.tokenizer(prompt + cont).input_ids) - len(proc.tokenizer(prompt).input_ids)
        with torch.inference_mode():
            logits = net(**full).logits[0].float()
        ids = full["input_ids"][0]
        lp = torch.log_softmax(logits[-n - 1 : -1], -1)
        expected = lp.gather(-1, ids[-n:, None]).sum().item()
        assert ll == pytest.approx(expected, abs=1e-4)
        assert greedy == bool((lp.argmax(-1) == ids[-n:]).all())
        assert ll < 0


def test_failing_generation_names_task_and_doc(broken_llava_dir):
    from eval.lmms.adapter import GenerationError

    model = inprocess.load_genhancer_llava(broken_llava_dir, batch_size=2)
    model.task_dict = {"toy_x": {"test": [{"image": Image.new("RGB", (32, 32))}] * 3}}
    reqs = [
        _Req(("Is there a circle?", {"max_new_tokens": 2}, _doc_to_visual, i, "toy_x", "test"))
        for i in range(3)
    ]
    with pytest.raises(GenerationError, match=r"task 'toy_x', doc_id\(s\) \[\d+(, \d+)?\]"):
        model.generate_until(reqs)


def test_runtime_defaults_on_cpu_and_bad_args():
    from eval.lmms.adapter import resolve_runtime

    rt = resolve_runtime(None, None, None)
    if not torch.cuda.is_available():
        assert (rt.device.type, rt.dtype, rt.attn_implementation) == ("cpu", torch.float32, "sdpa")
    with pytest.raises(ConfigError, match="dtype='float8'"):
        resolve_runtime("cpu", "float8", None)


def test_unknown_model_arg_and_batch_size(tiny_llava_dir):
    from eval.lmms.adapter import GenhancerLlava

    with pytest.raises(ConfigError, match="unknown genhancer_llava model arg"):
        GenhancerLlava(pretrained=str(tiny_llava_dir), device="cpu", temperature=0.3)
    with pytest.raises(ConfigError, match="'auto' is not implemented"):
        GenhancerLlava(pretrained=str(tiny_llava_dir), device="cpu", batch_size="auto")


def test_model_dir_that_is_not_llava(tmp_path: Path):
    clip = tmp_path / "clip"
    clip.mkdir()
    (clip / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(ModelDirError, match="model_type 'clip', expected 'llava'.*mmvp_vlm"):
        check_llava_dir(clip)
    with pytest.raises(ModelDirError, match="not found"):
        check_llava_dir(tmp_path / "missing")
    with pytest.raises(ModelDirError, match="no config.json"):
        check_llava_dir(tmp_path)


def test_trust_remote_code_is_refused(tiny_llava_dir):
    from eval.lmms.adapter import GenhancerLlava

    with pytest.raises(ConfigError, match="trust_remote_code=true is refused"):
        GenhancerLlava(pretrained=str(tiny_llava_dir), device="cpu", trust_remote_code="true")


def test_pickle_only_llava_dir_is_refused_with_a_conversion_that_works(tiny_llava_dir, tmp_path):
    from tests.pickled import pickle_only_copy, run_conversion

    d = pickle_only_copy(tiny_llava_dir, tmp_path / "llava")
    with pytest.raises(ModelDirError, match="only pickled weights") as e:
        check_llava_dir(d)
    run_conversion(str(e.value))
    assert check_llava_dir(d) == d.resolve()
