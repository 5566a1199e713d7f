import gzip
import json
import random

import pytest
import torch
from transformers import LlamaConfig

from paser.data.paths import data_file
from paser.recovery.calibration import (
    CORPUS_TOKEN_FACTOR,
    DOCUMENT_SEPARATOR,
    corpus_documents,
    formatted_rows,
    load_calibration,
)
from paser.recovery.models import default_seqlen
from paser.selection.corpus import CorpusConfig, Sample, load_corpus


def _token_ids(tokenizer, text: str) -> torch.Tensor:
    return torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"])


def _is_contiguous_slice(window: torch.Tensor, token_ids: torch.Tensor) -> bool:
    return bool((token_ids.unfold(0, window.numel(), 1) == window).all(dim=1).any())


@pytest.fixture
def text_file(tmp_path):
    rng = random.Random(0)
    words = ["river", "stone", "light", "table", "green", "quiet", "paper", "cloud", "seven", "north"]
    path = tmp_path / "calibration.txt"
    path.write_text(" ".join(rng.choice(words) for _ in range(3000)), encoding="utf-8")
    return path


@pytest.fixture
def corpus_file(tmp_path):
    rows = [
        {"instruction": f"Describe item {index}.", "input": "", "output": f"Item {index} is fine."}
        for index in range(30)
    ]
    rows.append({"instruction": "No answer here.", "input": "", "output": ""})
    rows.append({"instruction": "Describe item 0.", "input": "", "output": "Item 0 is fine."})
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_windows_are_long_ids_of_the_requested_shape(text_file, tiny_tokenizer):
    windows, record = load_calibration(str(text_file), tiny_tokenizer, n_samples=5, seqlen=32)
    assert windows.shape == (5, 32)
    assert windows.dtype == torch.long
    assert (record["n_samples"], record["seqlen"], record["kind"]) == (5, 32, "text")


def test_same_seed_gives_same_windows_and_another_seed_different_ones(text_file, tiny_tokenizer):
    first, _ = load_calibration(str(text_file), tiny_tokenizer, n_samples=6, seqlen=32, seed=1)
    again, _ = load_calibration(str(text_file), tiny_tokenizer, n_samples=6, seqlen=32, seed=1)
    other, _ = load_calibration(str(text_file), tiny_tokenizer, n_samples=6, seqlen=32, seed=2)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_every_window_is_a_contiguous_slice_of_the_tokenised_text(text_file, tiny_tokenizer):
    windows, record = load_calibration(str(text_file), tiny_tokenizer, n_samples=8, seqlen=40)
    token_ids = _token_ids(tiny_tokenizer, text_file.read_text(encoding="utf-8"))
    assert record["n_tokens_available"] == token_ids.numel()
    assert all(_is_contiguous_slice(window, token_ids) for window in windows)


def test_no_special_token_is_added(text_file, tiny_tokenizer):
    windows, _ = load_calibration(str(text_file), tiny_tokenizer, n_samples=20, seqlen=32)
    assert not (windows == tiny_tokenizer.bos_token_id).any()


def test_corpus_rows_are_rendered_like_scoring_and_skips_are_counted(corpus_file, tiny_tokenizer):
    windows, record = load_calibration(str(corpus_file), tiny_tokenizer, n_samples=4, seqlen=24, seed=5)
    samples = load_corpus(CorpusConfig(path=str(corpus_file))).samples
    rendered = formatted_rows(samples, tiny_tokenizer)
    assert rendered[0].startswith("<|im_start|>user\nDescribe item 0.<|im_end|>\n<|im_start|>assistant\n")
    assert rendered[0].endswith("Item 0 is fine.</s>")
    documents = corpus_documents(samples, tiny_tokenizer, CORPUS_TOKEN_FACTOR * 4 * 24 + 1, seed=5)
    token_ids = _token_ids(tiny_tokenizer, DOCUMENT_SEPARATOR.join(documents))
    assert all(_is_contiguous_slice(window, token_ids) for window in windows)
    assert (record["kind"], record["rows_read"], record["rows_valid"]) == ("corpus", 32, 30)
    assert record["rows_used"] == len(documents)
    assert record["rows_skipped"] == {"duplicate": 1, "empty_response": 1}
    assert len(record["sha256"]) == 64
    # The rows used, by their position in the file: rendered, they are exactly the documents taken.
    positions = record["rows_used_positions"]
    assert len(positions) == len(documents) and positions == sorted(set(positions))
    by_position = {sample.source_index: text for sample, text in zip(samples, rendered, strict=True)}
    assert sorted(by_position[position] for position in positions) == sorted(documents)


def test_corpus_rows_are_taken_in_seeded_random_order_only_until_the_windows_are_covered(tiny_tokenizer):
    samples = [
        Sample(id=str(i), instruction=f"Describe item {i}.", input="", response=f"Item {i}.") for i in range(300)
    ]
    wanted = 200
    documents = corpus_documents(samples, tiny_tokenizer, wanted, seed=1)
    counts = [len(_token_ids(tiny_tokenizer, text)) for text in documents]
    assert sum(counts) >= wanted and sum(counts[:-1]) < wanted
    assert documents != formatted_rows(samples[: len(documents)], tiny_tokenizer)
    assert documents == corpus_documents(samples, tiny_tokenizer, wanted, seed=1)
    assert sorted(corpus_documents(samples, tiny_tokenizer, 10**9, seed=1)) == sorted(
        formatted_rows(samples, tiny_tokenizer)
    )


def test_overlap_is_recorded_when_the_text_is_shorter_than_all_windows(text_file, tiny_tokenizer):
    _, short = load_calibration(str(text_file), tiny_tokenizer, n_samples=400, seqlen=64)
    _, enough = load_calibration(str(text_file), tiny_tokenizer, n_samples=4, seqlen=64)
    assert enough["n_tokens_available"] >= 4 * 64
    assert short["n_tokens_available"] < 400 * 64
    assert (short["overlapping"], enough["overlapping"]) == (True, False)


def test_demo_source_needs_no_file(tiny_tokenizer):
    windows, record = load_calibration("demo", tiny_tokenizer, n_samples=3, seqlen=64)
    assert windows.shape == (3, 64)
    assert record["kind"] == "demo"
    assert record["rows_valid"] == record["rows_read"] > 0
    assert 0 < record["rows_used"] <= record["rows_valid"]


@pytest.mark.parametrize(
    "name", ["wikitext2_raw_v1_test.jsonl", "wikitext2_raw_v1_test.hf_rows_joined_newline.txt", "ptb.test.txt"]
)
def test_evaluation_test_files_are_refused_by_name(tmp_path, tiny_tokenizer, name):
    path = tmp_path / name
    path.write_text("some text " * 500, encoding="utf-8")
    with pytest.raises(ValueError, match="calibration must not use the text the pruned model is evaluated on"):
        load_calibration(str(path), tiny_tokenizer, n_samples=2, seqlen=16)


def test_any_file_under_the_data_eval_folder_is_refused(tmp_path, tiny_tokenizer):
    (tmp_path / "eval").mkdir()
    path = tmp_path / "eval" / "piqa_valid.txt"
    path.write_text("some text " * 500, encoding="utf-8")
    with pytest.raises(ValueError, match="evaluation data folder"):
        load_calibration(str(path), tiny_tokenizer, n_samples=2, seqlen=16, data_dir=tmp_path)


def test_text_shorter_than_seqlen_plus_one_is_refused(tmp_path, tiny_tokenizer):
    path = tmp_path / "short.txt"
    path.write_text("the cat sat", encoding="utf-8")
    with pytest.raises(ValueError, match=r"fewer than seqlen \+ 1 = 65"):
        load_calibration(str(path), tiny_tokenizer, n_samples=2, seqlen=64)


def test_missing_file_is_named(tmp_path, tiny_tokenizer):
    missing = tmp_path / "nowhere.jsonl"
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl"):
        load_calibration(str(missing), tiny_tokenizer)


def test_unsupported_file_type_is_refused(tmp_path, tiny_tokenizer):
    path = tmp_path / "notes.md"
    path.write_text("text", encoding="utf-8")
    with pytest.raises(ValueError, match="unsupported type"):
        load_calibration(str(path), tiny_tokenizer)


@pytest.mark.parametrize("source", ["wikitext2", "c4"])
def test_unreachable_hub_gives_a_clear_error(monkeypatch, tiny_tokenizer, source):
    import datasets

    def offline(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ConnectionError, match="hub may be unreachable.*corpus file"):
        load_calibration(source, tiny_tokenizer, n_samples=2, seqlen=16)


def test_wikitext2_train_rows_are_joined_with_a_space_as_in_the_published_code(monkeypatch, tiny_tokenizer):
    import datasets

    rows = [f" = Heading {index} = \n" if index % 5 == 0 else "" for index in range(40)]
    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return datasets.Dataset.from_dict({"text": rows})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    windows, record = load_calibration("wikitext2", tiny_tokenizer, n_samples=3, seqlen=16)
    assert calls == [(("Salesforce/wikitext", "wikitext-2-raw-v1"), {"split": "train"})]
    token_ids = _token_ids(tiny_tokenizer, " ".join(rows))
    assert all(_is_contiguous_slice(window, token_ids) for window in windows)
    assert (record["kind"], record["hub"]) == ("hub", "Salesforce/wikitext wikitext-2-raw-v1 train")


def test_c4_takes_random_documents_until_the_windows_are_covered(monkeypatch, tiny_tokenizer):
    import datasets

    documents = [f"document {index} of the shard." for index in range(500)]
    monkeypatch.setattr(
        datasets, "load_dataset", lambda *args, **kwargs: datasets.Dataset.from_dict({"text": documents})
    )
    _, record = load_calibration("c4", tiny_tokenizer, n_samples=4, seqlen=32)
    assert record["hub"] == "allenai/c4 en/c4-train.00000-of-01024.json.gz train"
    assert 1 < record["documents_used"] < len(documents)
    assert record["n_tokens_available"] >= 4 * 32 + 1


def test_a_real_evaluation_file_of_the_data_dir_is_refused(tiny_tokenizer):
    try:
        piqa = data_file("eval/piqa_valid.jsonl")
    except FileNotFoundError as error:
        pytest.skip(str(error))
    with pytest.raises(ValueError, match="evaluation data folder"):
        load_calibration(str(piqa), tiny_tokenizer, n_samples=2, seqlen=16)


def test_seqlen_defaults_to_the_model_limit_capped_at_2048(text_file, tiny_tokenizer):
    assert default_seqlen(LlamaConfig(max_position_embeddings=8192)) == 2048
    assert default_seqlen(LlamaConfig(max_position_embeddings=256)) == 256
    windows, _ = load_calibration(str(text_file), tiny_tokenizer, n_samples=2, max_length=48)
    assert windows.shape == (2, 48)


def test_seqlen_above_the_model_limit_is_refused(text_file, tiny_tokenizer):
    with pytest.raises(ValueError, match="seqlen 64 exceeds the model's maximum length 32"):
        load_calibration(str(text_file), tiny_tokenizer, n_samples=2, seqlen=64, max_length=32)


def test_alpaca_rows_calibrate(tmp_path, tiny_tokenizer):
    try:
        alpaca = data_file("recovery/alpaca_52k.jsonl.gz")
    except FileNotFoundError as error:
        pytest.skip(str(error))
    with gzip.open(alpaca, "rt", encoding="utf-8") as handle:
        lines = [next(handle) for _ in range(200)]
    path = tmp_path / "alpaca_slice.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    windows, record = load_calibration(str(path), tiny_tokenizer, n_samples=8, seqlen=128, seed=3)
    assert windows.shape == (8, 128)
    assert record["rows_read"] == 200
    assert record["rows_valid"] + sum(record["rows_skipped"].values()) == 200
    assert 0 < record["rows_used"] <= record["rows_valid"]
    assert record["n_tokens_available"] > 8 * 128
