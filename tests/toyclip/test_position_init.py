"""The toy CLIP's sine-cosine start for its position embeddings: the code and the saved CLIP."""

from __future__ import annotations

import pytest
import torch

from toyworld import pretrain_clip as pc
from toyworld.models import ToyClipShape, init_positions_sincos, new_toy_clip, sincos_2d, train_clip_tokenizer


def test_sincos_code_separates_rows_and_columns():
    grid, dim = 4, 16
    code = sincos_2d(grid, dim).view(grid, grid, dim)
    rows, cols = code[..., : dim // 2], code[..., dim // 2 :]
    assert torch.equal(rows, rows[:, :1].expand_as(rows))  # the first half depends on the row only
    assert torch.equal(cols, cols[:1].expand_as(cols))  # the second on the column only
    flat = code.view(grid * grid, dim)
    assert torch.allclose(flat.norm(dim=1), torch.full((grid * grid,), (dim / 2) ** 0.5))
    dist = torch.cdist(flat, flat)
    assert dist[0, 1] < dist[0, 3] and dist[0, grid] < dist[0, 3 * grid]  # nearer slots, nearer codes
    assert (dist + torch.eye(grid * grid)).min() > 0.1  # every slot its own code


def test_sincos_code_needs_a_width_divisible_by_four():
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(4, 18)


def test_init_matches_the_patch_embeddings_size_and_leaves_the_class_slot_empty():
    tok = train_clip_tokenizer(["a red star", "a blue circle"], vocab_size=300)
    shape = ToyClipShape(image_size=32, patch_size=8, vision_width=32, vision_layers=1)
    model = new_toy_clip(tok, shape, seed=0)
    pixels = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    scale = init_positions_sincos(model, pixels)
    pos = model.vision_model.embeddings.position_embedding.weight.detach()
    patches = model.vision_model.embeddings.patch_embedding(pixels).flatten(2).transpose(1, 2)
    assert torch.equal(pos[0], torch.zeros(32))
    assert pos[1:].norm(dim=1).mean().item() == pytest.approx(patches.norm(dim=-1).mean().item(), rel=1e-4)
    assert torch.allclose(pos[1:], scale * sincos_2d(4, 32), atol=1e-5)


def test_pretrain_with_sincos_saves_position_embeddings_of_the_code(toy_world, tmp_path, tiny_overrides):
    from safetensors.torch import load_file

    args = [*tiny_overrides, "train.steps=2", "model.position_init=sincos"]
    assert pc.main(["--world", str(toy_world), "--out", str(tmp_path / "clip"), *args]) == 0
    weights = load_file(tmp_path / "clip" / "model.safetensors")
    pos = weights["vision_model.embeddings.position_embedding.weight"]
    code = sincos_2d(4, 32)
    cos = torch.nn.functional.cosine_similarity(pos[1:].flatten(), code.flatten(), dim=0)
    assert cos > 0.99  # two small steps leave the code in place (the default start is N(0, 0.02): cos ~ 0)


def test_sincos_with_a_width_it_cannot_code_is_a_config_error(toy_world, tmp_path, tiny_overrides, capsys):
    args = [*tiny_overrides, "model.vision_width=30", "model.position_init=sincos"]
    assert pc.main(["--world", str(toy_world), "--out", str(tmp_path / "clip"), *args]) != 0
    assert "model.vision_width divisible by 4, got 30" in capsys.readouterr().err
    assert not (tmp_path / "clip").exists()
