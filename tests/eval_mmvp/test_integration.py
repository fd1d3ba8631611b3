"""End to end: tiny CLIP / SigLIP directories through `python -m eval.mmvp_vlm` and `eval.zeroshot` mains."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

from eval import mmvp_vlm, zeroshot
from eval.encoders import load_encoder
from eval.mmvp_vlm import evaluate_mmvp_vlm, pair_logits_batched, pair_logits_per_pair, read_benchmark
from genhancer.utils.provenance import write_provenance


def test_cli_writes_result_json_table_and_plot(tiny_clip_dir, bench_factory, tmp_path, capsys):
    model = tmp_path / "clip"
    shutil.copytree(tiny_clip_dir, model)
    write_provenance(model, "toy_clip", config={"seed": 0})
    bench = bench_factory()
    out, png = tmp_path / "res" / "result.json", tmp_path / "res" / "bars.png"
    rc = mmvp_vlm.main(
        [
            "--model",
            str(model),
            "--benchmark",
            str(bench),
            "--out",
            str(out),
            "--plot",
            str(png),
            "--batch-size",
            "3",
        ]
    )
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["model_dir"] == str(model) and res["bench_dir"] == str(bench)
    assert res["model_family"] == "clip" and res["protocol"]["max_length"] == 77
    assert res["provenance"]["kind"] == "toy_clip"
    assert list(res["scores"]) == ["Orientation and Direction", "Color and Appearance"]
    assert res["num_pairs"] == 4 and len(res["pairs"]) == 4
    # internal consistency: scores and average follow from the per-pair records
    for pattern, score in res["scores"].items():
        rows = [p for p in res["pairs"] if p["pattern"] == pattern]
        assert score == pytest.approx(100 * sum(p["correct"] for p in rows) / len(rows))
    assert res["average"] == pytest.approx(sum(res["scores"].values()) / 2)
    for p in res["pairs"]:
        probs = torch.tensor(p["logits"]).softmax(-1)[:, 0]
        assert p["probs_image1"] == pytest.approx(probs.tolist(), abs=1e-6)
        assert p["predictions"] == [1 if q > 0.5 else 2 for q in p["probs_image1"]]
        assert p["correct"] == (p["predictions"] == p["ground_truth"] == [1, 2])
        assert p["statements"][0].startswith("a square")
    # geometry: from the model's own unit embeddings of the pair's images and prefixed statements
    clip, proc = CLIPModel.from_pretrained(model), CLIPProcessor.from_pretrained(model)
    pair = mmvp_vlm.read_benchmark(bench)[0]
    with torch.no_grad():
        img = clip.get_image_features(
            **proc(images=[Image.open(p).convert("RGB") for p in pair.images], return_tensors="pt")
        )
        txt = clip.get_text_features(
            **proc.tokenizer(
                ["a photo of " + s for s in pair.statements], padding="max_length", return_tensors="pt"
            )
        )
    img, txt = (torch.nn.functional.normalize(getattr(x, "pooler_output", x), dim=-1) for x in (img, txt))
    d_img = img[0] - img[1]
    assert res["pairs"][0]["image_separation"] == pytest.approx(d_img.norm().item(), rel=1e-4)
    cos = torch.nn.functional.cosine_similarity(d_img, txt[0] - txt[1], dim=0).item()
    assert res["pairs"][0]["text_alignment"] == pytest.approx(cos, abs=1e-4)
    assert res["geometry"]["average"]["image_separation"] > 0
    iv = res["intervals"]  # bootstrap intervals, resampling the 2 pairs within each pattern
    assert list(iv["scores"]) == list(res["scores"]) and iv["level"] == 0.95
    for pattern, score in res["scores"].items():
        lo, hi = iv["scores"][pattern]
        assert lo <= score <= hi and {lo, hi} <= {0.0, 50.0, 100.0}  # 2 pairs: only 0, 1/2 or 2/2 right
    table = capsys.readouterr().out
    assert "Orientation and Direction" in table and "average" in table and "95% interval" in table
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_batched_predictions_equal_official_per_pair_loop(tiny_clip_dir, bench_factory):
    model, processor = load_encoder(tiny_clip_dir)
    pairs = read_benchmark(bench_factory())
    batched = pair_logits_batched(model, processor, pairs, batch_size=3, show_progress=False)
    official = pair_logits_per_pair(model, processor, pairs, forwards_per_pair=2)
    torch.testing.assert_close(batched, official, rtol=1e-4, atol=1e-4)
    assert torch.equal(batched.softmax(-1)[..., 0] > 0.5, official.softmax(-1)[..., 0] > 0.5)


def test_siglip_dir_through_the_evaluator(tiny_siglip_dir, bench_factory):
    res = evaluate_mmvp_vlm(tiny_siglip_dir, bench_factory(), batch_size=4, show_progress=False)
    assert res["model_family"] == "siglip" and res["protocol"]["max_length"] == 64
    assert res["num_pairs"] == 4 and res["provenance"] is None


def test_compare_mode_prints_deltas_and_plots(tmp_path, capsys):
    def result(scores):
        return {"scores": scores, "average": sum(scores.values()) / len(scores)}

    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(result({"Texts": 20.0, "Quantity and Count": 40.0})))
    b.write_text(json.dumps(result({"Texts": 26.7, "Quantity and Count": 33.3})))
    png = tmp_path / "cmp.png"
    rc = mmvp_vlm.main(["--compare", str(a), str(b), "--labels", "orig", "genhancer", "--plot", str(png)])
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert "orig" in lines[0] and "genhancer" in lines[0] and "delta" in lines[0]
    assert any(line.startswith("Texts") and line.rstrip().endswith("+6.7") for line in lines)
    assert any(line.startswith("Quantity and Count") and line.rstrip().endswith("-6.7") for line in lines)
    assert lines[-1].startswith("average") and lines[-1].rstrip().endswith("+0.0")
    _assert_bars(png, n_series=2)


def _assert_bars(png, n_series: int) -> None:
    """The chart holds bars of each series: matplotlib's first ``n_series`` cycle colours fill real area."""
    import numpy as np
    from PIL import Image

    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    cycle = [(31, 119, 180), (255, 127, 14), (44, 160, 44)][:n_series]
    areas = [int((np.abs(rgb - np.array(c)).sum(-1) <= 6).sum()) for c in cycle]
    assert min(areas) > 500, areas


def test_cli_errors_are_one_line_and_exit_2(tiny_clip_dir, bench_factory, tmp_path, capsys):
    bench = bench_factory()
    (bench / "MLLM_VLM Images" / "Color and Appearance" / "6.jpg").unlink()
    rc = mmvp_vlm.main(
        ["--model", str(tiny_clip_dir), "--benchmark", str(bench), "--out", str(tmp_path / "r.json")]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "Color and Appearance/6.jpg" in err
    assert not (tmp_path / "r.json").exists()

    assert mmvp_vlm.main(["--model", str(tiny_clip_dir)]) == 2
    assert "missing --benchmark, --out" in capsys.readouterr().err
    bogus = tmp_path / "bogus.json"
    bogus.write_text("{}")
    assert mmvp_vlm.main(["--compare", str(bogus), str(bogus)]) == 2
    assert "not an MMVP-VLM result" in capsys.readouterr().err


def _zeroshot_spec(root, labels_by_color):
    from PIL import Image

    (root / "images").mkdir(parents=True)
    items = []
    for i, (color, label) in enumerate(labels_by_color):
        name = f"images/{i:06d}.png"
        Image.new("RGB", (32, 32), color).save(root / name)
        items.append({"image": name, "label": label})
    spec = {"template": "a photo of a {}.", "classes": ["square", "circle", "star"], "items": items}
    (root / "spec.json").write_text(json.dumps(spec))
    return root / "spec.json"


def test_zeroshot_cli(tiny_clip_dir, tmp_path, capsys):
    spec = _zeroshot_spec(
        tmp_path / "zs",
        [((200, 0, 0), "square"), ((0, 200, 0), "circle"), ((0, 0, 200), "square"), ((90, 90, 0), "star")],
    )
    out = tmp_path / "zs.json"
    assert zeroshot.main(["--model", str(tiny_clip_dir), "--spec", str(spec), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["num_items"] == 4 and len(res["predictions"]) == 4
    assert set(res["predictions"]) <= {"square", "circle", "star"}
    assert res["per_class"]["square"]["n"] == 2
    correct = sum(p == it for p, it in zip(res["predictions"], ["square", "circle", "square", "star"]))
    assert res["accuracy"] == pytest.approx(100 * correct / 4)
    assert "overall" in capsys.readouterr().out


def test_zeroshot_bad_spec_names_item(tiny_clip_dir, tmp_path, capsys):
    spec = _zeroshot_spec(tmp_path / "zs", [((200, 0, 0), "square"), ((0, 200, 0), "hexagon")])
    assert zeroshot.main(["--model", str(tiny_clip_dir), "--spec", str(spec)]) == 2
    assert "items[1] has label 'hexagon'" in capsys.readouterr().err
    data = json.loads(spec.read_text())
    data["items"] = [{"image": "images/missing.png", "label": "star"}]
    spec.write_text(json.dumps(data))
    assert zeroshot.main(["--model", str(tiny_clip_dir), "--spec", str(spec)]) == 2
    assert "items[0] image not found" in capsys.readouterr().err
