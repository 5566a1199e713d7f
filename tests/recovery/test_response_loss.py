"""The chunked response loss of sft and distill equals that of the full logits, value and LoRA gradients, in fp32;
distillation's temperature softens the KL as GKD's does, times its square."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as functional

from paser.recovery.objectives.response_loss import (
    causal_lm_of,
    check_plain_head,
    response_hidden_states,
    response_totals,
)
from paser.recovery.objectives.sft import build_sft_trainer
from paser.recovery.train import _trl_common_args, load_training_rows
from tests.recovery.tiny_training import fast_config


def _lora(model):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear"))
    # LoRA's B starts at zero, which leaves A without gradient; random B makes both matter.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return peft_model


def _batch(vocab_size: int) -> dict[str, torch.Tensor]:
    """Three right-padded rows: prompts of 3, 5 and 2 tokens, responses of 6, 2 and 9 (the last row the longest)."""
    generator = torch.Generator().manual_seed(1)
    lengths, prompts = [9, 7, 11], [3, 5, 2]
    input_ids = torch.randint(3, vocab_size, (3, 11), generator=generator)
    attention_mask = torch.zeros(3, 11, dtype=torch.long)
    labels = torch.full((3, 11), -100)
    for row, (length, prompt) in enumerate(zip(lengths, prompts, strict=True)):
        attention_mask[row, :length] = 1
        labels[row, prompt:length] = input_ids[row, prompt:length]
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _full_logits(model, batch):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return logits[:, :-1].float(), batch["labels"][:, 1:]


def _lora_gradients(model, loss) -> dict[str, torch.Tensor]:
    model.zero_grad()
    loss.backward()
    return {name: parameter.grad.clone() for name, parameter in model.named_parameters() if "lora_" in name}


def _chunked(model, batch, chunk, teacher=None, temperature=1.0):
    causal_lm = causal_lm_of(model)
    hidden, targets = response_hidden_states(causal_lm, batch)
    teacher_head = teacher_hidden = None
    if teacher is not None:
        with torch.no_grad():
            teacher_hidden = response_hidden_states(teacher, batch)[0]
        teacher_head = teacher.get_output_embeddings()
    return response_totals(
        causal_lm.get_output_embeddings(),
        hidden,
        targets,
        position_chunk=chunk,
        teacher_head=teacher_head,
        teacher_hidden=teacher_hidden,
        temperature=temperature,
    )


def _assert_close(chunked: dict[str, torch.Tensor], full: dict[str, torch.Tensor]) -> None:
    assert chunked.keys() == full.keys() and full
    for name in full:
        torch.testing.assert_close(chunked[name], full[name], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk", [1, 4, 1000])
def test_the_chunked_nll_and_its_lora_gradients_equal_those_of_the_full_logits(tiny_model, chunk):
    model = _lora(tiny_model)
    batch = _batch(tiny_model.config.vocab_size)
    logits, labels = _full_logits(model, batch)
    full_loss = functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100)
    full_gradients = _lora_gradients(model, full_loss)

    totals = _chunked(model, batch, chunk)
    chunked_loss = totals.nll / totals.tokens
    torch.testing.assert_close(chunked_loss.detach(), full_loss.detach(), atol=1e-5, rtol=1e-5)
    _assert_close(_lora_gradients(model, chunked_loss), full_gradients)
    assert int(totals.tokens) == int((labels != -100).sum())


def test_the_chunked_kl_and_nll_equal_gkd_forward_kl_plus_cross_entropy_on_the_full_logits(
    tiny_model, perturbed_model_dir
):
    from transformers import AutoModelForCausalLM
    from trl.experimental.gkd import GKDTrainer

    teacher = AutoModelForCausalLM.from_pretrained(perturbed_model_dir, dtype=torch.float32).eval()
    model = _lora(tiny_model)
    batch = _batch(tiny_model.config.vocab_size)
    logits, labels = _full_logits(model, batch)
    with torch.no_grad():
        teacher_logits, _ = _full_logits(teacher, batch)
    kl = GKDTrainer.generalized_jsd_loss(logits, teacher_logits, labels=labels, beta=0.0)
    full_loss = kl + 0.5 * functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100)
    full_gradients = _lora_gradients(model, full_loss)

    totals = _chunked(model, batch, 4, teacher=teacher)
    chunked_loss = (totals.kl + 0.5 * totals.nll) / totals.tokens
    assert float(totals.kl.detach()) > 0
    torch.testing.assert_close(chunked_loss.detach(), full_loss.detach(), atol=1e-5, rtol=1e-5)
    _assert_close(_lora_gradients(model, chunked_loss), full_gradients)


def _teacher(perturbed_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(perturbed_model_dir, dtype=torch.float32).eval()


def test_the_kl_at_temperature_1_is_exactly_the_forward_kl_of_the_plain_distributions(tiny_model, perturbed_model_dir):
    teacher = _teacher(perturbed_model_dir)
    batch = _batch(tiny_model.config.vocab_size)
    with torch.no_grad():
        totals = _chunked(tiny_model, batch, 1000, teacher=teacher, temperature=1.0)
        hidden, _ = response_hidden_states(tiny_model, batch)
        student = tiny_model.get_output_embeddings()(hidden).float().log_softmax(-1)
        teacher_hidden, _ = response_hidden_states(teacher, batch)
        teacher_log_probs = teacher.get_output_embeddings()(teacher_hidden).float().log_softmax(-1)
    # What the loss computed before the temperature existed, operation for operation: equal to the bit.
    assert torch.equal(totals.kl, functional.kl_div(student, teacher_log_probs, reduction="sum", log_target=True))


def test_the_kl_at_another_temperature_is_gkd_softened_kl_times_its_square_and_the_nll_stays(
    tiny_model, perturbed_model_dir
):
    from trl.experimental.gkd import GKDTrainer

    teacher = _teacher(perturbed_model_dir)
    batch = _batch(tiny_model.config.vocab_size)
    with torch.no_grad():
        logits, labels = _full_logits(tiny_model, batch)
        teacher_logits, _ = _full_logits(teacher, batch)
        plain = _chunked(tiny_model, batch, 4, teacher=teacher)
        softened = _chunked(tiny_model, batch, 4, teacher=teacher, temperature=2.0)
    # GKD's loss divides both logits by the temperature and averages over the response tokens, without the T².
    gkd = GKDTrainer.generalized_jsd_loss(logits, teacher_logits, labels=labels, beta=0.0, temperature=2.0)
    torch.testing.assert_close(softened.kl / 4.0 / softened.tokens, gkd, atol=1e-6, rtol=1e-5)
    assert abs(float(softened.kl) - float(plain.kl)) > 1e-3
    torch.testing.assert_close(softened.nll, plain.nll)


def test_a_temperature_not_above_zero_is_refused(tiny_model):
    hidden = torch.zeros(2, tiny_model.config.hidden_size)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        response_totals(
            tiny_model.get_output_embeddings(),
            hidden,
            torch.zeros(2, dtype=torch.long),
            position_chunk=4,
            temperature=0.0,
        )


def test_the_distill_trainer_takes_its_temperature_from_the_objective_config(
    tiny_model, tiny_tokenizer, perturbed_model_dir, subset_file, tmp_path
):
    from paser.recovery.objectives.distill import build_distill_trainer

    teacher = _teacher(perturbed_model_dir)
    losses = {}
    for temperature in (1.0, 2.0):
        config = fast_config(objective="distill", lora_dropout=0.0, group_by_length=False, temperature=temperature)
        rows = load_training_rows(subset_file, tiny_tokenizer, config)
        common = _trl_common_args(config, tmp_path, "cpu", torch.float32)
        trainer = build_distill_trainer(tiny_model, teacher, tiny_tokenizer, rows, config, common)
        assert trainer.kl_temperature == temperature
        batch = next(iter(trainer.get_train_dataloader()))
        with torch.no_grad():
            losses[temperature] = float(trainer.compute_loss(trainer.model, batch))
        tiny_model = trainer.model.unload()
    assert losses[1.0] != pytest.approx(losses[2.0])


def test_accuracy_and_entropy_are_those_of_the_full_logits(tiny_model):
    batch = _batch(tiny_model.config.vocab_size)
    with torch.no_grad():
        logits, labels = _full_logits(tiny_model, batch)
        totals = _chunked(tiny_model, batch, 4)
    response = labels != -100
    log_probs = logits[response].log_softmax(-1)
    assert int(totals.correct) == int((logits[response].argmax(-1) == labels[response]).sum())
    expected_entropy = -(log_probs.exp() * log_probs).sum()
    torch.testing.assert_close(totals.entropy, expected_entropy, atol=1e-4, rtol=1e-5)


def test_a_batch_without_response_tokens_gives_a_zero_loss_that_backpropagates(tiny_model):
    model = _lora(tiny_model)
    batch = _batch(tiny_model.config.vocab_size)
    batch["labels"].fill_(-100)
    totals = _chunked(model, batch, 4)
    assert float(totals.nll.detach()) == 0.0 and int(totals.tokens) == 0
    totals.nll.backward()


def test_the_sft_trainer_loss_is_the_mean_response_cross_entropy_of_its_batch(
    tiny_model, tiny_tokenizer, subset_file, tmp_path
):
    config = fast_config(lora_dropout=0.0, position_chunk=7)
    rows = load_training_rows(subset_file, tiny_tokenizer, config)
    common = _trl_common_args(config, tmp_path, "cpu", torch.float32)
    trainer = build_sft_trainer(tiny_model, tiny_tokenizer, rows, config, common)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    with torch.no_grad():
        logits, labels = _full_logits(trainer.model, batch)
    expected = functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100)
    torch.testing.assert_close(loss.detach(), expected, atol=1e-5, rtol=1e-5)
    # Normalised by the Trainer's token count when it passes one (gradient accumulation over several batches).
    twice = trainer.compute_loss(trainer.model, batch, num_items_in_batch=2 * int((labels != -100).sum()))
    torch.testing.assert_close(twice.detach(), expected / 2, atol=1e-5, rtol=1e-5)
    real = int(batch["attention_mask"].sum())
    assert trainer.forwarded == {
        "trained": 2 * real,
        "padding": 2 * (batch["input_ids"].numel() - real),
        "loss_tokens": 2 * int((labels != -100).sum()),
        "teacher_forward": 0,
    }


def test_a_model_that_scales_its_logits_is_refused(tiny_model):
    tiny_model.config.logit_scale = 0.5
    with pytest.raises(ValueError, match="logit_scale"):
        check_plain_head(tiny_model)
