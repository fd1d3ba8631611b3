"""Linear probes: label reading, the logistic-regression solver, features of CLIP / SigLIP, CLI and
compare."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from eval import probes
from eval.probes import (
    compare_probes,
    encode_labels,
    fit_logistic,
    image_features,
    read_split,
    run_probes,
    scalar_attributes,
)
from genhancer.utils.errors import DataError


# ----------------------------------------------------------------------------------------------- labels
def test_labels_from_a_folder_or_the_file_and_attribute_choice(labelled_world):
    path, images, attrs = read_split(labelled_world / "train", limit=50)
    assert path == labelled_world / "train" / "scenes.jsonl" and len(images) == len(attrs) == 50
    assert images[3] == labelled_world / "train" / "images" / "000003.png" and images[3].is_file()
    same = read_split(labelled_world / "train" / "scenes.jsonl", limit=50)
    assert same[1] == images
    # list-valued keys are never probed; null-valued ones are
    assert scalar_attributes(attrs) == ["color", "side", "noise", "mark", "kind"]
    classes, y_train, y_val = encode_labels(attrs[:10], attrs[10:20], "mark")
    assert classes == ["dot", "none"] and y_train[0] == 0 and y_train[1] == 1


def test_unseen_val_class_counts_as_wrong():
    train = [{"c": "red"}, {"c": "blue"}]
    val = [{"c": "blue"}, {"c": "green"}]
    classes, _, y_val = encode_labels(train, val, "c")
    assert classes == ["blue", "red"] and y_val.tolist() == [0, -1]


def test_bad_label_files_name_the_record(tmp_path, labelled_world):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"image": "x.png", "scene": {"c": 1}}) + "\n" + json.dumps({"scene": {"c": 2}}) + "\n"
    )
    with pytest.raises(DataError, match=r"bad.jsonl, record 2: no 'image' key"):
        read_split(bad)
    with pytest.raises(DataError, match="record 1: no attribute object under 'attrs'"):
        read_split(bad, attribute_key="attrs")
    with pytest.raises(DataError, match="label file not found"):
        read_split(tmp_path)
    with pytest.raises(DataError, match="colour"):
        run_probes("unused", labelled_world / "train", labelled_world / "val", attributes=["colour"])


# ----------------------------------------------------------------------------------------------- solver
def test_solver_reaches_the_optimum_of_the_regularised_objective():
    """The preconditioned solver must minimise the *original* objective: its gradient vanishes there."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(400, 3, generator=g, dtype=torch.float64)
    # strongly correlated columns: the ill-conditioned case the preconditioner is for
    x = torch.cat(
        [
            base,
            base @ torch.randn(3, 5, generator=g, dtype=torch.float64)
            + 0.01 * torch.randn(400, 5, generator=g, dtype=torch.float64),
        ],
        dim=1,
    )
    y = (base @ torch.randn(3, 4, generator=g, dtype=torch.float64)).argmax(dim=1)
    l2 = 1e-2
    w, b = fit_logistic(x, y, 4, l2=l2, max_iter=500)
    w.requires_grad_(True)
    b.requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(x @ w + b, y) + 0.5 * l2 * (w * w).sum()
    gw, gb = torch.autograd.grad(loss, [w, b])
    assert gw.abs().max() < 1e-6 and gb.abs().max() < 1e-6
    assert ((x @ w + b).argmax(1) == y).double().mean() > 0.9
    # deterministic: zero start, full batch
    w2, b2 = fit_logistic(x, y, 4, l2=l2, max_iter=500)
    assert torch.equal(w.detach(), w2) and torch.equal(b.detach(), b2)


# ----------------------------------------------------------------------------------------------- features
def test_features_are_the_models_own_tokens(tiny_clip_dir, tiny_siglip_dir, labelled_world):
    from eval.encoders import load_encoder, load_image

    paths = [labelled_world / "val" / "images" / f"{i:06d}.png" for i in range(3)]
    for model_dir, drop_cls in ((tiny_clip_dir, 1), (tiny_siglip_dir, 0)):
        model, processor = load_encoder(model_dir)
        feats = image_features(model, processor, paths, batch_size=2, show_progress=False)
        pixels = processor.image_processor(images=[load_image(p) for p in paths], return_tensors="pt")[
            "pixel_values"
        ]
        with torch.no_grad():
            out = model.vision_model(pixel_values=pixels)
            glob = model.visual_projection(out.pooler_output) if drop_cls else out.pooler_output
        torch.testing.assert_close(feats["global"], glob.double(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            feats["mean_patch"], out.last_hidden_state[:, drop_cls:].mean(1).double(), rtol=1e-5, atol=1e-5
        )


# ----------------------------------------------------------------------------------------------- end to end
def test_cli_probes_every_attribute_and_writes_items(tiny_clip_dir, labelled_world, tmp_path, capsys):
    out, png = tmp_path / "p.json", tmp_path / "p.png"
    rc = probes.main(
        [
            "--model",
            str(tiny_clip_dir),
            "--train",
            str(labelled_world / "train"),
            "--val",
            str(labelled_world / "val"),
            "--out",
            str(out),
            "--plot",
            str(png),
            "--max-val",
            "50",
        ]
    )
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["attributes"] == ["color", "side", "noise", "mark"]  # 'kind' has one class, 'offset' is a list
    assert res["num_train"] == 120 and res["num_val"] == 50 and len(res["items"]) == 50
    assert res["items"][0] == "images/000000.png" and res["features"] == ["global", "mean_patch"]
    for feature in res["features"]:
        for r in res["probes"][feature].values():
            assert len(r["correct"]) == 50 and r["accuracy"] == pytest.approx(np.mean(r["correct"]))
    color = res["probes"]["global"]["color"]
    assert color["classes"] == ["blue", "green", "red"] and color["accuracy"] >= 0.95  # a solid colour
    assert color["chance"] < 0.6
    assert res["probes"]["global"]["noise"]["accuracy"] < 0.8  # a coin flip is not decodable
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == ["attribute", "global", "mean_patch", "majority"]
    assert png.read_bytes()[:4] == b"\x89PNG"
    # same inputs, same probes (no random draw anywhere)
    again = run_probes(
        tiny_clip_dir, labelled_world / "train", labelled_world / "val", max_val=50, show_progress=False
    )
    assert again["probes"] == res["probes"]


def _probe_result(items: int, correct: dict[str, list[int]]) -> dict:
    return {
        "items": [f"images/{i:06d}.png" for i in range(items)],
        "probes": {"global": {a: {"accuracy": float(np.mean(c)), "correct": c} for a, c in correct.items()}},
    }


def test_compare_gives_paired_intervals_and_a_fine_mean():
    n = 200
    before = _probe_result(n, {"color": [1] * n, "orientation": [0] * n, "side": [1, 0] * (n // 2)})
    # orientation: 40 items wrong -> right; side: unchanged; colour: 10 items right -> wrong
    after = _probe_result(
        n,
        {
            "color": [0] * 10 + [1] * (n - 10),
            "orientation": [1] * 40 + [0] * (n - 40),
            "side": [1, 0] * (n // 2),
        },
    )
    cmp = compare_probes(before, after, coarse=["color", "shape"], n_boot=2000)
    rows = cmp["features"]["global"]["attributes"]
    assert rows["orientation"]["delta"] == pytest.approx(0.2) and rows["color"]["delta"] == pytest.approx(
        -0.05
    )
    lo, hi = rows["orientation"]["delta_interval"]
    assert 0.13 < lo < 0.2 < hi < 0.27  # binomial: 0.2 +- 1.96 * sqrt(0.2 * 0.8 / 200)
    assert rows["side"]["delta_interval"] == [0.0, 0.0]
    fine = cmp["features"]["global"]["fine_mean"]
    assert fine["attributes"] == ["orientation", "side"] and fine["delta"] == pytest.approx(0.1)
    assert fine["delta_interval"][0] == pytest.approx(lo / 2) and fine["delta_interval"][1] == pytest.approx(
        hi / 2
    )

    shuffled = dict(after, items=list(reversed(after["items"])))
    with pytest.raises(DataError, match="different val items"):
        compare_probes(before, shuffled)


def test_compare_cli(tmp_path, capsys):
    before = _probe_result(20, {"color": [1] * 20, "orientation": [0] * 20})
    after = _probe_result(20, {"color": [1] * 20, "orientation": [1] * 5 + [0] * 15})
    a, b, out, png = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json", tmp_path / "c.png"
    a.write_text(json.dumps(before))
    b.write_text(json.dumps(after))
    rc = probes.main(
        [
            "--compare",
            str(a),
            str(b),
            "--names",
            "orig",
            "enh",
            "--out",
            str(out),
            "--plot",
            str(png),
            "--bootstrap",
            "300",
        ]
    )
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["global", "orig", "enh", "delta"]
    assert next(x for x in lines if x.startswith("orientation")).split()[3] == "+0.2500"
    assert lines[-1].startswith("fine mean") and "+0.2500" in lines[-1]  # colour is coarse
    saved = json.loads(out.read_text())
    assert saved["names"] == ["orig", "enh"] and saved["n_boot"] == 300
    assert png.read_bytes()[:4] == b"\x89PNG"
    bogus = tmp_path / "bogus.json"
    bogus.write_text("{}")
    assert probes.main(["--compare", str(bogus), str(b)]) == 2
    assert "not a probe result" in capsys.readouterr().err
