import gc
import math
import weakref

import numpy as np
import pandas as pd
import pytest
import torch

from paser.selection import topk
from paser.selection.config import DegradationConfig
from paser.selection.degradation import jensen_shannon, score_degradation
from paser.selection.topk import (
    OriginalTopk,
    cache_original_topk,
    estimate_jsd,
    score_degradation_topk,
    score_from_topk,
    summarize_original,
)

QUIET = {"show_progress": False}
pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def exact(original, perturbed, encoded) -> pd.DataFrame:
    return score_degradation(original, perturbed, encoded, DegradationConfig(**QUIET))


def _topk_scores(original, pruned, encoded, folder, k, tail_samples=16, estimator="sampled_tail", **config):
    config = DegradationConfig(**QUIET, **config)
    cache_original_topk(original, encoded, config, folder, k=k, tail_samples=tail_samples)
    return score_from_topk(pruned, encoded, config, folder, estimator=estimator)


def _f(p, q):
    """One vocabulary entry's JSD term ½[p ln(2p/(p+q)) + q ln(2q/(p+q))], float64 arrays."""
    return 0.5 * (p * np.log(2 * p / (p + q)) + q * np.log(2 * q / (p + q)))


def test_kappa_satisfies_its_defining_identity():
    rng = np.random.default_rng(0)
    p, q = rng.uniform(1e-9, 1.0, 1000), 10.0 ** rng.uniform(-12, 0, 1000)
    kappa = topk._kappa(torch.tensor(np.log(p)), torch.tensor(np.log(q))).numpy()
    np.testing.assert_allclose(p * kappa, _f(p, q) - 0.5 * math.log(2) * (q - p), rtol=1e-9, atol=1e-15)
    # κ(0) = ln 2 (the pruned model gives the token no mass); κ(1) = 0 exactly.
    assert topk._kappa(torch.tensor([-1.0]), torch.tensor([-math.inf])).item() == pytest.approx(math.log(2))
    assert topk._kappa(torch.tensor([-3.0]), torch.tensor([-3.0])).item() == 0.0


def _toy_distributions(vocab=40, positions=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    p = torch.log_softmax(torch.randn(positions, vocab, generator=generator) * 2, dim=-1)
    q = torch.log_softmax(torch.randn(positions, vocab, generator=generator) * 2, dim=-1)
    return p, q


def test_bucket_estimate_is_the_jsd_of_the_coarse_grained_distributions():
    p, q = _toy_distributions()
    cached = summarize_original(p, torch.zeros(3, dtype=torch.long), 5, 0, torch.Generator())
    top = p.topk(5, dim=-1).indices
    rest = torch.ones_like(p, dtype=torch.bool).scatter_(1, top, False)
    coarse_p = torch.cat([p.exp().gather(1, top), (p.exp() * rest).sum(-1, keepdim=True)], 1)
    coarse_q = torch.cat([q.exp().gather(1, top), (q.exp() * rest).sum(-1, keepdim=True)], 1)
    m = (coarse_p + coarse_q) / 2
    expected = 0.5 * (coarse_p * (coarse_p / m).log()).sum(-1) + 0.5 * (coarse_q * (coarse_q / m).log()).sum(-1)
    torch.testing.assert_close(estimate_jsd(cached, q, "bucket"), expected.double(), atol=1e-6, rtol=0)
    assert (estimate_jsd(cached, q, "bucket") <= jensen_shannon(p, q).double() + 1e-7).all()


def test_sampled_tail_estimate_is_unbiased():
    # Without the clip to its bounds, the mean over many tail samples converges to the exact JSD.
    p, q = _toy_distributions(positions=1)
    cached = summarize_original(p, torch.zeros(1, dtype=torch.long), 3, 200_000, torch.Generator().manual_seed(0))
    lower = estimate_jsd(cached, q, "bucket")
    estimate = estimate_jsd(cached, q, "sampled_tail")
    exact = jensen_shannon(p, q).double()
    assert abs(estimate - exact).item() < 2e-3 < abs(lower - exact).item()


def test_sampled_tail_estimate_stays_within_the_bounds_of_the_exact_jsd():
    # One tail sample per position: the raw estimate is noisy and must be clipped to the known interval.
    p, q = _toy_distributions(positions=300, seed=1)
    cached = summarize_original(p, torch.zeros(300, dtype=torch.long), 3, 1, torch.Generator().manual_seed(0))
    estimate = estimate_jsd(cached, q, "sampled_tail")
    tail = torch.ones_like(p, dtype=torch.bool).scatter_(1, cached.topk_ids.long(), False)
    tail_mass = ((p.exp() + q.exp()) * tail).sum(-1).double()
    topk_terms = jensen_shannon(cached.topk_logprobs, q.gather(1, cached.topk_ids.long())).double()
    assert (estimate >= estimate_jsd(cached, q, "bucket")).all()
    assert (estimate <= topk_terms + 0.5 * math.log(2) * tail_mass + 1e-7).all()
    assert (estimate == estimate_jsd(cached, q, "bucket")).any()  # the clip was needed somewhere


def test_identical_models_score_exactly_zero(original, encoded, tmp_path):
    for estimator in topk.ESTIMATORS:
        scores = _topk_scores(original, original, encoded, tmp_path, k=4, estimator=estimator)
        assert (scores["cds"] == 0.0).all(), estimator


def test_k_equal_to_vocab_size_gives_the_exact_cds(original, perturbed, encoded, exact, tmp_path):
    vocab_size = original.get_output_embeddings().weight.shape[0]
    for estimator in topk.ESTIMATORS:
        scores = _topk_scores(original, perturbed, encoded, tmp_path, k=vocab_size, estimator=estimator)
        np.testing.assert_allclose(scores["cds"], exact["cds"], atol=1e-6, rtol=0)


def test_bucket_cds_is_a_lower_bound_whose_error_shrinks_as_k_grows(original, perturbed, encoded, exact, tmp_path):
    errors = []
    for k in (2, 8, 32, 128):
        scores = _topk_scores(original, perturbed, encoded, tmp_path / str(k), k=k, tail_samples=0, estimator="bucket")
        assert (scores["cds"] <= exact["cds"] + 1e-6).all()
        errors.append((exact["cds"] - scores["cds"]).abs().mean())
    assert errors == sorted(errors, reverse=True) and errors[-1] < errors[0] / 4


def test_sampled_tail_cds_is_closer_than_the_bucket_lower_bound(original, perturbed, encoded, exact, tmp_path):
    config = DegradationConfig(**QUIET)
    cache_original_topk(original, encoded, config, tmp_path, k=8, tail_samples=16)
    bucket = score_from_topk(perturbed, encoded, config, tmp_path, estimator="bucket")
    sampled = score_from_topk(perturbed, encoded, config, tmp_path, estimator="sampled_tail")
    assert (sampled["cds"] >= bucket["cds"]).all()
    sampled_error = (sampled["cds"] - exact["cds"]).abs().mean()
    assert sampled_error < (bucket["cds"] - exact["cds"]).abs().mean() / 2


def test_columns_and_nlls_equal_exact_scoring(original, perturbed, encoded, tmp_path):
    config = DegradationConfig(unconditioned_nll=True, **QUIET)
    reference = score_degradation(original, perturbed, encoded, config)
    cache_original_topk(original, encoded, config, tmp_path, k=8)
    scores = score_from_topk(perturbed, encoded, config, tmp_path)
    pd.testing.assert_series_equal(scores.dtypes, reference.dtypes)
    columns = ["id", "prompt_tokens", "response_tokens", "nll_original", "nll_pruned", "nll_pruned_unconditioned"]
    pd.testing.assert_frame_equal(scores[[*columns, "truncated"]], reference[[*columns, "truncated"]], check_exact=True)


def test_crash_after_one_cache_shard_resumes_without_recomputing_it(original, encoded, tmp_path, monkeypatch):
    config = DegradationConfig(shard_size=16, **QUIET)  # 40 rows → 3 shards
    cache_original_topk(original, encoded, config, tmp_path / "fresh", k=8)
    real_write = topk._write_cache_shard

    def crash_after_first_shard(store, index, arrays):
        real_write(store, index, arrays)
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(topk, "_write_cache_shard", crash_after_first_shard)
    with pytest.raises(KeyboardInterrupt):
        cache_original_topk(original, encoded, config, tmp_path / "resumed", k=8)
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match=r"unfinished \(shards \[1, 2\] missing\).*resumes"):
        score_from_topk(original, encoded, config, tmp_path / "resumed")

    cached_shards = []
    real_cache_shard = topk._cache_shard

    def counting_cache_shard(parts, rows, *args):
        cached_shards.append(rows[0].id)
        return real_cache_shard(parts, rows, *args)

    monkeypatch.setattr(topk, "_cache_shard", counting_cache_shard)
    cache_original_topk(original, encoded, config, tmp_path / "resumed", k=8)
    assert cached_shards == [encoded[16].id, encoded[32].id]
    for index in range(3):
        with (
            np.load(tmp_path / "fresh" / f"shard-{index:05d}.npz") as fresh,
            np.load(tmp_path / "resumed" / f"shard-{index:05d}.npz") as resumed,
        ):
            assert fresh.files == resumed.files
            for name in fresh.files:
                np.testing.assert_array_equal(fresh[name], resumed[name], strict=True)


def test_cache_folder_of_another_k_is_refused(original, encoded, tmp_path):
    cache_original_topk(original, encoded[:10], DegradationConfig(**QUIET), tmp_path, k=8)
    with pytest.raises(RuntimeError, match=r"changed: topk\)"):
        cache_original_topk(original, encoded[:10], DegradationConfig(**QUIET), tmp_path, k=16)


def test_cache_of_other_rows_is_refused(original, perturbed, encoded, tmp_path):
    cache_original_topk(original, encoded[:10], DegradationConfig(**QUIET), tmp_path, k=8)
    with pytest.raises(RuntimeError, match=r"changed: encoded_sha256, rows\)"):
        score_from_topk(perturbed, encoded[:12], DegradationConfig(**QUIET), tmp_path)


def test_missing_cache_is_refused(perturbed, encoded, tmp_path):
    with pytest.raises(FileNotFoundError, match="no top-k cache.*run cache_original_topk"):
        score_from_topk(perturbed, encoded, DegradationConfig(**QUIET), tmp_path)


def test_sampled_tail_on_a_cache_without_tail_samples_is_refused(original, perturbed, encoded, tmp_path):
    cache_original_topk(original, encoded[:4], DegradationConfig(**QUIET), tmp_path, k=8, tail_samples=0)
    with pytest.raises(ValueError, match="holds none.*estimator='bucket'"):
        score_from_topk(perturbed, encoded[:4], DegradationConfig(**QUIET), tmp_path)


def test_unknown_estimator_is_refused_listing_the_known_ones(original, encoded, tmp_path):
    with pytest.raises(ValueError, match="unknown top-k estimator 'kl'; known: sampled_tail, bucket"):
        score_from_topk(original, encoded, DegradationConfig(**QUIET), tmp_path, estimator="kl")


def test_topk_and_exact_scores_never_share_a_shard_folder(original, perturbed, encoded, tmp_path):
    config = DegradationConfig(**QUIET)
    score_degradation(original, perturbed, encoded[:6], config, shard_dir=tmp_path / "scores")
    cache_original_topk(original, encoded[:6], config, tmp_path / "cache", k=8)
    with pytest.raises(RuntimeError, match=r"changed: estimator, tail_samples, topk\)"):
        score_from_topk(perturbed, encoded[:6], config, tmp_path / "cache", shard_dir=tmp_path / "scores")


def test_finished_score_shards_are_loaded_on_rerun(original, perturbed, encoded, tmp_path, monkeypatch):
    config = DegradationConfig(shard_size=16, **QUIET)
    cache_original_topk(original, encoded, config, tmp_path / "cache", k=8)
    first = score_from_topk(perturbed, encoded, config, tmp_path / "cache", shard_dir=tmp_path / "scores")
    assert len(list((tmp_path / "scores").glob("shard-*.done"))) == 3
    monkeypatch.setattr(topk, "_score_shard_from_topk", lambda *args: pytest.fail("a finished shard was recomputed"))
    again = score_from_topk(perturbed, encoded, config, tmp_path / "cache", shard_dir=tmp_path / "scores")
    pd.testing.assert_frame_equal(again, first, check_exact=True)


def test_one_call_releases_the_original_before_loading_the_pruned_model(
    tiny_model_dir, perturbed_model_dir, encoded, tmp_path
):
    from transformers import AutoModelForCausalLM

    alive = []

    def load_original():
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        alive.append(weakref.ref(model))
        return model

    def load_pruned():
        gc.collect()
        assert alive[0]() is None, "the original model is still in memory"
        return AutoModelForCausalLM.from_pretrained(perturbed_model_dir, dtype=torch.float32)

    config = DegradationConfig(**QUIET)
    scores = score_degradation_topk(load_original, load_pruned, encoded[:8], config, tmp_path, k=8)
    reference = score_from_topk(load_pruned(), encoded[:8], config, tmp_path)
    pd.testing.assert_frame_equal(scores, reference, check_exact=True)


def test_original_topk_select_keeps_every_field_aligned():
    p, _ = _toy_distributions()
    cached = summarize_original(p, torch.tensor([1, 2, 3]), 4, 2, torch.Generator().manual_seed(0))
    selected = cached.select(torch.tensor([2, 0]))
    assert isinstance(selected, OriginalTopk)
    torch.testing.assert_close(selected.target_logprob, p[[2, 0], [3, 1]])
    torch.testing.assert_close(selected.topk_logprobs, p[[2, 0]].topk(4, dim=-1).values)
    torch.testing.assert_close(selected.tail_sample_logprobs, p[[2, 0]].gather(1, selected.tail_sample_ids.long()))
