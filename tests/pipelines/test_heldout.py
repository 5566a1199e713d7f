"""`evaluation.heldout`: named held-out sets parse, refuse bad entries by key, and report their NLL per category;
the in-distribution set is also reported as its dev and test halves."""

from __future__ import annotations

import json
import math

import pytest

from paser.pipelines.config import ConfigError, load_config
from paser.pipelines.heldout import (
    DEV,
    SPLITS,
    TEST,
    HeldoutSet,
    category_metric_names,
    category_slug,
    heldout_metrics,
    heldout_nll,
    parse_heldout,
    row_split,
    split_metric_names,
    split_parts,
)
from paser.pipelines.run import RunConfig

BASE = ["corpus.path=x.jsonl", "models.pruned=p"]


def _evaluation(*overrides: str):
    return load_config(RunConfig, None, [*BASE, *overrides]).evaluation


def test_the_mapping_parses_every_kind_in_its_order(tmp_path):
    rows = tmp_path / "rows.json"
    rows.write_text("[]")
    evaluation = _evaluation(
        "evaluation.heldout.alpaca=500",
        "evaluation.heldout.gsm8k=builtin:gsm8k:300",
        "evaluation.heldout.t0=builtin:t0",
        f"evaluation.heldout.mine={rows}",
    )
    assert evaluation.heldout_sets() == [
        HeldoutSet("alpaca", rows=500),
        HeldoutSet("gsm8k", builtin="gsm8k", limit=300),
        HeldoutSet("t0", builtin="t0"),
        HeldoutSet("mine", file=str(rows)),
    ]
    assert evaluation.split_rows() == 500
    assert evaluation.heldout_rows is None and evaluation.heldout_file is None


def test_a_mapping_without_a_count_splits_nothing_off_the_corpus():
    assert _evaluation("evaluation.heldout.humaneval=builtin:humaneval").split_rows() == 0


@pytest.mark.parametrize(
    ("entries", "key", "message"),
    [
        ({"gone": "missing.jsonl"}, "gone", "does not exist"),
        ({"negative": -5}, "negative", "positive count"),
        ({"none": 0}, "none", "positive count"),
        ({"first": 10, "second": 20}, "second", "only one set may be rows split off the corpus"),
        ({"GSM-8k": "builtin:gsm8k"}, "GSM-8k", r"\[a-z0-9_\]\+"),
        ({"unknown": "builtin:mmlu"}, "unknown", "known: alpaca_longform, gsm8k, humaneval, t0, t0_labels"),
        ({"alpaca_dev": "builtin:gsm8k"}, "alpaca_dev", "halves"),
        ({"test": 10}, "test", "halves"),
        ({"limited": "builtin:gsm8k:zero"}, "limited", "positive int"),
        ({"limited": "builtin:gsm8k:0"}, "limited", "positive int"),
        ({"text": "notes.txt"}, "text", "not a file of rows"),
        ({"flag": True}, "flag", "expected a row count"),
    ],
)
def test_a_bad_entry_is_refused_naming_its_key(entries, key, message):
    overrides = [f"evaluation.heldout.{name}={json.dumps(value)}" for name, value in entries.items()]
    with pytest.raises(ConfigError, match=rf"evaluation\.heldout\.{key}: .*{message}"):
        load_config(RunConfig, None, [*BASE, *overrides])


@pytest.mark.parametrize(
    "older", ["evaluation.heldout_rows=200", "evaluation.heldout_rows=0", "evaluation.heldout_file=x"]
)
def test_the_older_keys_do_not_mix_with_the_mapping(older):
    with pytest.raises(ConfigError, match="not both"):
        load_config(RunConfig, None, [*BASE, older, "evaluation.heldout.gsm8k=builtin:gsm8k"])


def test_the_older_keys_are_one_unnamed_set_as_before():
    default = _evaluation()
    assert (default.heldout_rows, default.heldout, default.split_rows()) == (200, None, 200)
    assert default.heldout_sets() == [HeldoutSet(None, rows=200)]
    assert default.heldout_sets()[0].metric_prefix == "heldout"
    assert _evaluation("evaluation.heldout_rows=0").heldout_sets() == []
    from_file = _evaluation("evaluation.heldout_file=h.jsonl")
    assert (from_file.heldout_rows, from_file.heldout_sets()) == (0, [HeldoutSet(None, file="h.jsonl")])
    with pytest.raises(ConfigError, match="not both"):
        _evaluation("evaluation.heldout_file=h.jsonl", "evaluation.heldout_rows=5")
    with pytest.raises(ConfigError, match="must be >= 0"):
        _evaluation("evaluation.heldout_rows=-1")


def test_a_category_becomes_a_metric_suffix():
    assert category_slug("Multiple-Choice QA") == "multiple_choice_qa"
    assert category_slug("Structure-to-Text") == "structure_to_text"
    assert category_slug(" closed_qa ") == "closed_qa"


def test_a_named_set_flattens_to_its_own_metrics_and_categories():
    result = {
        "nll": 2.0,
        "ppl": math.exp(2.0),
        "categories": {"Sentiment": {"nll": 1.5}, "Closed-Book QA": {"nll": 3.0}},
    }
    metrics = heldout_metrics("t0", result)
    assert metrics == {
        "heldout_t0_nll": 2.0,
        "heldout_t0_ppl": pytest.approx(math.exp(2.0)),
        "heldout_t0_nll_closed_book_qa": 3.0,
        "heldout_t0_nll_sentiment": 1.5,
    }
    names = ["wikitext2_ppl", "heldout_nll", *metrics, "heldout_gsm8k_nll", "heldout_gsm8k_ppl"]
    assert category_metric_names(names, ["t0", "gsm8k"]) == [
        "heldout_t0_nll_closed_book_qa",
        "heldout_t0_nll_sentiment",
    ]


def _labelled_file(path, tiny_samples, categories):
    rows = []
    for index, sample in enumerate(tiny_samples[:12]):
        row = {"instruction": sample.instruction, "input": sample.input, "output": sample.response}
        if categories[index % len(categories)] is not None:
            row["category"] = categories[index % len(categories)]
        rows.append(row)
    path.write_text(json.dumps(rows))
    return path


def test_per_category_nll_is_each_category_alone_and_the_total_their_token_weighted_mean(
    tiny_model, tiny_tokenizer, tiny_samples, tmp_path
):
    from paser.recovery.config import TrainConfig
    from paser.recovery.evaluate import response_nll
    from paser.recovery.train import load_training_rows

    training = TrainConfig(max_length=96, show_progress=False)
    # A JSON array, read like any corpus file.
    path = _labelled_file(tmp_path / "labelled.json", tiny_samples, ["Sentiment", "Closed-Book QA", None])
    result = heldout_nll(tiny_model, tiny_tokenizer, path, training, batch_size=4)
    rows = load_training_rows(path, tiny_tokenizer, training)
    everything = response_nll(tiny_model, rows.encoded, batch_size=4)
    assert (result["rows"], result["tokens"]) == (12, everything["tokens"])
    assert result["nll"] == pytest.approx(everything["nll"], rel=1e-5)
    assert set(result["categories"]) == {"Sentiment", "Closed-Book QA"}  # unlabelled rows count in the total only
    sentiment = response_nll(tiny_model, rows.encoded[0::3], batch_size=4)
    assert result["categories"]["Sentiment"]["rows"] == 4
    assert result["categories"]["Sentiment"]["nll"] == pytest.approx(sentiment["nll"], rel=1e-5)
    assert heldout_metrics("mine", result)["heldout_mine_nll_sentiment"] == result["categories"]["Sentiment"]["nll"]


def test_an_unlabelled_set_has_no_categories(tiny_model, tiny_tokenizer, tiny_samples, tmp_path):
    from paser.recovery.config import TrainConfig

    path = _labelled_file(tmp_path / "plain.json", tiny_samples, [None])
    result = heldout_nll(
        tiny_model, tiny_tokenizer, path, TrainConfig(max_length=96, show_progress=False), batch_size=4
    )
    assert "categories" not in result and result["rows"] == 12


def test_two_categories_with_one_slug_are_refused(tiny_model, tiny_tokenizer, tiny_samples, tmp_path):
    from paser.recovery.config import TrainConfig

    path = _labelled_file(tmp_path / "clash.json", tiny_samples, ["Closed QA", "closed-qa"])
    with pytest.raises(ValueError, match="closed_qa"):
        heldout_nll(tiny_model, tiny_tokenizer, path, TrainConfig(max_length=96, show_progress=False), batch_size=4)


def test_parse_heldout_accepts_an_empty_mapping():
    assert parse_heldout({}) == []


def test_a_rows_half_is_fixed_by_its_id_alone():
    ids = [f"row-{index}" for index in range(2000)]
    halves = [row_split(row_id) for row_id in ids]
    assert halves == [row_split(row_id) for row_id in ids]  # deterministic
    assert set(halves) == set(SPLITS)
    assert 900 < halves.count(DEV) < 1100  # about half each
    # A row's half does not depend on the other rows: the first 50 keep theirs in a set of 50.
    assert [row_split(row_id) for row_id in ids[:50]] == halves[:50]


def test_the_halves_partition_the_rows_and_add_up_to_the_whole():
    ids = [f"row-{index}" for index in range(40)]
    items = {"nll_sum": [float(index) for index in range(40)], "tokens": [float(1 + index % 3) for index in range(40)]}
    parts = split_parts(ids, items)
    assert set(parts) == {DEV, TEST}
    assert parts[DEV]["rows"] + parts[TEST]["rows"] == 40
    dev_sums = {value for value in parts[DEV]["items"]["nll_sum"]}
    assert dev_sums.isdisjoint(parts[TEST]["items"]["nll_sum"])
    assert dev_sums == {items["nll_sum"][i] for i, row_id in enumerate(ids) if row_split(row_id) == DEV}
    whole = sum(items["nll_sum"]) / sum(items["tokens"])
    weighted = sum(part["nll"] * part["tokens"] for part in parts.values()) / sum(items["tokens"])
    assert weighted == pytest.approx(whole, rel=1e-12)
    assert parts[DEV]["ppl"] == pytest.approx(math.exp(parts[DEV]["nll"]))


def test_a_half_without_rows_is_left_out():
    only_dev = [row_id for row_id in (f"r{index}" for index in range(50)) if row_split(row_id) == DEV][:3]
    assert set(split_parts(only_dev, {"nll_sum": [1.0, 2.0, 3.0], "tokens": [1.0, 1.0, 1.0]})) == {DEV}


def test_the_in_distribution_set_is_the_split_or_the_older_keys_set(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("")
    sets = parse_heldout({"alpaca": 200, "t0": "builtin:t0", "mine": str(rows)})
    assert [spec.in_distribution for spec in sets] == [True, False, False]
    assert split_metric_names(sets, DEV) == ["heldout_alpaca_dev_nll", "heldout_alpaca_dev_ppl"]
    assert split_metric_names(sets, TEST) == ["heldout_alpaca_test_nll", "heldout_alpaca_test_ppl"]
    assert split_metric_names(sets[1:], DEV) == []  # out-of-distribution sets only: nothing to choose on
    older = _evaluation("evaluation.heldout_rows=200").heldout_sets()
    assert split_metric_names(older, DEV) == ["heldout_dev_nll", "heldout_dev_ppl"]
    with pytest.raises(ValueError, match="known: dev, test"):
        split_metric_names(sets, "train")


def test_the_in_distribution_halves_are_its_rows_nll_split_by_id(tiny_model, tiny_tokenizer, tiny_samples, tmp_path):
    from paser.recovery.config import TrainConfig

    path = _labelled_file(tmp_path / "split.json", tiny_samples, [None])
    training = TrainConfig(max_length=96, show_progress=False)
    whole = heldout_nll(tiny_model, tiny_tokenizer, path, training, batch_size=4)
    result = heldout_nll(tiny_model, tiny_tokenizer, path, training, batch_size=4, split=True)
    halves = result["splits"]
    same = ("nll", "tokens", "rows")
    assert [result[key] for key in same] == [whole[key] for key in same]
    assert halves[DEV]["rows"] + halves[TEST]["rows"] == 12
    assert halves[DEV]["tokens"] + halves[TEST]["tokens"] == whole["tokens"]
    assert heldout_metrics("alpaca_dev", halves[DEV]) == {
        "heldout_alpaca_dev_nll": halves[DEV]["nll"],
        "heldout_alpaca_dev_ppl": halves[DEV]["ppl"],
    }
    assert "splits" not in whole
