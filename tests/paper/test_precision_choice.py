"""benchmarks.paper_shapes.cpu_step_precision: the real-shape smoke steps run in bf16 only where the CPU has
it natively (emulated bf16 made one step take more than an hour on an AVX2-only CPU)."""

from __future__ import annotations

import pytest
import torch

from benchmarks import paper_shapes


@pytest.mark.parametrize(("native", "precision"), [(True, "bf16"), (False, "fp32")])
def test_bf16_only_where_the_cpu_has_it(monkeypatch, native, precision):
    monkeypatch.setattr(paper_shapes, "cpu_has_native_bf16", lambda: native)
    assert paper_shapes.cpu_step_precision() == precision


def test_a_build_without_the_probe_counts_as_emulated(monkeypatch):
    def missing():
        raise AttributeError("no _is_mkldnn_bf16_supported in this build")

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", missing, raising=False)
    assert paper_shapes.cpu_has_native_bf16() is False
