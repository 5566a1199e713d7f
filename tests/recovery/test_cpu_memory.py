"""Returning freed memory after each decoder block (recovery/cpu_memory.py): when it trims, and that it leaves
nothing behind."""

import pytest
import torch

from paser.recovery import cpu_memory
from paser.recovery.cpu_memory import decoder_blocks, trim_after_each_block


def test_a_llama_has_one_block_per_decoder_layer(tiny_model):
    assert decoder_blocks(tiny_model) == list(tiny_model.model.layers)


def test_blocks_trim_after_their_forward_and_before_their_backward_only_inside_the_block(tiny_model, monkeypatch):
    calls = []
    monkeypatch.setattr(cpu_memory, "malloc_trim", lambda: calls.append)
    tiny_model.train()
    ids = torch.tensor([[3, 4, 5, 6]])
    with trim_after_each_block([tiny_model, None]) as hooked:
        tiny_model(input_ids=ids).logits.sum().backward()
    layers = len(tiny_model.model.layers)
    assert hooked == layers and len(calls) == 2 * layers
    tiny_model(input_ids=ids)
    assert len(calls) == 2 * layers, "the hooks outlived the block"


def test_without_malloc_trim_nothing_is_hooked(tiny_model, monkeypatch):
    monkeypatch.setattr(cpu_memory, "malloc_trim", lambda: None)
    with trim_after_each_block([tiny_model]) as hooked:
        tiny_model(input_ids=torch.tensor([[3, 4]]))
    assert hooked == 0


@pytest.mark.skipif(cpu_memory.malloc_trim() is None, reason="no glibc malloc_trim here")
def test_glibc_malloc_trim_is_found_and_callable():
    assert cpu_memory.malloc_trim()(0) in (0, 1)
