"""Scoring on a CUDA device gives the CPU's numbers: exact and top-k scoring, the compiled chunk path, a shared
prompt prefix, the unconditioned pass, and a model pair split over two devices.

Marked `gpu` and skipped where no CUDA device is visible (CI); run them on a GPU machine with
`python -m pytest -m gpu tests/selection/test_gpu.py`.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from paser.selection.config import DegradationConfig
from paser.selection.degradation import score_degradation
from paser.selection.formatting import EncodedSample
from paser.selection.topk import score_degradation_topk

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
QUIET = {"show_progress": False}
COLUMNS = ("cds", "nll_original", "nll_pruned")


def on_cuda(model: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(model).to("cuda")


def assert_same_scores(ours, reference, columns=COLUMNS) -> None:
    assert ours["id"].tolist() == reference["id"].tolist()
    for column in columns:
        # fp32 on both devices; kernels sum in different orders, so agreement is to rounding, not bitwise.
        np.testing.assert_allclose(ours[column], reference[column], rtol=1e-4, atol=1e-6, err_msg=column)


@pytest.fixture(scope="module")
def cpu_scores(original, perturbed, encoded):
    return score_degradation(original, perturbed, encoded, DegradationConfig(compile_jsd="off", **QUIET))


@pytest.mark.parametrize("compile_jsd", ["off", "on"])
def test_cuda_scores_match_cpu(original, perturbed, encoded, cpu_scores, compile_jsd):
    config = DegradationConfig(compile_jsd=compile_jsd, position_chunk=64, **QUIET)
    scores = score_degradation(on_cuda(original), on_cuda(perturbed), encoded, config)
    assert scores["cds"].min() > 0
    assert_same_scores(scores, cpu_scores)


def test_identical_models_score_exactly_zero_on_cuda(original, encoded):
    model = on_cuda(original)
    for compile_jsd in ("off", "on"):
        scores = score_degradation(model, model, encoded, DegradationConfig(compile_jsd=compile_jsd, **QUIET))
        assert (scores["cds"] == 0.0).all()


def test_model_pair_on_two_devices(original, perturbed, encoded, cpu_scores):
    """Original on the GPU, pruned on the CPU: the pruned logits meet the original's on the GPU."""
    scores = score_degradation(on_cuda(original), perturbed, encoded, DegradationConfig(**QUIET))
    assert_same_scores(scores, cpu_scores)


def test_shared_prefix_and_unconditioned_pass_on_cuda(original, perturbed):
    """Rows sharing a 24-token prefix (its key/value cache is reused across the shard's batches) and the
    response-alone pass of `unconditioned_nll` give the CPU's numbers."""
    vocab = original.config.vocab_size
    rng = np.random.default_rng(0)
    prefix = [1, *rng.integers(3, vocab, 23).tolist()]
    rows = [
        EncodedSample(f"row-{index}", prefix + rng.integers(3, vocab, int(length)).tolist(), 30, truncated=False)
        for index, length in enumerate(rng.integers(10, 60, 24))
    ]
    config = DegradationConfig(unconditioned_nll=True, tokens_per_batch=512, **QUIET)
    reference = score_degradation(original, perturbed, rows, config)
    shared = score_degradation(on_cuda(original), on_cuda(perturbed), rows, config)
    unshared = score_degradation(
        on_cuda(original),
        on_cuda(perturbed),
        rows,
        DegradationConfig(unconditioned_nll=True, share_prompt_prefix=False, **QUIET),
    )
    columns = (*COLUMNS, "nll_pruned_unconditioned")
    assert_same_scores(shared, reference, columns)
    assert_same_scores(unshared, reference, columns)


def test_topk_scoring_on_cuda_matches_cpu(original, perturbed, encoded, tmp_path):
    config = DegradationConfig(**QUIET)

    def topk(device: str):
        move = on_cuda if device == "cuda" else copy.deepcopy
        return score_degradation_topk(
            lambda: move(original),
            lambda: move(perturbed),
            encoded,
            config,
            tmp_path / device,
            k=16,
            estimator="bucket",
        )

    assert_same_scores(topk("cuda"), topk("cpu"))
