"""Generation tasks: exact match and repetition on hand-made answers, batched greedy decoding equal to one prompt
at a time, the answer cache, and the two tasks end to end on the tiny model over planted data."""

from __future__ import annotations

import gzip
import json
import math

import pytest
import torch

from paser.data.heldout import heldout_rows, prompt_key
from paser.recovery.evaluate import ALL_TASKS, evaluate_model, parse_tasks, required_files, write_results
from paser.recovery.generation import (
    GENERATION_TASKS,
    Answer,
    distinct_ngrams,
    exact_match,
    get_generation_task,
    greedy_generations,
    higher_is_better,
    label_scores,
    longform_scores,
    model_fingerprint,
    ngram_counts,
    normalise_answer,
    run_generation_task,
)
from paser.recovery.items import read_items
from paser.selection.corpus import Sample
from paser.selection.formatting import encode_corpus

LABELS = {
    "Sentiment": ["Positive", "negative"],
    "Topic Classification": ["Sports"],
    "Paraphrase Identification": ["no"],
}


def _answer(tokens, finished=True, text=""):
    return Answer(tuple(tokens), text, finished)


# ------------------------------------------------------------------------------------------------ metrics


def test_answers_are_normalised_for_case_whitespace_and_punctuation():
    assert normalise_answer("  Not   Duplicates!! ") == "not duplicates"
    assert normalise_answer("Business_executive.") == "business executive"


@pytest.mark.parametrize(
    ("answer", "reference", "matches"),
    [
        ("Positive", "positive", True),
        ("  positive.  ", "Positive", True),
        ("\nNegative!\nThe reviewer hated it.", "negative", True),  # the first non-empty line
        ("Positive. The reviewer liked it.", "Positive", True),  # the label prefix
        ("Business executive", "Business executive", True),
        ("not duplicates", "duplicates", False),
        ("not really", "no", False),  # whole words, not characters
        ("The answer is positive", "positive", False),
        ("Sports\nBusiness", "Business", False),  # only the first line counts
        ("", "yes", False),
        ("yes", "", False),
    ],
)
def test_exact_match_compares_the_first_line_or_its_label_prefix(answer, reference, matches):
    assert exact_match(answer, reference) is matches


def test_repeated_ngrams_are_counted_within_one_answer():
    assert ngram_counts([1, 2, 3, 1, 2, 3, 1], 3) == (2, 5)  # (1,2,3) and (2,3,1) come back once each
    assert ngram_counts([1, 2, 3, 4], 3) == (0, 2)
    assert ngram_counts([1, 2], 3) == (0, 0)
    with pytest.raises(ValueError, match="at least 1"):
        ngram_counts([1], 0)


def test_distinct_n_is_over_all_answers_together():
    assert distinct_ngrams([[1, 2], [1, 3]], 1) == pytest.approx(3 / 4)
    assert distinct_ngrams([[1, 2], [1, 2]], 2) == pytest.approx(1 / 2)  # the same answer twice
    assert math.isnan(distinct_ngrams([[1]], 2))


def test_longform_scores_on_hand_made_answers():
    answers = [_answer([5, 5, 5, 5, 5, 5], finished=False), _answer([1, 2, 3, 4]), _answer([7])]
    record = longform_scores(answers, [{}] * 3)
    metrics = record["metrics"]
    # 3-grams: the loop has 4, three of them repeats; [1,2,3,4] has 2, none repeated; [7] has none.
    assert metrics["repeat_3"] == pytest.approx(3 / 6)
    assert metrics["repeat_4"] == pytest.approx(2 / 4)
    assert metrics["distinct_1"] == pytest.approx(6 / 11)  # {5, 1, 2, 3, 4, 7} over 11 tokens
    assert metrics["distinct_2"] == pytest.approx(4 / 8)  # {55, 12, 23, 34} over 5 + 3 bigrams
    assert metrics["mean_length"] == pytest.approx(11 / 3)
    assert metrics["capped"] == pytest.approx(1 / 3)
    assert record["items"]["repeated_3"] == [3.0, 0.0, 0.0] and record["items"]["ngrams_4"] == [3.0, 1.0, 0.0]
    assert record["items"]["capped"] == [1.0, 0.0, 0.0]


def test_label_scores_count_matches_overall_and_per_category():
    rows = [
        {"output": "Positive", "category": "Sentiment"},
        {"output": "negative", "category": "Sentiment"},
        {"output": "Sports", "category": "Topic Classification"},
    ]
    answers = [_answer([1, 2], text="positive!"), _answer([3], text="Positive"), _answer([4], text="Sports.")]
    record = label_scores(answers, rows)
    assert record["metrics"]["exact_match"] == pytest.approx(2 / 3)
    assert record["metrics"]["exact_match_stderr"] == pytest.approx(math.sqrt((2 / 3) * (1 / 3) / 2))
    assert record["categories"] == {
        "Sentiment": {"exact_match": 0.5, "n": 2},
        "Topic Classification": {"exact_match": 1.0, "n": 1},
    }
    assert record["items"]["exact_match"] == [1.0, 0.0, 1.0] and record["items"]["length"] == [2.0, 1.0, 1.0]


def test_tasks_are_registered_by_name_and_name_their_better_direction():
    assert set(GENERATION_TASKS) == {"gen_labels", "gen_longform"}
    with pytest.raises(ValueError, match="^unknown generation task 'gen_poems'; known: gen_labels, gen_longform; did"):
        get_generation_task("gen_poems")
    assert higher_is_better("gen_labels_exact_match") and higher_is_better("gen_longform_distinct_2")
    assert not higher_is_better("gen_longform_repeat_3") and not higher_is_better("gen_labels_capped")


# ------------------------------------------------------------------------------------------------ decoding, cache


@pytest.fixture
def prompt_ids(tiny_samples, tiny_tokenizer) -> list[list[int]]:
    encoded = encode_corpus(tiny_samples[:6], tiny_tokenizer, max_length=128, show_progress=False)[0]
    return [row.input_ids[: row.prompt_length] for row in encoded]


def test_batched_answers_equal_answers_generated_one_at_a_time(tiny_model, tiny_tokenizer, prompt_ids):
    eos = tiny_tokenizer.eos_token_id
    batched, _ = greedy_generations(tiny_model, tiny_tokenizer, prompt_ids, max_new_tokens=6, batch_size=4)
    for prompt, answer in zip(prompt_ids, batched, strict=True):
        alone = tiny_model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=6, do_sample=False)
        tokens = alone[0, len(prompt) :].tolist()
        assert list(answer.tokens) == (tokens[: tokens.index(eos)] if eos in tokens else tokens)
        assert answer.finished is (eos in tokens)
        assert answer.text == tiny_tokenizer.decode(answer.tokens, skip_special_tokens=True)


def _spy(model, monkeypatch) -> list[int]:
    calls: list[int] = []
    original = model.generate

    def spy(**kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return original(**kwargs)

    monkeypatch.setattr(model, "generate", spy)
    return calls


def test_a_rerun_reads_the_cache_and_decodes_only_new_prompts(
    tiny_model, tiny_tokenizer, prompt_ids, tmp_path, monkeypatch
):
    cache = tmp_path / "gen.json"
    first, stats = greedy_generations(
        tiny_model, tiny_tokenizer, prompt_ids[:4], max_new_tokens=5, batch_size=2, cache_path=cache
    )
    assert (stats["generated"], stats["from_cache"]) == (4, 0)
    calls = _spy(tiny_model, monkeypatch)
    again, stats = greedy_generations(
        tiny_model, tiny_tokenizer, prompt_ids, max_new_tokens=5, batch_size=8, cache_path=cache
    )
    assert again[:4] == first and (stats["generated"], stats["from_cache"]) == (2, 4) and calls == [2]


def test_other_weights_or_settings_decode_again(tiny_model, tiny_tokenizer, prompt_ids, tmp_path, monkeypatch):
    cache = tmp_path / "gen.json"
    greedy_generations(tiny_model, tiny_tokenizer, prompt_ids, max_new_tokens=5, batch_size=8, cache_path=cache)
    before = model_fingerprint(tiny_model)
    assert (
        greedy_generations(tiny_model, tiny_tokenizer, prompt_ids, max_new_tokens=4, batch_size=8, cache_path=cache)[1][
            "from_cache"
        ]
        == 0
    )
    with torch.no_grad():
        tiny_model.lm_head.weight[0, 0] += 1.0
    assert model_fingerprint(tiny_model) != before
    calls = _spy(tiny_model, monkeypatch)
    greedy_generations(tiny_model, tiny_tokenizer, prompt_ids, max_new_tokens=4, batch_size=8, cache_path=cache)
    assert calls == [len(prompt_ids)]


# ------------------------------------------------------------------------------------------------ the tasks, end to end


@pytest.fixture
def planted_data_dir(tmp_path):
    """A data folder with a small labelled T0 file (label categories and one other) and a small Alpaca file whose
    even rows have long references."""
    (tmp_path / "recovery").mkdir()
    t0 = []
    for category, outputs in [*LABELS.items(), ("Summarization", ["A long summary of the passage."])]:
        for index in range(4):
            output = outputs[index % len(outputs)]
            t0.append(
                {"id": f"{category}-{index}", "instruction": f"{category} question {index}?", "input": ""}
                | {"output": output, "category": category, "dataset": "d", "task": "t"}
            )
    alpaca = [
        {
            "instruction": f"Write about topic {index}.",
            "input": "",
            "output": ("word " * 150 if index % 2 else "Short."),
        }
        for index in range(10)
    ]
    for relative, rows in (("t0_labelled_dev.jsonl.gz", t0), ("alpaca_52k.jsonl.gz", alpaca)):
        with gzip.open(tmp_path / "recovery" / relative, "wt", encoding="utf-8") as stream:
            stream.write("".join(json.dumps(row) + "\n" for row in rows))
    return tmp_path


def test_the_label_task_answers_label_prompts_formatted_as_training_does(
    tiny_model, tiny_tokenizer, planted_data_dir, tmp_path, monkeypatch
):
    seen: list[list[int]] = []
    original = tiny_model.generate

    def spy(**kwargs):
        for row, mask in zip(kwargs["input_ids"].tolist(), kwargs["attention_mask"].tolist(), strict=True):
            seen.append([token for token, kept in zip(row, mask, strict=True) if kept])
        return original(**kwargs)

    monkeypatch.setattr(tiny_model, "generate", spy)
    record = run_generation_task(
        tiny_model, tiny_tokenizer, "gen_labels", limit=6, data_dir=planted_data_dir, cache_dir=tmp_path / "cache"
    )
    assert record["n"] == 6 and record["max_new_tokens"] == 16 and record["skipped"] == {}
    assert set(record["categories"]) == set(LABELS)  # two of each label category, no summaries
    assert all(record["categories"][category]["n"] == 2 for category in LABELS)
    assert set(record["metrics"]) == {"exact_match", "exact_match_stderr", "mean_length", "capped"}
    assert all(len(values) == 6 for values in record["items"].values())
    assert record["generation"]["generated"] == 6 and (tmp_path / "cache" / "gen_labels.json").is_file()
    # The prompts decoded are the ones training builds (here the chat template): left padding aside, the same ids.
    drawn = heldout_rows("t0_labels", 6, planted_data_dir)
    samples = [Sample(row["id"], row["instruction"], row["input"], row["output"]) for row in drawn]
    encoded = encode_corpus(samples, tiny_tokenizer, max_length=128, show_progress=False)[0]
    assert sorted(seen) == sorted(row.input_ids[: row.prompt_length] for row in encoded)
    assert tiny_tokenizer.decode(seen[0]).startswith("<|im_start|>user")


def test_prompts_of_the_training_pool_are_left_out(tiny_model, tiny_tokenizer, planted_data_dir):
    pool = {prompt_key(f"Write about topic {index}.") for index in (1, 3)}
    record = run_generation_task(
        tiny_model, tiny_tokenizer, "gen_longform", data_dir=planted_data_dir, exclude=pool, batch_size=2
    )
    # Rows 1, 3, 5, 7, 9 have long references; 1 and 3 are in the pool.
    assert record["n"] == 3
    assert [example["id"] for example in record["examples"]] == ["alpaca/5", "alpaca/7", "alpaca/9"]
    assert set(record["metrics"]) == {"repeat_3", "repeat_4", "distinct_1", "distinct_2", "mean_length", "capped"}


def test_generation_tasks_run_from_evaluate_model_and_keep_their_items(
    tiny_model, tiny_tokenizer, planted_data_dir, tmp_path
):
    assert parse_tasks("all") == list(ALL_TASKS) and "gen_labels" not in ALL_TASKS
    assert required_files("gen_labels,gen_longform", planted_data_dir) == {
        "gen_labels": [planted_data_dir / "recovery" / "t0_labelled_dev.jsonl.gz"],
        "gen_longform": [planted_data_dir / "recovery" / "alpaca_52k.jsonl.gz"],
    }
    record = evaluate_model(
        tiny_model,
        tiny_tokenizer,
        "gen_labels,gen_longform",
        limit=3,
        data_dir=planted_data_dir,
        generation_cache=tmp_path / "generations",
    )
    assert [record["tasks"][task]["n"] for task in ("gen_labels", "gen_longform")] == [3, 3]
    write_results(record, tmp_path)
    items = read_items(tmp_path)
    assert len(items["gen_labels.exact_match"]) == 3 and len(items["gen_longform.repeated_3"]) == 3
    stored = json.loads((tmp_path / "metrics.json").read_text())
    assert "items" not in stored["tasks"]["gen_labels"] and "exact_match" in (tmp_path / "metrics.md").read_text()
