"""LoRA SFT training tokens/s against forward-only tokens/s, same rows, same batches, same model (issue 19).

Draws `--rows` Alpaca rows (seeded, from the data directory's Alpaca-52K file), tokenises them with
`paser.recovery.train.load_training_rows` (the training path's own formatting) and builds the project's SFT trainer
(`paser.recovery.train.build_sft_trainer`: TRL `SFTTrainer`, the `TrainConfig` LoRA adapter, length-grouped
sampling) for exactly one epoch. Then, side by side:

- forward-only: the trainer's own padded batches (its dataloader) through the model with the adapter
  disabled, under `torch.no_grad` (one untimed warm-up batch first);
- training: `trainer.train()` over the same epoch, its `train_runtime` (no warm-up: the first step counts);
- training padding-free: the same epoch on a fresh copy of the model with `padding_free=True` (each batch's
  rows end to end in one sequence; TRL's collator, attention kept within a row by the position ids), and the
  largest relative difference of its logged losses from the padded run's;
- padding: the share of padding positions in the trainer's batches, and in batches of the same size drawn
  in a seeded random order (what `group_by_length=False` would build). transformers groups by length in
  mega-batches of min(50, rows / (4 * batch size)) batches, so a few dozen rows are barely sorted; the same
  two shares are also computed for `--padding-rows` further rows (lengths only, the trainer's own
  `get_length_grouped_indices`), the size of a study subset.

Tokens/s count real (non-padding) tokens, prompt and response. `recover()` itself is not called because it
also merges, re-masks and measures perplexity; the trainer it would train with is built by the same function.
The last line printed is `key=value` pairs: forward_tok_s, train_tok_s, ratio (train/forward), padding (the
trainer's batches), padding_random, threads and the settings.

    python bench/train_throughput.py --threads 1 --rows 64
    python bench/train_throughput.py --tiny --rows 32      # random small Llama: a quick check of the script
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import set_seed

# Run as a script from a checkout: make the repository's packages importable without installing them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paser.data.paths import data_file  # noqa: E402
from paser.recovery.config import TrainConfig  # noqa: E402
from paser.recovery.models import load_model, load_tokenizer  # noqa: E402
from paser.recovery.objectives.sft import build_sft_trainer  # noqa: E402
from paser.recovery.train import _trl_common_args, load_training_rows  # noqa: E402
from paser.selection.corpus import CorpusConfig, load_corpus  # noqa: E402

ALPACA_FILE = "recovery/alpaca_52k.jsonl.gz"


def tiny_llama(tokenizer) -> torch.nn.Module:
    """A randomly initialised two-layer Llama with the tokenizer's vocabulary (a check, not a measurement)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def padding_share(lengths: list[list[int]]) -> float:
    """Share of padding positions when each batch (a list of row lengths) is right-padded to its longest row."""
    real = sum(sum(batch) for batch in lengths)
    padded = sum(len(batch) * max(batch) for batch in lengths)
    return 1.0 - real / padded


def batch_lengths(lengths: list[int], order: list[int], batch_size: int) -> list[list[int]]:
    """Row lengths per batch when the rows are taken in `order`, `batch_size` at a time."""
    return [
        [lengths[index] for index in order[start : start + batch_size]] for start in range(0, len(order), batch_size)
    ]


def padding_shares(lengths: list[int], batch_size: int, seed: int) -> tuple[float, float]:
    """Padding share with the trainer's length-grouped order and with a seeded random order."""
    from transformers.trainer_pt_utils import get_length_grouped_indices

    generator = torch.Generator().manual_seed(seed)
    grouped = get_length_grouped_indices(lengths, batch_size, generator=generator)
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    return padding_share(batch_lengths(lengths, grouped, batch_size)), padding_share(
        batch_lengths(lengths, order, batch_size)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=64, help="Alpaca rows (one epoch of training)")
    parser.add_argument("--model", default="smollm2", help="model: alias, path or hub id")
    parser.add_argument("--tiny", action="store_true", help="a random two-layer Llama instead of --model")
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size, help="rows per step")
    parser.add_argument("--max-length", type=int, default=TrainConfig.max_length, help="tokens per row")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="weights and compute dtype")
    parser.add_argument("--padding-rows", type=int, default=2000, help="rows for the study-size padding shares")
    parser.add_argument("--seed", type=int, default=0, help="seed of the row draw and the training")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the study runs 1 per job)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    corpus = load_corpus(CorpusConfig(path=str(data_file(ALPACA_FILE))))
    samples = list(corpus.samples)
    random.Random(args.seed).shuffle(samples)
    if args.tiny:
        tokenizer = load_tokenizer(args.model)
        model = tiny_llama(tokenizer)
        model_name = "tiny random Llama (2 layers, hidden 64)"
    else:
        model, tokenizer = load_model(args.model, dtype=args.dtype, device="cpu")
        model_name = args.model
    config = TrainConfig(
        max_steps=-(-args.rows // args.batch_size),
        batch_size=args.batch_size,
        max_length=args.max_length,
        seed=args.seed,
        device="cpu",
        dtype=args.dtype,
        show_progress=False,
    )

    with tempfile.TemporaryDirectory() as scratch:
        rows_file = Path(scratch) / "rows.jsonl"
        with rows_file.open("w", encoding="utf-8") as stream:
            for sample in samples[: args.rows]:
                stream.write(json.dumps({**sample.raw, "id": sample.id}) + "\n")
        rows = load_training_rows(rows_file, tokenizer, config)
        study_file = Path(scratch) / "study_rows.jsonl"
        with study_file.open("w", encoding="utf-8") as stream:
            for sample in samples[args.rows : args.rows + args.padding_rows]:
                stream.write(json.dumps({**sample.raw, "id": sample.id}) + "\n")
        study_lengths = [row.length for row in load_training_rows(study_file, tokenizer, config).encoded]
        dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
        set_seed(args.seed)  # the LoRA adapter's initialisation: the same for both trainings
        trainer = build_sft_trainer(
            model, tokenizer, rows, config, _trl_common_args(config, Path(scratch), "cpu", dtype)
        )
        batches = list(trainer.get_train_dataloader())
        tokens = sum(int(batch["attention_mask"].sum()) for batch in batches)
        padded = sum(batch["attention_mask"].numel() for batch in batches)

        peft_model = trainer.model
        peft_model.eval()
        with torch.no_grad(), peft_model.disable_adapter():
            peft_model(input_ids=batches[0]["input_ids"], attention_mask=batches[0]["attention_mask"])
            forward_start = time.perf_counter()
            for batch in batches:
                peft_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            forward_seconds = time.perf_counter() - forward_start
        peft_model.train()

        output = trainer.train()
        train_seconds = output.metrics["train_runtime"]
        steps = trainer.state.global_step

        # The same epoch again on a fresh copy of the model, each batch's rows end to end (padding-free).
        if args.tiny:
            model = tiny_llama(tokenizer)
        else:
            model, _ = load_model(args.model, dtype=args.dtype, device="cpu")
        free_config = dataclasses.replace(
            config, objective_config=dataclasses.replace(config.objective_config, padding_free=True)
        )
        set_seed(args.seed)
        free_trainer = build_sft_trainer(
            model, tokenizer, rows, free_config, _trl_common_args(free_config, Path(scratch) / "free", "cpu", dtype)
        )
        list(free_trainer.get_train_dataloader())  # as for the padded run: the sampler's next epoch is the one trained
        free_seconds = free_trainer.train().metrics["train_runtime"]
        free_losses = [entry["loss"] for entry in free_trainer.state.log_history if "loss" in entry]
        padded_losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]

    order = list(range(len(rows.encoded)))
    random.Random(args.seed).shuffle(order)
    padding = 1.0 - tokens / padded
    padding_random = padding_share(batch_lengths([row.length for row in rows.encoded], order, args.batch_size))
    study_grouped, study_random = padding_shares(study_lengths, args.batch_size, args.seed)
    forward_tok_s = tokens / forward_seconds
    train_tok_s = tokens / train_seconds
    free_tok_s = tokens / free_seconds
    loss_gap = max(abs(a - b) / abs(b) for a, b in zip(free_losses, padded_losses, strict=True))
    trainable = sum(parameter.numel() for parameter in peft_model.parameters() if parameter.requires_grad)

    print(
        f"model: {model_name}, {args.dtype}, LoRA r={config.lora_r} on {config.target_modules} ({trainable} trainable)"
    )
    print(
        f"rows: {len(rows.encoded)} ({rows.truncated} truncated), {len(batches)} batches of {args.batch_size}, "
        f"{tokens} real tokens ({rows.token_counts()['response']} response), {padded} padded positions"
    )
    print("training path: recovery.train.build_sft_trainer (TRL SFTTrainer + peft LoRA), trainer.train(), 1 epoch")
    print(f"forward-only (adapter disabled, no grad): {forward_seconds:.1f} s, {forward_tok_s:.0f} tokens/s")
    print(
        f"training: {train_seconds:.1f} s, {steps} steps, {train_seconds / steps:.2f} s/step, "
        f"{train_tok_s:.0f} tokens/s"
    )
    print(
        f"training, padding-free (padding_free=True, fresh model): {free_seconds:.1f} s, {free_tok_s:.0f} tokens/s, "
        f"largest relative loss difference from padded over the {len(free_losses)} logged steps {loss_gap:.1e}"
    )
    print(
        f"padding share: {padding:.1%} in the trainer's batches (group_by_length={config.group_by_length}), "
        f"{padding_random:.1%} in seeded random batches"
    )
    print(
        f"padding share at {len(study_lengths)} rows: {study_grouped:.1%} length-grouped (the trainer's sampler), "
        f"{study_random:.1%} random"
    )
    print(f"wall: {time.perf_counter() - started:.0f} s, threads {torch.get_num_threads()}")
    print(
        f"forward_tok_s={forward_tok_s:.1f} train_tok_s={train_tok_s:.1f} ratio={train_tok_s / forward_tok_s:.3f} "
        f"train_padding_free_tok_s={free_tok_s:.1f} ratio_padding_free={free_tok_s / forward_tok_s:.3f} "
        f"padding={padding:.3f} padding_random={padding_random:.3f} "
        f"padding_study_grouped={study_grouped:.3f} padding_study_random={study_random:.3f} "
        f"threads={torch.get_num_threads()} "
        f"rows={len(rows.encoded)} batch_size={args.batch_size} dtype={args.dtype} tiny={args.tiny}"
    )


if __name__ == "__main__":
    main()
