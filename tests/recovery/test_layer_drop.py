from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from paser.recovery.layer_drop import block_influence, drop_layers, layer_drop_prune
from paser.recovery.models import decoder_layers
from paser.recovery.prune import prune_model
from paser.recovery.pruners import PruneTarget, needs_calibration

IDENTITY_BLOCKS = [1, 4]


def _tiny_model(model_class: type, config_class: type, vocab_size: int, layers: int, **extra) -> torch.nn.Module:
    """A random `layers`-block model of width 32 over `vocab_size` tokens, `extra` config fields set."""
    config = config_class(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
        **extra,
    )
    model = model_class(config)
    # Larger than the default 0.02 init, so every block visibly turns its input (as trained blocks do).
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, 0.3)
    return model.eval()


@pytest.fixture
def six_layer_model(tiny_tokenizer) -> LlamaForCausalLM:
    """A random 6-block Llama whose blocks 1 and 4 return their input unchanged (o_proj and down_proj zero)."""
    model = _tiny_model(LlamaForCausalLM, LlamaConfig, len(tiny_tokenizer), 6)
    with torch.no_grad():
        for index in IDENTITY_BLOCKS:
            block = decoder_layers(model)[index]
            block.self_attn.o_proj.weight.zero_()
            block.mlp.down_proj.weight.zero_()
    return model


@pytest.fixture
def calibration(tiny_tokenizer) -> torch.Tensor:
    return torch.randint(0, len(tiny_tokenizer), (6, 16), generator=torch.Generator().manual_seed(0))


def test_identity_blocks_have_zero_influence_and_the_others_do_not(six_layer_model, calibration):
    influence = block_influence(six_layer_model, calibration, batch_size=4)
    assert len(influence) == 6
    for index, value in enumerate(influence):
        if index in IDENTITY_BLOCKS:
            assert value == pytest.approx(0.0, abs=1e-6)
        else:
            assert value > 1e-3


def test_block_influence_is_one_minus_the_mean_token_cosine(six_layer_model, calibration):
    influence = block_influence(six_layer_model, calibration, batch_size=4)
    with torch.no_grad():
        hidden = six_layer_model(calibration, output_hidden_states=True).hidden_states
    # hidden_states[i] enters block i; the last entry is after the final norm, so the last block is left out.
    for index in range(5):
        cosine = torch.nn.functional.cosine_similarity(hidden[index], hidden[index + 1], dim=-1)
        assert influence[index] == pytest.approx(1 - cosine.mean().item(), abs=1e-5)


def test_dropping_a_third_removes_exactly_the_identity_blocks(six_layer_model, calibration):
    kept_blocks = [block for index, block in enumerate(decoder_layers(six_layer_model)) if index not in IDENTITY_BLOCKS]
    record = layer_drop_prune(six_layer_model, PruneTarget(drop=2 / 6), calibration)
    assert record["dropped_layers"] == IDENTITY_BLOCKS
    assert (record["layers_before"], record["layers_after"]) == (6, 4)
    assert list(decoder_layers(six_layer_model)) == kept_blocks
    assert six_layer_model.config.num_hidden_layers == 4


def test_dropping_identity_blocks_leaves_the_logits_unchanged(six_layer_model, calibration):
    with torch.no_grad():
        before = six_layer_model(calibration).logits
        layer_drop_prune(six_layer_model, PruneTarget(drop=2 / 6), calibration)
        after = six_layer_model(calibration).logits
    torch.testing.assert_close(after, before)


def test_kept_attention_layers_are_renumbered_for_the_kv_cache(six_layer_model, calibration):
    drop_layers(six_layer_model, IDENTITY_BLOCKS)
    assert [block.self_attn.layer_idx for block in decoder_layers(six_layer_model)] == [0, 1, 2, 3]
    ids = calibration[:1]
    with torch.no_grad():
        full = six_layer_model(ids).logits[:, -1]
        cached = six_layer_model(ids[:, :-1], use_cache=True)
        assert len(cached.past_key_values.layers) == 4
        step = six_layer_model(ids[:, -1:], past_key_values=cached.past_key_values, use_cache=True).logits[:, -1]
    torch.testing.assert_close(step, full, rtol=1e-4, atol=1e-4)


def test_dropped_model_reloads_with_four_layers_and_the_same_logits(six_layer_model, calibration, tmp_path):
    layer_drop_prune(six_layer_model, PruneTarget(drop=2 / 6), calibration)
    six_layer_model.save_pretrained(tmp_path / "dropped")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "dropped").eval()
    assert reloaded.config.num_hidden_layers == 4
    assert len(decoder_layers(reloaded)) == 4
    with torch.no_grad():
        assert torch.equal(reloaded(calibration).logits, six_layer_model(calibration).logits)


def test_per_layer_config_lists_are_filtered_with_the_blocks(tiny_tokenizer, tmp_path):
    model = _tiny_model(
        Qwen2ForCausalLM,
        Qwen2Config,
        len(tiny_tokenizer),
        4,
        use_sliding_window=True,
        sliding_window=8,
        max_window_layers=2,
    )
    assert model.config.layer_types == ["full_attention"] * 2 + ["sliding_attention"] * 2
    drop_layers(model, [0])
    assert model.config.layer_types == ["full_attention", "sliding_attention", "sliding_attention"]
    model.save_pretrained(tmp_path / "dropped")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "dropped").eval()
    assert reloaded.config.layer_types == model.config.layer_types
    ids = torch.randint(0, len(tiny_tokenizer), (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, model(ids).logits)


def test_a_config_field_naming_layers_by_index_is_refused(six_layer_model):
    six_layer_model.config.mlp_only_layers = [2]
    with pytest.raises(ValueError, match="config.mlp_only_layers"):
        drop_layers(six_layer_model, [1])
    assert len(decoder_layers(six_layer_model)) == 6


@pytest.mark.parametrize(
    ("indices", "message"),
    [
        ([], "indices is empty"),
        ([1, 1], "repeat"),
        ([6], "out of range"),
        ([-1], "out of range"),
        ([0, 1, 2, 3, 4, 5], "all 6"),
    ],
)
def test_invalid_layer_indices_are_refused(six_layer_model, indices, message):
    with pytest.raises(ValueError, match=message):
        drop_layers(six_layer_model, indices)
    assert len(decoder_layers(six_layer_model)) == 6


@pytest.mark.parametrize("drop", [0.05, 0.95])
def test_fraction_rounding_to_no_layer_or_all_layers_is_refused(six_layer_model, calibration, drop):
    with pytest.raises(ValueError, match=f"fraction {drop} of 6 layers rounds to"):
        layer_drop_prune(six_layer_model, PruneTarget(drop=drop), calibration)


@pytest.mark.parametrize("drop", [None, 0.0, 1.0, -0.25])
def test_fraction_outside_the_open_interval_is_refused(six_layer_model, calibration, drop):
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\)"):
        layer_drop_prune(six_layer_model, SimpleNamespace(drop=drop), calibration)


def test_layer_drop_is_registered_and_needs_calibration(six_layer_model, calibration):
    assert needs_calibration("layer_drop")
    record = prune_model(six_layer_model, "layer_drop", PruneTarget(drop=2 / 6), calibration)
    assert record["dropped_layers"] == IDENTITY_BLOCKS
    assert record["options"] == {"batch_size": 4}
