"""Token-level weighting by damage (`token_weighting`): normalised weights, a zero weight removes a token's loss,
`none` is the unweighted loss, the kept JSD is aligned to the rows trained on, and sft/distill run end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from paser.recovery.config import TrainConfig
from paser.recovery.objectives.response_loss import causal_lm_of, response_hidden_states, response_totals
from paser.recovery.objectives.sft import build_sft_trainer
from paser.recovery.token_weights import RESPONSE_JSD, align_token_jsd, normalised_weights
from paser.recovery.train import _trl_common_args, format_summary, load_training_rows, recover
from paser.selection.formatting import EncodedSample
from tests.recovery.test_train import _zero_positions
from tests.recovery.tiny_training import fast_config

# ------------------------------------------------------------------------------------------ weights


def test_jsd_weights_are_proportional_to_the_jsd_with_mean_one():
    jsd = torch.tensor([0.1, 0.3, 0.0, 0.4])
    weights = normalised_weights(jsd, "jsd")
    torch.testing.assert_close(weights.mean(), torch.tensor(1.0))
    torch.testing.assert_close(weights, jsd / jsd.mean())


def test_top_fraction_weighs_the_top_tokens_of_the_batch_equally_with_mean_one():
    jsd = torch.tensor([0.1, 0.5, 0.2, 0.4, 0.3, 0.0, 0.6])
    weights = normalised_weights(jsd, "top_fraction", 0.4)  # ceil(0.4 × 7) = 3 tokens
    assert weights.tolist() == pytest.approx([0, 7 / 3, 0, 7 / 3, 0, 0, 7 / 3])
    torch.testing.assert_close(weights.mean(), torch.tensor(1.0))
    assert int((normalised_weights(jsd, "top_fraction", 0.01) > 0).sum()) == 1  # at least one token


def test_a_batch_without_damage_is_weighted_uniformly():
    assert normalised_weights(torch.zeros(5), "jsd").tolist() == [1.0] * 5


def test_bad_weighting_settings_and_jsd_are_refused():
    with pytest.raises(ValueError, match="jsd or top_fraction"):
        normalised_weights(torch.ones(3), "none")
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        normalised_weights(torch.ones(3), "top_fraction", 0.0)
    with pytest.raises(ValueError, match="finite and >= 0"):
        normalised_weights(torch.tensor([0.1, -0.1]), "jsd")
    with pytest.raises(ValueError, match="needs token_jsd"):
        TrainConfig.from_flat({"token_weighting": "jsd"})
    with pytest.raises(ValueError, match="token_weighting must be one of none, jsd, top_fraction"):
        TrainConfig.from_flat({"token_weighting": "rho"})
    with pytest.raises(ValueError, match="token_weighting is a setting of objective distill and sft, not of 'dpo'"):
        TrainConfig.from_flat({"objective": "dpo", "token_weighting": "jsd", "token_jsd": "x"})
    with pytest.raises(ValueError, match="needs targets=corpus"):
        TrainConfig.from_flat({"token_weighting": "jsd", "token_jsd": "x", "targets": "original"})


# ------------------------------------------------------------------------------------------ the loss


def _batch(vocab_size: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    input_ids = torch.randint(3, vocab_size, (2, 9), generator=generator)
    labels = torch.full((2, 9), -100)
    labels[0, 3:9] = input_ids[0, 3:9]
    labels[1, 5:8] = input_ids[1, 5:8]
    attention_mask = torch.ones(2, 9, dtype=torch.long)
    attention_mask[1, 8] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _hidden(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        hidden, targets = response_hidden_states(causal_lm_of(model), batch)
    return hidden.clone().requires_grad_(True), targets


@pytest.mark.parametrize("with_teacher", [False, True])
def test_a_zero_weight_removes_a_tokens_loss_and_its_gradient(tiny_model, perturbed_model_dir, with_teacher):
    from transformers import AutoModelForCausalLM

    batch = _batch(tiny_model.config.vocab_size)
    head = tiny_model.get_output_embeddings()
    hidden, targets = _hidden(tiny_model, batch)
    teacher = {}
    if with_teacher:
        original = AutoModelForCausalLM.from_pretrained(perturbed_model_dir, dtype=torch.float32).eval()
        teacher = {"teacher_head": original.get_output_embeddings(), "teacher_hidden": _hidden(original, batch)[0]}
    count = hidden.shape[0]
    weights = torch.linspace(0.5, 1.5, count)
    weights[2] = 0.0
    totals = response_totals(head, hidden, targets, position_chunk=3, weights=weights, **teacher)
    loss = totals.nll + (totals.kl if with_teacher else 0.0)
    loss.backward()
    assert torch.count_nonzero(hidden.grad[2]) == 0
    assert torch.count_nonzero(hidden.grad[1]) > 0
    # the loss over the other tokens alone, each with its weight
    keep = torch.arange(count) != 2
    others = response_totals(
        head,
        hidden.detach()[keep],
        targets[keep],
        position_chunk=3,
        weights=weights[keep],
        **({k: v[keep] if k == "teacher_hidden" else v for k, v in teacher.items()}),
    )
    expected = others.nll + (others.kl if with_teacher else 0.0)
    torch.testing.assert_close(loss.detach(), expected, atol=1e-5, rtol=1e-6)


def test_weights_of_another_position_count_are_refused(tiny_model):
    batch = _batch(tiny_model.config.vocab_size)
    hidden, targets = _hidden(tiny_model, batch)
    with pytest.raises(ValueError, match="not aligned"):
        response_totals(tiny_model.get_output_embeddings(), hidden, targets, position_chunk=4, weights=torch.ones(2))


def _trainer(tiny_model, tiny_tokenizer, subset_file, tmp_path, **overrides):
    config = fast_config(lora_dropout=0.0, position_chunk=5, group_by_length=False, **overrides)
    rows = load_training_rows(subset_file, tiny_tokenizer, config)
    if config.token_weighting is not None:
        generator = np.random.default_rng(0)
        rows.response_jsd = [generator.uniform(0, 0.5, row.response_length) for row in rows.encoded]
    common = _trl_common_args(config, tmp_path, "cpu", torch.float32)
    trainer = build_sft_trainer(tiny_model, tiny_tokenizer, rows, config, common)
    trainer.model.train()
    return trainer, rows


def test_no_weighting_is_bit_for_bit_the_unweighted_response_loss(tiny_model, tiny_tokenizer, subset_file, tmp_path):
    trainer, _ = _trainer(tiny_model, tiny_tokenizer, subset_file, tmp_path)
    batch = next(iter(trainer.get_train_dataloader()))
    assert RESPONSE_JSD not in batch
    loss = trainer.compute_loss(trainer.model, batch)
    causal_lm = causal_lm_of(trainer.model)
    hidden, targets = response_hidden_states(causal_lm, batch)
    totals = response_totals(causal_lm.get_output_embeddings(), hidden, targets, position_chunk=5)
    assert torch.equal(loss.detach(), (totals.nll / totals.tokens).detach())


def test_jsd_weighting_weighs_each_response_token_of_the_batch(tiny_model, tiny_tokenizer, subset_file, tmp_path):
    trainer, rows = _trainer(tiny_model, tiny_tokenizer, subset_file, tmp_path, token_weighting="jsd", token_jsd="kept")
    batch = next(iter(trainer.get_train_dataloader()))
    response = batch["labels"][:, 1:] != -100
    assert batch[RESPONSE_JSD].shape == (int(response.sum()),)
    # the rows' values, laid end to end in the batch's row order
    by_ids = {tuple(row.input_ids): values for row, values in zip(rows.encoded, rows.response_jsd, strict=True)}
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    expected = np.concatenate(
        [by_ids[tuple(ids[:n].tolist())] for ids, n in zip(batch["input_ids"], lengths, strict=True)]
    )
    np.testing.assert_allclose(batch[RESPONSE_JSD].numpy(), expected, rtol=1e-6)
    loss = trainer.compute_loss(trainer.model, batch)
    with torch.no_grad():
        logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    token_nll = -logits[:, :-1].float().log_softmax(-1)[response].gather(1, batch["labels"][:, 1:][response, None])
    weights = batch[RESPONSE_JSD] / batch[RESPONSE_JSD].mean()
    torch.testing.assert_close(loss.detach(), (weights * token_nll[:, 0]).mean(), atol=1e-5, rtol=1e-5)


def test_padding_free_batches_carry_the_same_weights_and_loss(tiny_model_dir, tiny_tokenizer, subset_file, tmp_path):
    from transformers import AutoModelForCausalLM

    losses = []
    for padding_free in (False, True):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        overrides = {"token_weighting": "jsd", "token_jsd": "kept", "padding_free": padding_free}
        trainer, _ = _trainer(model, tiny_tokenizer, subset_file, tmp_path / str(padding_free), **overrides)
        batch = next(iter(trainer.get_train_dataloader()))
        assert batch[RESPONSE_JSD].shape == (int((batch["labels"][:, 1:] != -100).sum()),)
        losses.append(trainer.compute_loss(trainer.model, batch).detach())
    torch.testing.assert_close(losses[1], losses[0], atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------ alignment


def _row(row_id: str, prompt: int, response: int, truncated: bool = False) -> EncodedSample:
    return EncodedSample(row_id, list(range(3, 3 + prompt + response)), prompt, truncated)


def test_kept_jsd_is_aligned_to_the_response_tokens_trained_on():
    kept = {"a": np.array([0.1, 0.2], np.float16), "b": np.array([0.3, 0.4, 0.5], np.float16)}
    aligned = align_token_jsd([_row("b", 2, 2, truncated=True), _row("a", 4, 2)], kept, "kept.npz")
    np.testing.assert_allclose(np.concatenate(aligned), [0.3, 0.4, 0.1, 0.2], atol=1e-3)
    assert [len(values) for values in aligned] == [2, 2]
    assert all(values.dtype == np.float32 for values in aligned)


def test_a_row_without_kept_jsd_or_with_another_token_count_is_refused():
    kept = {"a": np.array([0.1, 0.2], np.float16)}
    with pytest.raises(ValueError, match=r"kept.npz: no per-token JSD for row 'z'"):
        align_token_jsd([_row("z", 2, 2)], kept, "kept.npz")
    with pytest.raises(ValueError, match=r"kept.npz: row 'a' has 2 per-token JSD values but 3 response tokens"):
        align_token_jsd([_row("a", 2, 3)], kept, "kept.npz")
    with pytest.raises(ValueError, match="same template and max_length"):
        align_token_jsd([_row("a", 2, 1)], kept, "kept.npz")  # shorter, but training did not truncate it


# ------------------------------------------------------------------------------------------ end to end


@pytest.fixture
def kept_jsd(tmp_path, tiny_model_dir, pruned_dir, subset_file, tiny_tokenizer):
    """The subset's rows scored (original vs pruned) with the per-token JSD kept, tokenised as training does."""
    from transformers import AutoModelForCausalLM

    from paser.selection.config import DegradationConfig
    from paser.selection.degradation import score_degradation

    rows = load_training_rows(subset_file, tiny_tokenizer, fast_config())
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    pruned = AutoModelForCausalLM.from_pretrained(pruned_dir, dtype=torch.float32)
    config = DegradationConfig(keep_token_jsd=True, show_progress=False)
    score_degradation(original, pruned, rows.encoded, config, shard_dir=tmp_path / "score_shards")
    return tmp_path / "score_shards"


@pytest.mark.parametrize(("objective", "weighting"), [("sft", "jsd"), ("distill", "jsd"), ("sft", "top_fraction")])
def test_weighted_recovery_runs_and_keeps_the_pruned_zeros_through_merge(
    objective, weighting, kept_jsd, tiny_model_dir, pruned_dir, subset_file, tmp_path
):
    out = tmp_path / objective
    config = fast_config(objective=objective, token_weighting=weighting, token_jsd=str(kept_jsd), learning_rate=1e-2)
    result = recover(str(pruned_dir), subset_file, out, config, original=str(tiny_model_dir))
    weighting_record = result.record["token_weighting"]
    assert weighting_record["mode"] == weighting and weighting_record["rows"] == 12
    assert 0 < weighting_record["mean_jsd"] < math.log(2)
    assert f"token weighting: {weighting} by the per-token JSD of 12 rows" in format_summary(result)
    assert result.record["training"]["steps"] == 2 and math.isfinite(result.record["training"]["last_loss"])
    assert result.record["sparsity"]["total_after_remask"] == pytest.approx(0.5, abs=1e-3)
    pruned_zeros, merged_zeros = _zero_positions(pruned_dir), _zero_positions(out / "merged")
    assert all(torch.equal(pruned_zeros[name], merged_zeros[name]) for name in pruned_zeros)


def test_weighting_with_jsd_of_other_rows_is_refused_before_training(
    tiny_model_dir, pruned_dir, subset_file, tmp_path, tiny_tokenizer
):
    from paser.selection.token_jsd import write_token_jsd

    rows = load_training_rows(subset_file, tiny_tokenizer, fast_config())
    first = rows.encoded[0]
    kept = write_token_jsd(tmp_path / "kept.npz", [first.id], [np.zeros(first.response_length - 1)])
    config = fast_config(token_weighting="jsd", token_jsd=str(kept))
    with pytest.raises(ValueError, match=rf"row {first.id!r} has {first.response_length - 1} per-token JSD values"):
        recover(str(pruned_dir), subset_file, tmp_path / "out", config)
    assert not (tmp_path / "out").exists()


def test_recover_command_refuses_weighting_without_the_kept_jsd_in_one_line(pruned_dir, subset_file, tmp_path, capsys):
    from paser.pipelines.cli import main

    argv = ["recover", "--pruned", str(pruned_dir), "--subset", str(subset_file), "--out", str(tmp_path / "out")]
    assert main([*argv, "--token-weighting", "jsd"]) == 2
    assert capsys.readouterr().err.strip() == (
        "paser recover: error: token_weighting=jsd needs token_jsd: the per-token JSD kept by scoring with "
        "scoring.keep_token_jsd=true"
    )
    assert main([*argv, "--token-weighting", "jsd", "--token-jsd", str(tmp_path / "none.npz")]) == 2
    assert capsys.readouterr().err.strip() == f"paser recover: error: per-token JSD not found: {tmp_path / 'none.npz'}"


def test_paser_selects_with_the_jsd_kept_and_recovers_weighted_on_its_selection(tiny_model_dir, pruned_dir, tmp_path):
    import json

    from paser.data.demo import demo_rows
    from paser.pipelines.select import run_select
    from tests.pipelines.test_select import select_config

    corpus = tmp_path / "rows.jsonl"
    corpus.write_text("".join(json.dumps(row) + "\n" for row in demo_rows(rows_per_skill=12)))
    out = tmp_path / "select"
    run_select(select_config(corpus, tiny_model_dir, pruned_dir, out, "scoring.keep_token_jsd=true"))
    assert sorted(path.name for path in (out / "score_shards").glob("*.npz")) == ["shard-00000.token_jsd.npz"]
    config = fast_config(token_weighting="jsd", token_jsd=str(out / "score_shards"))
    result = recover(str(pruned_dir), out / "selection.jsonl", tmp_path / "recovered", config)
    rows = result.record["rows"]
    # Scored at the models' context (256 tokens), trained at 96: the rows training truncates take their first values.
    assert rows["read"] == 15 and rows["truncated"] > 0
    assert result.record["token_weighting"]["rows"] == rows["used"] == 15 - sum(rows["skipped"].values())
    assert result.record["training"]["steps"] == 2
