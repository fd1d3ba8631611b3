"""export: merged LoRA -> plain HF CLIPModel directory (text tower untouched); sample: a PNG grid."""

from __future__ import annotations

import json

import pytest
import torch

from genhancer.module import GenHancerModel


@pytest.fixture(scope="module")
def stage2_run(tmp_path_factory, tiny_clip_dir):
    """A stage-2 run directory <run>/final whose LoRA has non-zero B (as after training)."""
    from genhancer.config import load_genhancer_config

    root = tmp_path_factory.mktemp("runs")
    base = [
        f"encoder.path={tiny_clip_dir}",
        "denoiser.preset=toy",
        "latent.space=pixel",
        "latent.patch_size=4",
        "flow.sample_steps=2",
        "lora.targets=[all-linear]",
    ]
    torch.manual_seed(0)
    GenHancerModel.build(load_genhancer_config(None, base)).save_pretrained(root / "s1" / "final")
    model = GenHancerModel.build(
        load_genhancer_config(None, [*base, "stage=stage2", f"init_from={root / 's1' / 'final'}"])
    )
    with torch.no_grad():
        for n, p in model.encoder.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    model.save_pretrained(root / "s2" / "final", extra={"step": 12})
    return root


def test_export_merges_lora_and_keeps_text_tower(stage2_run, tiny_clip_dir, tmp_path):
    from transformers import AutoProcessor, CLIPModel

    from genhancer.export import main

    mmvp = tmp_path / "mmvp.json"
    mmvp.write_text(
        json.dumps({"scores": {"Orientation and Direction": 40.0, "Texts": 20.0}, "average": 30.0})
    )
    out = tmp_path / "encoder"
    assert main(["--run", str(stage2_run / "s2"), "--out", str(out), "--mmvp", str(mmvp)]) == 0
    assert (out / "model.safetensors").is_file() and not list(out.rglob("*.bin"))
    card = (out / "README.md").read_text()
    assert str(tiny_clip_dir) in card and "| steps | 12 |" in card and "**30.0**" in card
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["kind"] == "genhancer-encoder" and len(prov["parents"]) == 2

    base = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    new = CLIPModel.from_pretrained(out).eval()  # plain transformers, no peft, no genhancer
    AutoProcessor.from_pretrained(out)  # processor + tokenizer shipped
    base_sd, new_sd = base.state_dict(), new.state_dict()
    assert set(base_sd) == set(new_sd)
    text = [k for k in base_sd if k.startswith(("text_model.", "text_projection", "logit_scale"))]
    assert text and all(torch.equal(base_sd[k], new_sd[k]) for k in text)  # bit-identical
    changed = [k for k in base_sd if k.startswith("vision_model.") and not torch.equal(base_sd[k], new_sd[k])]
    assert any("q_proj.weight" in k for k in changed)
    assert not torch.equal(base_sd["visual_projection.weight"], new_sd["visual_projection.weight"])

    # the merged model computes what the trained GenHancer encoder computed
    trained = GenHancerModel.from_pretrained(stage2_run / "s2" / "final")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = trained.encoder(x).global_token
        got = new.get_image_features(pixel_values=x).pooler_output
    assert torch.allclose(want, got, atol=1e-5)


def test_the_card_names_every_setting_that_leaves_the_papers_recipe(make_cfg, tmp_path):
    from genhancer.export import model_card

    def card(*overrides: str) -> str:
        return model_card(make_cfg(*overrides), "base", tmp_path, 1, None)

    assert "| flow loss |" not in card() and "| condition |" not in card()
    assert "| flow loss | MSE + 4.0 x high-passed MSE (flow.detail_weight) |" in card("flow.detail_weight=4")
    assert "conditioning.whiten" in card("conditioning.whiten=true")


def test_export_refuses_a_stage1_dir(stage2_run, tmp_path, capsys):
    from genhancer.export import main

    assert main(["--run", str(stage2_run / "s1"), "--out", str(tmp_path / "x")]) == 2
    assert "stage-1" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_sample_writes_a_grid(stage2_run, tmp_path):
    from PIL import Image

    from genhancer.sample import main

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i, color in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        Image.new("RGB", (40, 48), color).save(imgs / f"{i}.png")
    out = tmp_path / "grid.png"
    assert (
        main(
            [
                "--stage-dir",
                str(stage2_run / "s1"),
                "--images",
                str(imgs),
                "--out",
                str(out),
                "--n",
                "2",
                "--steps",
                "2",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    grid = Image.open(out)
    assert grid.size == (2 * 34 + 2, 2 * 34 + 2)  # 2 columns, originals row + reconstructions row, 2 px pad
    assert grid.getpixel((2 + 16, 2 + 16)) == (255, 0, 0)  # first original, red


def test_export_siglip(tiny_siglip_dir, tmp_path):
    from transformers import SiglipModel

    from genhancer.config import load_genhancer_config
    from genhancer.export import export_encoder

    cfg = load_genhancer_config(
        None,
        [
            "encoder.family=siglip",
            f"encoder.path={tiny_siglip_dir}",
            "denoiser.preset=toy",
            "latent.space=pixel",
            "latent.patch_size=4",
            "lora.targets=[q_proj, k_proj, v_proj, out_proj, fc1, fc2]",
            "stage=end-to-end",
        ],
    )
    model = GenHancerModel.build(cfg)
    with torch.no_grad():
        for n, p in model.encoder.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    model.save_pretrained(tmp_path / "run" / "final")
    out = export_encoder(tmp_path / "run", tmp_path / "enc")
    base, new = SiglipModel.from_pretrained(tiny_siglip_dir), SiglipModel.from_pretrained(out)
    b, n = base.state_dict(), new.state_dict()
    assert all(torch.equal(b[k], n[k]) for k in b if k.startswith("text_model."))
    assert not torch.equal(b["vision_model.head.mlp.fc1.weight"], n["vision_model.head.mlp.fc1.weight"])
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(
            model.eval().encoder(x).global_token,
            new.get_image_features(pixel_values=x).pooler_output,
            atol=1e-5,
        )


def test_random_update_control_matches_the_trained_update_size(stage2_run, tiny_clip_dir, tmp_path):
    """The control export moves each adapted weight by as much as the trained export, in another direction."""
    from transformers import CLIPModel

    from genhancer.export import main

    trained, control = tmp_path / "trained", tmp_path / "control"
    assert main(["--run", str(stage2_run / "s2"), "--out", str(trained)]) == 0
    assert main(["--run", str(stage2_run / "s2"), "--out", str(control), "--random-update", "3"]) == 0
    base = CLIPModel.from_pretrained(tiny_clip_dir).state_dict()
    a, b = CLIPModel.from_pretrained(trained).state_dict(), CLIPModel.from_pretrained(control).state_dict()
    moved = [k for k in base if k.startswith("vision_model") and not torch.equal(base[k], a[k])]
    assert any(k.endswith("q_proj.weight") for k in moved)
    for k in moved:
        d_trained, d_control = (a[k] - base[k]).flatten(), (b[k] - base[k]).flatten()
        assert torch.allclose(d_control.norm(), d_trained.norm(), rtol=1e-4), k
        if d_trained.numel() > 64:
            assert torch.nn.functional.cosine_similarity(d_trained, d_control, dim=0).abs() < 0.5, k
    assert all(torch.equal(base[k], b[k]) for k in base if k.startswith("text_model"))
    prov = json.loads((control / "provenance.json").read_text())
    assert prov["extra"]["control"]["kind"] == "random-update"


def test_zero_condition_makes_the_condition_carry_nothing():
    from genhancer.conditioning import GlobalTokenConditioner

    torch.manual_seed(0)
    cond = GlobalTokenConditioner(8, 4, 6, zero_condition=True)
    p1, c1 = cond(torch.randn(3, 8))
    p2, c2 = cond(torch.randn(3, 8))
    assert torch.equal(p1, p2) and torch.equal(c1, c2)
    p3, _ = GlobalTokenConditioner(8, 4, 6)(torch.randn(3, 8))
    assert not torch.allclose(p3[0], p3[1])
