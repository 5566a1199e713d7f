"""Self-distillation targets (`targets: original`): the original model's greedy answers replace the responses,
cached and resumable, deterministic, empty answers skipped and counted, the pruned zeros kept through merge."""

from __future__ import annotations

import json

import pytest
import torch

from paser.recovery import rejections
from paser.recovery.targets import EMPTY_TARGET, TARGETS_FILE, rows_with_targets
from paser.recovery.train import format_summary, load_training_rows, recover
from tests.recovery.test_train import _zero_positions
from tests.recovery.tiny_training import fast_config


def _config(**overrides):
    return fast_config(targets="original", target_max_new_tokens=8, generation_batch_size=4, **overrides)


def _answers(out) -> dict[str, str]:
    lines = (out / TARGETS_FILE).read_text().splitlines()[1:]
    return {entry["id"]: entry["answer"] for entry in map(json.loads, lines)}


def _refuse_to_generate(*args, **kwargs):
    pytest.fail("a cached target was generated again")


def test_sft_on_the_originals_answers_keeps_the_pruned_zeros_and_counts_the_generation(
    tiny_model_dir, pruned_dir, subset_file, tmp_path
):
    out = tmp_path / "self-distilled"
    result = recover(str(pruned_dir), subset_file, out, _config(learning_rate=1e-2), original=str(tiny_model_dir))
    record = result.record
    targets = record["targets"]
    assert targets["source"] == "original" and targets["model"]["name"] == str(tiny_model_dir)
    assert targets["generation"]["generated"] == 12 and targets["generation"]["from_cache"] == 0
    assert record["rows"]["used"] + record["rows"]["skipped"].get(EMPTY_TARGET, 0) == 12
    assert record["tokens_per_epoch"]["response"] == targets["response_tokens"]
    answers = _answers(out)
    assert len(answers) == 12
    assert "targets: the original's greedy answers (12 generated, 0 cached" in format_summary(result)
    compute = record["compute"]
    assert compute["tokens"]["target_generated"] == targets["generation"]["tokens_generated"] > 0
    assert compute["tokens"]["target_prompt"] > 0
    assert compute["flops"]["targets"] == pytest.approx(
        2
        * (compute["tokens"]["target_prompt"] + compute["tokens"]["target_generated"])
        * targets["model"]["parameters"]
    )
    assert record["hyperparameters"]["targets"] == "original"
    assert record["sparsity"]["total_after_remask"] == pytest.approx(0.5, abs=1e-3)
    pruned_zeros, merged_zeros = _zero_positions(pruned_dir), _zero_positions(out / "merged")
    assert all(torch.equal(pruned_zeros[name], merged_zeros[name]) for name in pruned_zeros)


def test_cached_targets_are_reused_without_generating(tiny_model_dir, pruned_dir, subset_file, tmp_path, monkeypatch):
    out = tmp_path / "run"
    recover(str(pruned_dir), subset_file, out, _config(), original=str(tiny_model_dir))
    first = _answers(out)
    monkeypatch.setattr(rejections, "generate_batch", _refuse_to_generate)
    again = recover(str(pruned_dir), subset_file, out, _config(objective="distill"), original=str(tiny_model_dir))
    assert again.record["targets"]["generation"]["generated"] == 0
    assert again.record["targets"]["generation"]["from_cache"] == 12
    assert again.record["compute"]["tokens"]["target_generated"] == 0
    assert again.record["compute"]["flops"]["targets"] == 0
    assert _answers(out) == first


def test_targets_are_the_same_under_another_seed_and_a_crashed_run_resumes(
    tiny_model_dir, pruned_dir, subset_file, tmp_path, monkeypatch
):
    recover(str(pruned_dir), subset_file, tmp_path / "seed0", _config(seed=0), original=str(tiny_model_dir))
    real_generate = rejections.generate_batch
    calls = []

    def crash_on_the_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(rejections, "generate_batch", crash_on_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        recover(str(pruned_dir), subset_file, tmp_path / "seed1", _config(seed=1), original=str(tiny_model_dir))
    monkeypatch.undo()
    resumed = recover(str(pruned_dir), subset_file, tmp_path / "seed1", _config(seed=1), original=str(tiny_model_dir))
    assert resumed.record["targets"]["generation"]["from_cache"] == 4  # the first batch of 4 prompts
    assert resumed.record["targets"]["generation"]["generated"] == 8
    assert _answers(tmp_path / "seed1") == _answers(tmp_path / "seed0")


def test_rows_whose_target_is_empty_are_skipped_and_counted(
    tiny_model_dir, pruned_dir, subset_file, tmp_path, monkeypatch
):
    from paser.recovery import targets

    def answers_with_two_empty(model, tokenizer, prompts, **kwargs):
        answers = {row_id: f"answer {index}" for index, (row_id, _) in enumerate(prompts)}
        answers[prompts[0][0]], answers[prompts[5][0]] = "", " \n "
        stats = {"rows": len(prompts), "generated": len(prompts), "from_cache": 0, "tokens_generated": 24}
        return answers, stats

    monkeypatch.setattr(targets, "greedy_answers", answers_with_two_empty)
    result = recover(str(pruned_dir), subset_file, tmp_path / "out", _config(), original=str(tiny_model_dir))
    assert result.record["rows"]["skipped"][EMPTY_TARGET] == 2
    assert result.record["rows"]["used"] == 10
    assert result.record["targets"]["empty"] == 2


def test_retargeted_rows_are_tokenised_as_training_tokenises_them(subset_file, tiny_tokenizer):
    config = fast_config()
    rows = load_training_rows(subset_file, tiny_tokenizer, config)
    answers = {sample.id: f"  the answer to {sample.id}\n" for sample in rows.samples}
    retargeted = rows_with_targets(rows, answers, tiny_tokenizer, config)
    assert [row.id for row in retargeted.encoded] == [row.id for row in rows.encoded]
    for before, after, sample in zip(rows.encoded, retargeted.encoded, retargeted.samples, strict=True):
        assert after.input_ids[: after.prompt_length] == before.input_ids[: before.prompt_length]
        assert sample.response == f"the answer to {sample.id}"
        expected = tiny_tokenizer(sample.response, add_special_tokens=False)["input_ids"]
        assert after.input_ids[after.prompt_length : after.prompt_length + len(expected)] == expected
    with pytest.raises(ValueError, match="no target was generated for row"):
        rows_with_targets(rows, {}, tiny_tokenizer, config)
    with pytest.raises(ValueError, match="no row left to train on"):
        rows_with_targets(rows, dict.fromkeys(answers, ""), tiny_tokenizer, config)


def test_targets_from_the_original_without_it_are_refused_in_one_line(pruned_dir, subset_file, tmp_path, capsys):
    from paser.pipelines.cli import main

    argv = ["recover", "--pruned", str(pruned_dir), "--subset", str(subset_file), "--out", str(tmp_path / "out")]
    assert main([*argv, "--targets", "original"]) == 2
    assert capsys.readouterr().err.strip() == (
        "paser recover: error: targets=original needs the original model, which writes the targets (--original)"
    )
    assert main([*argv, "--targets", "teacher"]) == 2
    assert "targets must be one of corpus, original, got 'teacher'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_shared_targets_cache_serves_another_run_without_generating(
    tiny_model_dir, pruned_dir, subset_file, tmp_path, monkeypatch
):
    shared = tmp_path / "cache" / "targets.jsonl"
    first = recover(
        str(pruned_dir), subset_file, tmp_path / "a", _config(targets_cache=str(shared)), original=str(tiny_model_dir)
    )
    assert shared.exists() and not (tmp_path / "a" / TARGETS_FILE).exists()
    assert first.record["targets"]["file"] == str(shared) and first.paths["targets"] == shared
    monkeypatch.setattr(rejections, "generate_batch", _refuse_to_generate)
    config = _config(targets_cache=str(shared), seed=3)
    second = recover(str(pruned_dir), subset_file, tmp_path / "b", config, original=str(tiny_model_dir))
    assert second.record["targets"]["generation"]["from_cache"] == 12
