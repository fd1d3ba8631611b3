"""The pure MMVP-VLM scorer, fed hand-built pair logits with known answers."""

from __future__ import annotations

import pytest
import torch

from eval.mmvp_vlm import score_pairs


def test_hand_built_logits_give_known_scores():
    # [p, s, i]: statement s of pair p against image i; odd qid (row 1) belongs with image 1.
    logits = torch.tensor(
        [
            [[2.0, 0.0], [0.0, 2.0]],  # A: both right -> pair correct
            [[2.0, 0.0], [2.0, 0.0]],  # A: statement 2 picks image 1 -> pair wrong
            [[0.0, -1.0], [-3.0, 5.0]],  # A: both right
            [[0.0, 2.0], [2.0, 0.0]],  # B: both swapped -> wrong
            [[1.0, 1.0], [0.0, 1.0]],  # C: tie p = 0.5 is not > 0.5 -> image 2 -> statement 1 wrong
            [[3.0, 1.0], [1.0, 3.0]],  # C: right
        ]
    )
    qids = [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12)]
    patterns = ["A", "A", "A", "B", "C", "C"]
    res = score_pairs(logits, qids, patterns)

    assert list(res["scores"]) == ["A", "B", "C"]  # first-seen order
    assert res["scores"]["A"] == pytest.approx(200 / 3)
    assert res["scores"]["B"] == 0.0
    assert res["scores"]["C"] == 50.0
    # the average is the mean of pattern scores (33.3 + ...), not the fraction of correct pairs (3/6)
    assert res["average"] == pytest.approx((200 / 3 + 0 + 50) / 3)
    assert res["counts"]["A"] == {"correct": 2, "pairs": 3}
    assert res["num_pairs"] == 6
    assert [r["correct"] for r in res["pairs"]] == [True, False, True, False, False, True]
    assert res["pairs"][1]["predictions"] == [1, 1] and res["pairs"][1]["ground_truth"] == [1, 2]
    assert res["pairs"][4]["probs_image1"][0] == 0.5 and res["pairs"][4]["predictions"] == [2, 2]
    assert res["pairs"][0]["probs_image1"][0] == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item())


def test_ground_truth_follows_qid_parity_not_row_order():
    # a pair listed even-first: statement 1 (qid 2) belongs with image 2, statement 2 (qid 1) with image 1
    logits = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    res = score_pairs(logits, [(2, 1)], ["A"])
    assert res["pairs"][0]["ground_truth"] == [2, 1]
    assert res["pairs"][0]["correct"]


def test_official_shape_one_pair_moves_average_by_0_74():
    wrong = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # both statements pick the other image
    logits = wrong.expand(135, 2, 2).clone()
    logits[0] = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    qids = [(2 * k + 1, 2 * k + 2) for k in range(135)]
    patterns = [f"pattern {k // 15}" for k in range(135)]
    res = score_pairs(logits, qids, patterns)
    assert len(res["scores"]) == 9
    assert res["scores"]["pattern 0"] == pytest.approx(100 / 15)
    assert res["average"] == pytest.approx(100 / 15 / 9)  # 0.74 pt


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match=r"\(P, 2, 2\)"):
        score_pairs(torch.zeros(3, 2), [(1, 2)] * 3, ["A"] * 3)
    with pytest.raises(ValueError, match="same length"):
        score_pairs(torch.zeros(2, 2, 2), [(1, 2)], ["A"])
