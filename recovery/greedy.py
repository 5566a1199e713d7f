"""Batched greedy decoding, shared by DPO's rejected answers (`paser.recovery.rejections`) and the generation
tasks of `paser eval` (`paser.recovery.generation`).

Prompts arrive as token ids, are left-padded into a batch (every prompt ends at the last column, where decoding
continues) and decoded greedily: the argmax of the model's logits, with the model's own generation config set
aside so that a shipped sampling setting, repetition penalty or suppressed token cannot change the answer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """EOS ids from the model's generation config and the tokenizer, sorted (chat models often end turns on
    another token than the tokenizer's EOS). Refuses (ValueError) a model and tokenizer with none."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    candidates = configured if isinstance(configured, list) else [configured]
    eos_ids = sorted({int(token) for token in [*candidates, tokenizer.eos_token_id] if token is not None})
    if not eos_ids:
        raise ValueError("neither the tokenizer nor the model's generation config has an eos token id")
    return eos_ids


@contextlib.contextmanager
def greedy_decoding(model: Any, eos_ids: list[int], pad_token_id: int) -> Iterator[None]:
    """Put the model in eval mode, inference mode and a bare greedy generation config; restore both after.

    `generate` merges the model's own generation config into every call, so a shipped config's sampling,
    repetition penalty or suppressed tokens would change the answer; for the call it sees only what greedy
    decoding needs.
    """
    from transformers import GenerationConfig

    saved_config, was_training = model.generation_config, model.training
    model.generation_config = GenerationConfig(
        do_sample=False,
        num_beams=1,
        eos_token_id=eos_ids,
        pad_token_id=pad_token_id,
        bos_token_id=getattr(saved_config, "bos_token_id", None),
    )
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.generation_config = saved_config
        model.train(was_training)


def generate_batch(
    model: Any, batch: Sequence[list[int]], pad_token_id: int, eos_ids: list[int], max_new_tokens: int
) -> list[tuple[list[int], bool]]:
    """Greedy continuations of left-padded prompts (call inside `greedy_decoding`): per row, `(tokens before
    EOS, EOS seen)`; a row without EOS has exactly `max_new_tokens` tokens."""
    width = max(len(prompt_ids) for prompt_ids in batch)
    input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, prompt_ids in enumerate(batch):
        # Left padding: every prompt ends at the last column, where generation continues.
        input_ids[row, width - len(prompt_ids) :] = torch.tensor(prompt_ids, dtype=torch.long)
        attention_mask[row, width - len(prompt_ids) :] = 1
    output = model.generate(
        input_ids=input_ids.to(model.device),
        attention_mask=attention_mask.to(model.device),
        max_new_tokens=max_new_tokens,
    )
    results = []
    for generated in output[:, width:].tolist():
        end = next((position for position, token in enumerate(generated) if token in eos_ids), None)
        results.append((generated, False) if end is None else (generated[:end], True))
    return results
