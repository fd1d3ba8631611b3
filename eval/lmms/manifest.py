"""The payload of the ``lmms_eval.models`` entry point (see pyproject.toml).

lmms-eval 0.7.3 builds its model registry (``lmms_eval.models.registry_v2.ModelRegistryV2``) from its
built-in table plus every entry point of the group ``lmms_eval.models``; a payload may be a callable
returning ``ModelManifest`` objects. Only class *paths* are given, so registering costs nothing: the adapter
module (torch, transformers) is imported when a run asks for the model.

- ``genhancer_llava`` -> the "simple" class: lmms-eval hands it ``doc_to_visual`` + the task's text and
  builds plain ``ConfigurableTask`` requests, which is the only request form that supports both
  ``generate_until`` and ``loglikelihood`` / ``multiple_choice`` tasks in 0.7.3 (chat-mode tasks assert
  "messages is used for generation only").
- ``genhancer_llava_chat`` -> the chat class, for tasks that define ``doc_to_messages`` (generation only).
"""

from __future__ import annotations

MODEL_ID = "genhancer_llava"
CHAT_MODEL_ID = "genhancer_llava_chat"
SIMPLE_CLASS = "eval.lmms.adapter.GenhancerLlava"
CHAT_CLASS = "eval.lmms.adapter.GenhancerLlavaChat"


def manifests() -> list:
    """Called by lmms-eval's registry; returns the two model manifests."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [
        ModelManifest(model_id=MODEL_ID, simple_class_path=SIMPLE_CLASS, aliases=("genhancer_llava_hf",)),
        ModelManifest(model_id=CHAT_MODEL_ID, chat_class_path=CHAT_CLASS),
    ]
