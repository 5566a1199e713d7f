"""Fixtures shared by the scoring tests (exact and top-k): the tiny model pair, loaded once per module, and the
tiny samples encoded."""

from __future__ import annotations

import pytest
import torch

from paser.selection.formatting import EncodedSample, encode_corpus


@pytest.fixture(scope="module")
def original(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)


@pytest.fixture(scope="module")
def perturbed(perturbed_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(perturbed_model_dir, dtype=torch.float32)


@pytest.fixture(scope="module")
def encoded(tiny_samples, tiny_tokenizer) -> list[EncodedSample]:
    return encode_corpus(tiny_samples, tiny_tokenizer, max_length=256, show_progress=False)[0]
