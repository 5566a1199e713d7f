"""Shared test fixtures: a tiny offline tokenizer, tiny random Llama models, and samples.

Everything is built in-process (no hub access) and seeded, once per test session.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from paser.selection.corpus import Sample

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]
_SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ne",
    "ru",
    "ta",
    "shi",
    "po",
    "ven",
    "dar",
    "el",
    "os",
    "qu",
    "ix",
    "bel",
    "tor",
]
_COMMON = ["the", "a", "of", "to", "and", "in", "is", "it", "that", "for", "on", "with", "as", "by", "this"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long-running test, skipped unless --runslow is given")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow test: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture
def single_torch_thread():
    """Run a test with one torch CPU thread: tiny models are slower with two threads on a busy machine
    (OpenMP threads wait for each other), and the result does not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _words(rng: random.Random, count: int) -> list[str]:
    """English-ish words: common function words and made-up syllable words."""
    words = []
    for _ in range(count):
        if rng.random() < 0.4:
            words.append(rng.choice(_COMMON))
        else:
            words.append("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 3))))
    return words


def _sentence(rng: random.Random, count: int) -> str:
    words = _words(rng, count)
    return " ".join(words).capitalize() + rng.choice([".", "?", "!"])


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-level BPE tokenizer (vocab 512) with bos/eos/pad/unk and a ChatML chat template, saved."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    training_text = [_sentence(rng, rng.randint(3, 15)) for _ in range(400)]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(training_text, trainer=trainer)
    # The usual specials for plain text: BOS first (as Llama tokenizers add it).
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    fast.chat_template = CHATML_TEMPLATE
    directory = tmp_path_factory.mktemp("tiny_tokenizer")
    fast.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


def _tiny_llama(tokenizer) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    # Random init (std 0.02) gives near-uniform predictions; larger weights give peaked, model-like ones.
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, 0.3)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer) -> Path:
    """A seeded random 2-layer Llama over the tiny tokenizer's vocabulary, saved with the tokenizer."""
    directory = tmp_path_factory.mktemp("tiny_model")
    _tiny_llama(tiny_tokenizer).save_pretrained(directory)
    tiny_tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture
def tiny_model(tiny_model_dir: Path, single_torch_thread) -> torch.nn.Module:
    """A fresh fp32 copy of the tiny model per test (pruning and training change it in place), in eval mode."""
    from paser.recovery.models import load_model

    model, _ = load_model(str(tiny_model_dir), dtype="fp32", device="cpu")
    return model


@pytest.fixture(scope="session")
def perturbed_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer) -> Path:
    """The tiny model plus seeded Gaussian noise on every weight (so predictions differ), same tokenizer."""
    model = _tiny_llama(tiny_tokenizer)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.1 * parameter.std())
    directory = tmp_path_factory.mktemp("perturbed_model")
    model.save_pretrained(directory)
    tiny_tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_samples() -> list[Sample]:
    """40 samples of varied lengths: every third has an input, every fifth has earlier chat turns."""
    rng = random.Random(1)
    samples = []
    for index in range(40):
        context: tuple[tuple[str, str], ...] = ()
        if index % 5 == 0:
            context = (
                ("system", _sentence(rng, 6)),
                ("user", _sentence(rng, rng.randint(3, 10))),
                ("assistant", _sentence(rng, rng.randint(3, 10))),
            )
        samples.append(
            Sample(
                id=f"tiny-{index:03d}",
                instruction=_sentence(rng, rng.randint(3, 12)),
                input=_sentence(rng, rng.randint(2, 20)) if index % 3 == 0 else "",
                response=" ".join(_sentence(rng, rng.randint(2, 12)) for _ in range(rng.randint(1, 4))),
                context=context,
                source_index=index,
            )
        )
    return samples


@pytest.fixture
def truncated_model_dir(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """A copy of the tiny model whose model.safetensors lost its second half (a download or copy cut short)."""
    import shutil

    directory = tmp_path / "truncated_model"
    shutil.copytree(tiny_model_dir, directory)
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return directory
