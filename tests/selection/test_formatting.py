import dataclasses

import pytest

from paser.selection.corpus import Sample
from paser.selection.formatting import (
    ALPACA_PREAMBLE_NO_INPUT,
    ALPACA_PREAMBLE_WITH_INPUT,
    EncodedSample,
    build_prompt,
    check_same_tokenizer,
    encode_corpus,
    encode_sample,
)

SAMPLE = Sample(id="s1", instruction="Name a colour.", input="", response="Blue is a colour.")
SAMPLE_WITH_INPUT = Sample(id="s2", instruction="Sum them.", input="2 and 3", response="5")


@pytest.fixture
def plain_tokenizer(tiny_tokenizer_dir):
    """The tiny tokenizer without a chat template."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    tokenizer.chat_template = None
    return tokenizer


def test_auto_template_uses_chat_template_when_tokenizer_has_one(tiny_tokenizer):
    prompt = build_prompt(SAMPLE, tiny_tokenizer)
    assert prompt == "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n"


def test_chat_prompt_renders_context_turns_before_user_turn(tiny_tokenizer):
    sample = dataclasses.replace(SAMPLE, context=(("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello")))
    prompt = build_prompt(sample, tiny_tokenizer, template="chat")
    assert prompt == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello<|im_end|>\n"
        "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n"
    )


def test_auto_template_falls_back_to_alpaca_without_chat_template(plain_tokenizer):
    assert build_prompt(SAMPLE, plain_tokenizer) == (
        f"{ALPACA_PREAMBLE_NO_INPUT}\n\n### Instruction:\nName a colour.\n\n### Response:\n"
    )


def test_alpaca_prompt_with_input_uses_input_preamble_and_section(tiny_tokenizer):
    assert build_prompt(SAMPLE_WITH_INPUT, tiny_tokenizer, template="alpaca") == (
        f"{ALPACA_PREAMBLE_WITH_INPUT}\n\n### Instruction:\nSum them.\n\n### Input:\n2 and 3\n\n### Response:\n"
    )


def test_alpaca_prompt_renders_context_turns_before_instruction(tiny_tokenizer):
    sample = dataclasses.replace(SAMPLE, context=(("system", "Be brief."),))
    assert build_prompt(sample, tiny_tokenizer, template="alpaca") == (
        f"{ALPACA_PREAMBLE_NO_INPUT}\n\n### System:\nBe brief.\n\n### Instruction:\nName a colour.\n\n### Response:\n"
    )


def test_chat_template_is_required_when_asked_for(plain_tokenizer):
    with pytest.raises(ValueError, match="no chat_template"):
        build_prompt(SAMPLE, plain_tokenizer, template="chat")


def test_unknown_template_lists_known_ones(tiny_tokenizer):
    with pytest.raises(ValueError, match="known: auto, alpaca, chat"):
        build_prompt(SAMPLE, tiny_tokenizer, template="vicuna")


def test_response_span_is_exactly_response_tokens_plus_eos(tiny_tokenizer):
    encoded = encode_sample(SAMPLE, tiny_tokenizer, max_length=256)
    response_ids = tiny_tokenizer(SAMPLE.response, add_special_tokens=False)["input_ids"]
    assert encoded.input_ids[encoded.prompt_length :] == [*response_ids, tiny_tokenizer.eos_token_id]
    assert tiny_tokenizer.decode(encoded.input_ids[encoded.prompt_length : -1]) == SAMPLE.response
    assert not encoded.truncated


def test_chat_prompt_gets_no_extra_special_tokens(tiny_tokenizer):
    encoded = encode_sample(SAMPLE, tiny_tokenizer, max_length=256, template="chat")
    prompt_ids = tiny_tokenizer(build_prompt(SAMPLE, tiny_tokenizer), add_special_tokens=False)["input_ids"]
    assert encoded.input_ids[: encoded.prompt_length] == prompt_ids
    assert tiny_tokenizer.bos_token_id not in encoded.input_ids


def test_alpaca_prompt_starts_with_bos(tiny_tokenizer):
    encoded = encode_sample(SAMPLE, tiny_tokenizer, max_length=256, template="alpaca")
    assert encoded.input_ids[0] == tiny_tokenizer.bos_token_id
    assert encoded.input_ids.count(tiny_tokenizer.bos_token_id) == 1


def test_truncate_cuts_response_tail_to_max_length(tiny_tokenizer):
    full = encode_sample(SAMPLE, tiny_tokenizer, max_length=256)
    max_length = full.prompt_length + 2
    cut = encode_sample(SAMPLE, tiny_tokenizer, max_length=max_length, overflow="truncate")
    assert cut == EncodedSample(
        id="s1", input_ids=full.input_ids[:max_length], prompt_length=full.prompt_length, truncated=True
    )


def test_skip_mode_reports_too_long(tiny_tokenizer):
    full = encode_sample(SAMPLE, tiny_tokenizer, max_length=256)
    assert encode_sample(SAMPLE, tiny_tokenizer, max_length=full.prompt_length + 2, overflow="skip") == "too_long"


def test_exact_fit_is_not_truncated(tiny_tokenizer):
    full = encode_sample(SAMPLE, tiny_tokenizer, max_length=256)
    assert encode_sample(SAMPLE, tiny_tokenizer, max_length=len(full.input_ids), overflow="skip") == full


@pytest.mark.parametrize("overflow", ["truncate", "skip"])
def test_prompt_leaving_no_response_token_is_skipped_in_both_modes(tiny_tokenizer, overflow):
    full = encode_sample(SAMPLE, tiny_tokenizer, max_length=256)
    assert encode_sample(SAMPLE, tiny_tokenizer, max_length=full.prompt_length, overflow=overflow) == "prompt_too_long"


def test_unknown_overflow_lists_known_ones(tiny_tokenizer):
    with pytest.raises(ValueError, match="known: truncate, skip"):
        encode_sample(SAMPLE, tiny_tokenizer, max_length=256, overflow="drop")


def test_encode_corpus_matches_encode_sample_row_by_row(tiny_tokenizer, tiny_samples):
    encoded, skip_counts, _ = encode_corpus(tiny_samples, tiny_tokenizer, max_length=256, show_progress=False)
    assert skip_counts == {}
    assert encoded == [encode_sample(sample, tiny_tokenizer, max_length=256) for sample in tiny_samples]


def test_encode_corpus_counts_skips_with_example_ids(tiny_tokenizer, tiny_samples):
    lengths = {e.id: e.prompt_length for e in encode_corpus(tiny_samples, tiny_tokenizer, 256, show_progress=False)[0]}
    max_length = sorted(lengths.values())[len(lengths) // 2]
    encoded, skip_counts, skip_examples = encode_corpus(
        tiny_samples, tiny_tokenizer, max_length, overflow="skip", show_progress=False
    )
    expected_prompt_too_long = [sample_id for sample_id, length in lengths.items() if length >= max_length]
    assert skip_counts["prompt_too_long"] == len(expected_prompt_too_long)
    assert skip_examples["prompt_too_long"] == expected_prompt_too_long[:5]
    assert len(encoded) + sum(skip_counts.values()) == len(tiny_samples)
    assert all(len(sample.input_ids) <= max_length for sample in encoded)


def test_same_tokenizer_is_accepted(tiny_tokenizer, tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    check_same_tokenizer(tiny_tokenizer, AutoTokenizer.from_pretrained(tiny_tokenizer_dir))


def test_tokenizers_with_different_vocab_sizes_are_refused(tiny_tokenizer, tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    bigger = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    bigger.add_tokens(["zzzextra"])
    with pytest.raises(ValueError, match=f"vocab sizes differ: {len(tiny_tokenizer)} vs {len(tiny_tokenizer) + 1}"):
        check_same_tokenizer(tiny_tokenizer, bigger)


def test_tokenizers_with_different_id_maps_are_refused(tiny_tokenizer, tmp_path):
    import json

    from transformers import AutoTokenizer

    tiny_tokenizer.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    first, second = sorted((token for token in vocab if token.isalpha()), key=vocab.get)[:2]
    vocab[first], vocab[second] = vocab[second], vocab[first]
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    swapped = AutoTokenizer.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=rf"2 tokens map to different ids, e.g. '{first}': {vocab[second]} vs"):
        check_same_tokenizer(tiny_tokenizer, swapped)


def test_tokenizers_with_different_special_tokens_are_refused(tiny_tokenizer, tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    other = AutoTokenizer.from_pretrained(tiny_tokenizer_dir, eos_token="<|im_end|>")
    expected = f"eos ids differ: {tiny_tokenizer.eos_token_id} vs {other.eos_token_id}"
    with pytest.raises(ValueError, match=expected):
        check_same_tokenizer(tiny_tokenizer, other)


def test_encoded_sample_keeps_compact_ids_and_behaves_like_a_record():
    import pickle
    from array import array

    row = EncodedSample("r1", [5, 70000, 3], prompt_length=1, truncated=False)
    assert row.input_ids == [5, 70000, 3] and isinstance(row.input_ids, list)
    assert row.length == 3 and row.response_length == 2
    assert row._tokens.itemsize == 4 and isinstance(row._tokens, array)
    assert pickle.loads(pickle.dumps(row)) == row
    assert row != EncodedSample("r1", [5, 70000, 4], prompt_length=1, truncated=False)
    assert "input_ids=[5, 70000, 3]" in repr(row)


def test_token_cache_reads_back_the_same_rows_without_tokenising(tiny_tokenizer, tiny_samples, tmp_path, monkeypatch):
    import paser.selection.formatting as formatting

    monkeypatch.setattr(formatting, "_TOKEN_CACHE_GROUP_ROWS", 7)  # several row groups, the last one short

    first = formatting.encode_corpus_cached(
        tiny_samples, tiny_tokenizer, 40, tmp_path, overflow="skip", show_progress=False
    )
    assert first[1]  # some rows are skipped at 40 tokens: the counts must come back too

    def no_tokenising(*args, **kwargs):
        raise AssertionError("tokenised again")

    monkeypatch.setattr(formatting, "encode_corpus", no_tokenising)
    again = formatting.encode_corpus_cached(
        tiny_samples, tiny_tokenizer, 40, tmp_path, overflow="skip", show_progress=False
    )
    assert again == first
    import pyarrow.parquet as pq

    assert pq.ParquetFile(tmp_path / "tokens.parquet").metadata.num_row_groups == -(-len(first[0]) // 7)
    with pytest.raises(AssertionError, match="tokenised again"):  # another max_length is another key
        formatting.encode_corpus_cached(tiny_samples, tiny_tokenizer, 41, tmp_path, show_progress=False)
    changed = [dataclasses.replace(tiny_samples[0], response="changed"), *tiny_samples[1:]]
    with pytest.raises(AssertionError, match="tokenised again"):
        formatting.encode_corpus_cached(changed, tiny_tokenizer, 40, tmp_path, overflow="skip", show_progress=False)
