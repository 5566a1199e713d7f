import collections
import json

import pytest
import torch

from paser.recovery.rejections import greedy_answers, prompt_sha
from paser.selection.formatting import encode_corpus

QUIET = {"show_progress": False}
MAX_NEW_TOKENS = 12
FINGERPRINT = {"model": "tiny-pruned", "max_new_tokens": MAX_NEW_TOKENS, "paser": "0.1.0"}


@pytest.fixture(scope="module")
def prompts(tiny_samples, tiny_tokenizer) -> list[tuple[str, list[int]]]:
    encoded = encode_corpus(tiny_samples[:10], tiny_tokenizer, max_length=128, show_progress=False)[0]
    return [(sample.id, sample.input_ids[: sample.prompt_length]) for sample in encoded]


def _continuation(model, prompt_ids: list[int], eos_token_id: int) -> tuple[list[int], bool]:
    """One prompt alone, unpadded, through plain `generate`: (tokens before EOS, EOS seen)."""
    output = model.generate(input_ids=torch.tensor([prompt_ids]), max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    tokens = output[0, len(prompt_ids) :].tolist()
    if eos_token_id in tokens:
        return tokens[: tokens.index(eos_token_id)], True
    return tokens, False


@pytest.fixture
def eos_model(tiny_model, tiny_tokenizer, prompts):
    """The tiny model made to end some answers early: the random model almost never predicts EOS, so EOS's
    output row becomes a slightly scaled copy of the token it generates most often, and wins wherever that did."""
    counts = collections.Counter()
    for _, prompt_ids in prompts:
        counts.update(_continuation(tiny_model, prompt_ids, tiny_tokenizer.eos_token_id)[0])
    frequent = counts.most_common(1)[0][0]
    with torch.no_grad():
        tiny_model.lm_head.weight[tiny_tokenizer.eos_token_id] = tiny_model.lm_head.weight[frequent] * 1.01
    return tiny_model


@pytest.fixture
def generate_calls(tiny_model, monkeypatch) -> list[tuple[int, int]]:
    """(rows, new tokens per row) of each `tiny_model.generate` call, in call order."""
    calls: list[tuple[int, int]] = []
    original = tiny_model.generate

    def spy(*args, **kwargs):
        output = original(*args, **kwargs)
        calls.append((output.shape[0], output.shape[1] - kwargs["input_ids"].shape[1]))
        return output

    monkeypatch.setattr(tiny_model, "generate", spy)
    return calls


def _answers(model, tokenizer, prompts, **options):
    return greedy_answers(model, tokenizer, prompts, max_new_tokens=MAX_NEW_TOKENS, **QUIET, **options)


def test_batched_answers_equal_answers_generated_one_at_a_time(eos_model, tiny_tokenizer, prompts):
    assert len({len(prompt_ids) for _, prompt_ids in prompts}) > 1, "prompts must differ in length to be padded"
    batched, stats = _answers(eos_model, tiny_tokenizer, prompts, batch_size=16)
    one_by_one, _ = _answers(eos_model, tiny_tokenizer, prompts, batch_size=1)
    assert batched == one_by_one
    assert 0 < stats["hit_max_new_tokens"] < len(prompts), "a batch must mix finished and unfinished rows"


def test_answers_come_back_in_the_callers_id_order(tiny_model, tiny_tokenizer, prompts):
    shuffled = prompts[::2] + prompts[1::2]
    answers, _ = _answers(tiny_model, tiny_tokenizer, shuffled, batch_size=4)
    assert list(answers) == [sample_id for sample_id, _ in shuffled]


def test_answers_are_the_decoded_continuations_without_prompt_or_eos(eos_model, tiny_tokenizer, prompts):
    answers, _ = _answers(eos_model, tiny_tokenizer, prompts, batch_size=4)
    for sample_id, prompt_ids in prompts:
        tokens, _ = _continuation(eos_model, prompt_ids, tiny_tokenizer.eos_token_id)
        assert answers[sample_id] == tiny_tokenizer.decode(tokens, skip_special_tokens=True)


def test_generation_stops_at_max_new_tokens(tiny_model, tiny_tokenizer, prompts, generate_calls):
    _, stats = greedy_answers(tiny_model, tiny_tokenizer, prompts, max_new_tokens=5, batch_size=4, **QUIET)
    assert generate_calls and all(new_tokens <= 5 for _, new_tokens in generate_calls)
    assert stats["hit_max_new_tokens"] > 0, "the tiny model must run into the limit for this test to mean anything"
    assert stats["tokens_generated"] <= 5 * len(prompts)


def test_stats_count_rows_tokens_and_answers_that_hit_the_limit(eos_model, tiny_tokenizer, prompts):
    _, stats = _answers(eos_model, tiny_tokenizer, prompts, batch_size=4)
    continuations = [_continuation(eos_model, ids, tiny_tokenizer.eos_token_id) for _, ids in prompts]
    assert (stats["rows"], stats["generated"], stats["from_cache"]) == (len(prompts), len(prompts), 0)
    assert stats["tokens_generated"] == sum(len(tokens) + finished for tokens, finished in continuations)
    assert stats["hit_max_new_tokens"] == sum(not finished for _, finished in continuations)
    assert stats["seconds"] > 0


def test_model_is_returned_to_its_training_mode_and_generation_config(tiny_model, tiny_tokenizer, prompts):
    generation_config = tiny_model.generation_config
    tiny_model.train()
    _answers(tiny_model, tiny_tokenizer, prompts[:2])
    assert tiny_model.training
    assert tiny_model.generation_config is generation_config


def test_a_repetition_penalty_in_the_models_generation_config_does_not_change_the_greedy_answer(
    tiny_model, tiny_tokenizer, prompts
):
    plain, _ = _answers(tiny_model, tiny_tokenizer, prompts[:3])
    tiny_model.generation_config.repetition_penalty = 5.0
    tiny_model.generation_config.do_sample = True
    penalised, _ = _answers(tiny_model, tiny_tokenizer, prompts[:3])
    assert penalised == plain


def test_second_call_with_the_same_fingerprint_generates_nothing(
    tiny_model, tiny_tokenizer, prompts, tmp_path, generate_calls
):
    cache = tmp_path / "rejected.jsonl"
    first, _ = _answers(tiny_model, tiny_tokenizer, prompts, cache_path=cache, fingerprint=FINGERPRINT, batch_size=4)
    calls_after_first = len(generate_calls)
    second, stats = _answers(tiny_model, tiny_tokenizer, prompts, cache_path=cache, fingerprint=FINGERPRINT)
    assert second == first
    assert len(generate_calls) == calls_after_first
    assert (stats["generated"], stats["from_cache"], stats["tokens_generated"]) == (0, len(prompts), 0)


def test_cache_holds_a_header_and_one_line_per_answer(tiny_model, tiny_tokenizer, prompts, tmp_path):
    cache = tmp_path / "rejected.jsonl"
    answers, _ = _answers(tiny_model, tiny_tokenizer, prompts, cache_path=cache, fingerprint=FINGERPRINT)
    header, *lines = [json.loads(line) for line in cache.read_text().splitlines()]
    assert header["fingerprint"] == FINGERPRINT
    assert {line["id"]: line["answer"] for line in lines} == answers
    assert {line["id"]: line["prompt_sha"] for line in lines} == {
        sample_id: prompt_sha(prompt_ids) for sample_id, prompt_ids in prompts
    }


def test_changed_fingerprint_discards_the_cache_and_regenerates_everything(
    tiny_model, tiny_tokenizer, prompts, tmp_path
):
    cache = tmp_path / "rejected.jsonl"
    _answers(tiny_model, tiny_tokenizer, prompts, cache_path=cache, fingerprint=FINGERPRINT)
    changed = {**FINGERPRINT, "model": "another-pruned"}
    _, stats = _answers(tiny_model, tiny_tokenizer, prompts, cache_path=cache, fingerprint=changed)
    assert stats["generated"] == len(prompts)
    assert "fingerprint.model" in stats["cache_invalidated"]
    assert json.loads(cache.read_text().splitlines()[0])["fingerprint"] == changed
    assert len(cache.read_text().splitlines()) == 1 + len(prompts)


def test_changed_max_new_tokens_discards_the_cache(tiny_model, tiny_tokenizer, prompts, tmp_path):
    cache = tmp_path / "rejected.jsonl"
    _answers(tiny_model, tiny_tokenizer, prompts[:3], cache_path=cache, fingerprint=FINGERPRINT)
    _, stats = greedy_answers(
        tiny_model, tiny_tokenizer, prompts[:3], max_new_tokens=4, cache_path=cache, fingerprint=FINGERPRINT, **QUIET
    )
    assert stats["generated"] == 3
    assert "generation.max_new_tokens" in stats["cache_invalidated"]


def test_changed_prompt_regenerates_only_that_id(tiny_model, tiny_tokenizer, prompts, tmp_path, generate_calls):
    cache = tmp_path / "rejected.jsonl"
    _answers(tiny_model, tiny_tokenizer, prompts, cache_path=cache, fingerprint=FINGERPRINT)
    changed_id, changed_prompt = prompts[3]
    edited = [*prompts[:3], (changed_id, changed_prompt[:-1]), *prompts[4:]]
    calls_before = len(generate_calls)
    answers, stats = _answers(tiny_model, tiny_tokenizer, edited, cache_path=cache, fingerprint=FINGERPRINT)
    assert [rows for rows, _ in generate_calls[calls_before:]] == [1]
    assert (stats["generated"], stats["cache_stale_prompts"]) == (1, 1)
    fresh, _ = _answers(tiny_model, tiny_tokenizer, [(changed_id, changed_prompt[:-1])])
    assert answers[changed_id] == fresh[changed_id]
    lines = [json.loads(line) for line in cache.read_text().splitlines()[1:]]
    assert sorted(line["id"] for line in lines) == sorted(sample_id for sample_id, _ in prompts)


def test_batches_finished_before_a_crash_are_kept(tiny_model, tiny_tokenizer, prompts, tmp_path, monkeypatch):
    cache = tmp_path / "rejected.jsonl"
    original = tiny_model.generate
    calls = []

    def crash_on_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return original(*args, **kwargs)

    monkeypatch.setattr(tiny_model, "generate", crash_on_second_batch)
    with pytest.raises(RuntimeError, match="killed"):
        _answers(tiny_model, tiny_tokenizer, prompts, cache_path=cache, fingerprint=FINGERPRINT, batch_size=4)
    monkeypatch.setattr(tiny_model, "generate", original)
    _, stats = _answers(tiny_model, tiny_tokenizer, prompts, cache_path=cache, fingerprint=FINGERPRINT, batch_size=4)
    assert (stats["from_cache"], stats["generated"]) == (4, len(prompts) - 4)


def test_cached_answers_for_ids_not_asked_for_are_kept(tiny_model, tiny_tokenizer, prompts, tmp_path):
    cache = tmp_path / "rejected.jsonl"
    _answers(tiny_model, tiny_tokenizer, prompts[:5], cache_path=cache, fingerprint=FINGERPRINT)
    _answers(tiny_model, tiny_tokenizer, prompts[5:], cache_path=cache, fingerprint=FINGERPRINT)
    _, stats = _answers(tiny_model, tiny_tokenizer, prompts, cache_path=cache, fingerprint=FINGERPRINT)
    assert stats["from_cache"] == len(prompts)


def test_truncated_last_cache_line_is_counted_and_regenerated(tiny_model, tiny_tokenizer, prompts, tmp_path):
    cache = tmp_path / "rejected.jsonl"
    first, _ = _answers(tiny_model, tiny_tokenizer, prompts, cache_path=cache, fingerprint=FINGERPRINT)
    text = cache.read_text()
    cache.write_text(text[: len(text) - 15])  # a crash while appending the last answer
    second, stats = _answers(tiny_model, tiny_tokenizer, prompts, cache_path=cache, fingerprint=FINGERPRINT)
    assert second == first
    assert (stats["cache_truncated_lines"], stats["generated"]) == (1, 1)
    assert [json.loads(line) for line in cache.read_text().splitlines()]  # every line parses again


def test_malformed_cache_line_before_the_last_is_refused(tiny_model, tiny_tokenizer, prompts, tmp_path):
    cache = tmp_path / "rejected.jsonl"
    _answers(tiny_model, tiny_tokenizer, prompts[:3], cache_path=cache, fingerprint=FINGERPRINT)
    lines = cache.read_text().splitlines()
    lines[1] = lines[1][:10]
    cache.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="rejected.jsonl:2: not JSON"):
        _answers(tiny_model, tiny_tokenizer, prompts[:3], cache_path=cache, fingerprint=FINGERPRINT)


def test_empty_prompt_is_refused_naming_the_id(tiny_model, tiny_tokenizer, prompts):
    with pytest.raises(ValueError, match="'empty-one': empty prompt"):
        _answers(tiny_model, tiny_tokenizer, [prompts[0], ("empty-one", [])])


def test_duplicate_ids_are_refused(tiny_model, tiny_tokenizer, prompts):
    with pytest.raises(ValueError, match=f"duplicate sample id '{prompts[0][0]}'"):
        _answers(tiny_model, tiny_tokenizer, [prompts[0], prompts[1], prompts[0]])


def test_tokenizer_without_pad_token_is_refused(tiny_model, tiny_tokenizer_dir, prompts):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    tokenizer.pad_token = None
    with pytest.raises(ValueError, match="pad_token_id"):
        _answers(tiny_model, tokenizer, prompts[:1])


def test_token_ids_outside_the_vocabulary_are_refused(tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match="'too-big': prompt token ids outside"):
        _answers(tiny_model, tiny_tokenizer, [("too-big", [1, 10_000])])


def test_cache_without_fingerprint_is_refused(tiny_model, tiny_tokenizer, prompts, tmp_path):
    with pytest.raises(ValueError, match="fingerprint"):
        _answers(tiny_model, tiny_tokenizer, prompts[:1], cache_path=tmp_path / "rejected.jsonl")
