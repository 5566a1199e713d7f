import math

import pandas as pd
import pytest
import torch

from paser.selection import degradation
from paser.selection.config import DegradationConfig
from paser.selection.degradation import jensen_shannon, score_degradation
from paser.selection.formatting import EncodedSample, encode_corpus

QUIET = {"show_progress": False}
pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_jensen_shannon_matches_hand_computed_value():
    p, q = torch.tensor([0.5, 0.5, 0.0]), torch.tensor([0.25, 0.25, 0.5])
    m = (p + q) / 2

    def kl(x):
        return sum(xi * math.log(xi / mi) for xi, mi in zip(x.tolist(), m.tolist(), strict=True) if xi > 0)

    expected = 0.5 * kl(p) + 0.5 * kl(q)
    # = 0.5·ln(4/3) + 0.25·ln(2/3) + 0.25·ln(2), by hand
    assert expected == pytest.approx(0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3) + 0.25 * math.log(2))
    assert jensen_shannon(p.log(), q.log()).item() == pytest.approx(expected, abs=1e-7)


def test_jensen_shannon_of_disjoint_distributions_is_ln2():
    value = jensen_shannon(torch.tensor([0.0, -math.inf]), torch.tensor([-math.inf, 0.0]))
    assert value.item() == pytest.approx(math.log(2), abs=1e-7)


def test_jensen_shannon_of_identical_distributions_is_exactly_zero():
    logprobs = torch.log_softmax(torch.randn(7, 300, generator=torch.Generator().manual_seed(0)), dim=-1)
    assert torch.equal(jensen_shannon(logprobs, logprobs.clone()), torch.zeros(7))


def test_identical_models_score_exactly_zero(original, encoded):
    scores = score_degradation(original, original, encoded, DegradationConfig(**QUIET))
    assert (scores["cds"] == 0.0).all()
    assert (scores["nll_original"] == scores["nll_pruned"]).all()


def test_perturbed_model_scores_within_zero_and_ln2(original, perturbed, encoded):
    scores = score_degradation(original, perturbed, encoded, DegradationConfig(**QUIET))
    assert ((scores["cds"] > 0) & (scores["cds"] <= math.log(2))).all()


def test_rows_come_back_in_input_order_with_token_counts(original, perturbed, encoded):
    scores = score_degradation(original, perturbed, encoded, DegradationConfig(**QUIET))
    assert list(scores.columns) == [
        "id", "cds", "prompt_tokens", "response_tokens", "nll_original", "nll_pruned", "truncated"
    ]  # fmt: skip
    assert scores["id"].tolist() == [sample.id for sample in encoded]
    assert scores["prompt_tokens"].tolist() == [sample.prompt_length for sample in encoded]
    assert scores["response_tokens"].tolist() == [len(s.input_ids) - s.prompt_length for s in encoded]


def _reference_scores(original, pruned, sample: EncodedSample) -> tuple[float, float, float]:
    """Straightforward per-row computation from the full logits: mean JSD, mean NLL under each model."""
    ids = torch.tensor([sample.input_ids])
    with torch.no_grad():
        logprobs_original = torch.log_softmax(original(ids).logits[0].float(), dim=-1)
        logprobs_pruned = torch.log_softmax(pruned(ids).logits[0].float(), dim=-1)
    scored = slice(sample.prompt_length - 1, len(sample.input_ids) - 1)
    targets = ids[0, sample.prompt_length :, None]
    p, q = logprobs_original[scored].exp(), logprobs_pruned[scored].exp()
    m = (p + q) / 2
    jsd = 0.5 * (p * (p / m).log()).sum(-1) + 0.5 * (q * (q / m).log()).sum(-1)
    nll_original = -logprobs_original[scored].gather(1, targets).mean().item()
    nll_pruned = -logprobs_pruned[scored].gather(1, targets).mean().item()
    return jsd.mean().item(), nll_original, nll_pruned


def test_batched_scores_equal_per_row_full_logit_scores(original, perturbed, encoded):
    scores = score_degradation(original, perturbed, encoded, DegradationConfig(tokens_per_batch=4096, **QUIET))
    assert scores["cds"].nunique() == len(encoded)
    for row, sample in zip(scores.itertuples(), encoded, strict=True):
        cds, nll_original, nll_pruned = _reference_scores(original, perturbed, sample)
        assert row.cds == pytest.approx(cds, abs=1e-5)
        assert row.nll_original == pytest.approx(nll_original, abs=1e-5)
        assert row.nll_pruned == pytest.approx(nll_pruned, abs=1e-5)


def test_position_chunk_size_does_not_change_scores(original, perturbed, encoded):
    whole = score_degradation(original, perturbed, encoded, DegradationConfig(position_chunk=100_000, **QUIET))
    chunked = score_degradation(original, perturbed, encoded, DegradationConfig(position_chunk=7, **QUIET))
    pd.testing.assert_frame_equal(whole, chunked, check_exact=False, atol=1e-6, rtol=0)


def test_unconditioned_nll_scores_response_after_bos_alone(original, perturbed, encoded):
    scores = score_degradation(original, perturbed, encoded[:3], DegradationConfig(unconditioned_nll=True, **QUIET))
    for row, sample in zip(scores.itertuples(), encoded[:3], strict=True):
        alone = EncodedSample(
            sample.id, [perturbed.config.bos_token_id, *sample.input_ids[sample.prompt_length :]], 1, False
        )
        assert row.nll_pruned_unconditioned == pytest.approx(
            _reference_scores(perturbed, perturbed, alone)[2], abs=1e-5
        )


def test_models_with_different_vocab_sizes_are_refused(original, encoded):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**{**original.config.to_dict(), "vocab_size": original.config.vocab_size + 8})
    with pytest.raises(ValueError, match="vocab sizes differ"):
        score_degradation(original, LlamaForCausalLM(config), encoded, DegradationConfig(**QUIET))


def test_model_without_decoder_body_is_refused(original, encoded):
    with pytest.raises(TypeError, match="not a causal LM"):
        score_degradation(original, torch.nn.Linear(2, 2), encoded, DegradationConfig(**QUIET))


def test_resumed_run_skips_finished_shards_and_is_bitwise_identical(
    original, perturbed, encoded, tmp_path, monkeypatch
):
    config = DegradationConfig(shard_size=8, **QUIET)  # 40 rows → 5 shards
    uninterrupted = score_degradation(original, perturbed, encoded, config, shard_dir=tmp_path / "fresh")

    real_write_shard = degradation._write_shard

    def crash_after_second_shard(shard_dir, index, frame):
        real_write_shard(shard_dir, index, frame)
        if index == 1:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(degradation, "_write_shard", crash_after_second_shard)
    with pytest.raises(KeyboardInterrupt):
        score_degradation(original, perturbed, encoded, config, shard_dir=tmp_path / "resumed")
    monkeypatch.undo()

    scored_shards = []
    real_score_shard = degradation._score_shard

    def counting_score_shard(original_parts, pruned_parts, rows, *args):
        scored_shards.append(rows[0].id)
        return real_score_shard(original_parts, pruned_parts, rows, *args)

    monkeypatch.setattr(degradation, "_score_shard", counting_score_shard)
    resumed = score_degradation(original, perturbed, encoded, config, shard_dir=tmp_path / "resumed")
    assert scored_shards == [encoded[16].id, encoded[24].id, encoded[32].id]
    pd.testing.assert_frame_equal(resumed, uninterrupted, check_exact=True)


def test_complete_rerun_loads_every_shard(original, perturbed, encoded, tmp_path, monkeypatch):
    config = DegradationConfig(shard_size=16, **QUIET)
    first = score_degradation(original, perturbed, encoded, config, shard_dir=tmp_path)
    assert sorted(path.name for path in tmp_path.glob("shard-*")) == [
        f"shard-{index:05d}.{suffix}" for index in range(3) for suffix in ("done", "parquet")
    ]
    monkeypatch.setattr(degradation, "_score_shard", lambda *args: pytest.fail("a finished shard was recomputed"))
    pd.testing.assert_frame_equal(score_degradation(original, perturbed, encoded, config, shard_dir=tmp_path), first)


def test_shard_dir_of_other_inputs_is_refused(original, perturbed, encoded, tmp_path):
    score_degradation(original, perturbed, encoded[:10], DegradationConfig(**QUIET), shard_dir=tmp_path)
    with pytest.raises(
        RuntimeError, match=r"different inputs \(changed: encoded_sha256, rows\).*fresh shard directory"
    ):
        score_degradation(original, perturbed, encoded[:12], DegradationConfig(**QUIET), shard_dir=tmp_path)


def test_shard_dir_of_other_pruned_model_is_refused(original, perturbed, encoded, tmp_path):
    score_degradation(original, perturbed, encoded[:10], DegradationConfig(**QUIET), shard_dir=tmp_path)
    with pytest.raises(RuntimeError, match=r"changed: pruned_weights_sha256"):
        score_degradation(original, original, encoded[:10], DegradationConfig(**QUIET), shard_dir=tmp_path)


def test_overwrite_discards_shards_of_other_inputs(original, perturbed, encoded, tmp_path):
    score_degradation(original, perturbed, encoded[:10], DegradationConfig(**QUIET), shard_dir=tmp_path)
    config = DegradationConfig(shard_size=4, **QUIET)
    scores = score_degradation(original, original, encoded[:10], config, shard_dir=tmp_path, overwrite=True)
    assert (scores["cds"] == 0.0).all()
    assert len(list(tmp_path.glob("shard-*.done"))) == 3


def test_batches_respect_token_budget_row_cap_and_padding_limit():
    lengths = [100, 12, 95, 50, 48, 47, 200, 99, 10, 11]
    config = DegradationConfig(tokens_per_batch=300, max_batch_rows=3, max_padding=0.1)
    batches = list(degradation.length_batches(lengths, config))
    assert sorted(index for batch in batches for index in batch) == list(range(len(lengths)))
    for batch in batches:
        longest = max(lengths[index] for index in batch)
        assert len(batch) <= 3 and (len(batch) == 1 or len(batch) * longest <= 300)
        assert all(lengths[index] >= 0.9 * longest for index in batch)
    assert batches == [[6], [0, 7, 2], [3, 4, 5], [1, 9], [8]]


def test_shared_prompt_prefix_reuse_matches_full_forward(original, perturbed, tiny_samples, tiny_tokenizer):
    # The Alpaca preamble gives every row a long shared prefix.
    encoded = encode_corpus(tiny_samples, tiny_tokenizer, 256, template="alpaca", show_progress=False)[0]
    rows = degradation._Rows([sample.input_ids for sample in encoded], [s.prompt_length for s in encoded])
    assert degradation._shared_prefix_length(rows) >= 20
    shared = score_degradation(original, perturbed, encoded, DegradationConfig(**QUIET))
    separate = score_degradation(original, perturbed, encoded, DegradationConfig(share_prompt_prefix=False, **QUIET))
    pd.testing.assert_frame_equal(shared, separate, check_exact=False, atol=1e-5, rtol=0)
    for row, sample in zip(shared.itertuples(), encoded[:5], strict=False):
        assert row.cds == pytest.approx(_reference_scores(original, perturbed, sample)[0], abs=1e-5)


def test_compiled_chunk_path_matches_eager(original, perturbed, encoded):
    """compile_jsd=on (torch.compile of the chunk's log-softmax + JSD + NLL, the GPU default) gives the eager
    numbers up to float32 rounding, and still exactly 0 for identical models."""
    eager = score_degradation(original, perturbed, encoded, DegradationConfig(compile_jsd="off", **QUIET))
    compiled = score_degradation(
        original, perturbed, encoded, DegradationConfig(compile_jsd="on", position_chunk=50, **QUIET)
    )
    for column in ("cds", "nll_original", "nll_pruned"):
        assert compiled[column].to_numpy() == pytest.approx(eager[column].to_numpy(), rel=1e-5, abs=1e-7)
    assert eager["cds"].min() > 0
    same = score_degradation(original, original, encoded, DegradationConfig(compile_jsd="on", **QUIET))
    assert (same["cds"] == 0.0).all()


def test_compile_jsd_is_checked():
    with pytest.raises(ValueError, match="compile_jsd must be auto, on or off"):
        DegradationConfig(compile_jsd="yes")
    assert degradation.use_compiled_jsd(DegradationConfig(), torch.device("cuda"))
    assert not degradation.use_compiled_jsd(DegradationConfig(), torch.device("cpu"))
    assert degradation.use_compiled_jsd(DegradationConfig(compile_jsd="on"), torch.device("cpu"))


@pytest.mark.slow  # torch.compile of the bodies: 25 s; test_compiled_chunk_path_matches_eager keeps compile in CI
def test_compiled_bodies_score_as_eager_ones(original, perturbed, tiny_samples, tiny_tokenizer):
    """compile_body=True compiles each decoder body in place (so on copies here) and gives the eager scores, also
    through the shared-prefix path (the Alpaca preamble is a long common prefix) and the unconditioned pass."""
    import copy

    encoded = encode_corpus(tiny_samples[:12], tiny_tokenizer, 256, template="alpaca", show_progress=False)[0]
    config = DegradationConfig(unconditioned_nll=True, **QUIET)
    eager = score_degradation(original, perturbed, encoded, config)
    pair = copy.deepcopy(original), copy.deepcopy(perturbed)
    compiled = score_degradation(*pair, encoded, DegradationConfig(unconditioned_nll=True, compile_body=True, **QUIET))
    assert all(getattr(model.get_decoder(), "_compiled_call_impl", None) is not None for model in pair)
    assert getattr(original.get_decoder(), "_compiled_call_impl", None) is None
    pd.testing.assert_frame_equal(compiled, eager, check_exact=False, atol=1e-5, rtol=0)
