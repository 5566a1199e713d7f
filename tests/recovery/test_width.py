import json
import math

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from paser.pipelines.cli import main
from paser.recovery.config import PruneSpec
from paser.recovery.models import decoder_layers
from paser.recovery.prune import prune_checkpoint, prune_model
from paser.recovery.pruners import PruneTarget
from paser.recovery.sparsity import mask_policy
from paser.recovery.width import BlockShape, group_heads, head_channels, shrink_attention, shrink_mlp
from paser.selection.config import DegradationConfig
from paser.selection.degradation import score_degradation
from paser.selection.formatting import encode_corpus

pytestmark = pytest.mark.usefixtures("single_torch_thread")

HEAD_DIM = 4
HEADS_PER_GROUP = 2


def _tiny(model_class: type, config_class: type, vocab_size: int, layers: int = 3) -> torch.nn.Module:
    """A random model of width 32: 8 query heads of dim 4 in 4 KV groups, 64 MLP channels."""
    config = config_class(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = model_class(config)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, 0.3)
            else:  # norms and biases (Qwen2's q/k/v) away from their constant init
                parameter.add_(0.1 * torch.randn_like(parameter))
    return model.eval()


@pytest.fixture
def llama(tiny_tokenizer) -> LlamaForCausalLM:
    return _tiny(LlamaForCausalLM, LlamaConfig, len(tiny_tokenizer))


@pytest.fixture
def calibration(tiny_tokenizer) -> torch.Tensor:
    return torch.randint(0, len(tiny_tokenizer), (6, 16), generator=torch.Generator().manual_seed(0))


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


def test_every_block_and_the_config_take_the_narrowed_shape(llama, calibration):
    record = prune_model(llama, "width", PruneTarget(ratio=0.5), calibration)
    for block in decoder_layers(llama):
        attention, mlp = block.self_attn, block.mlp
        assert attention.q_proj.weight.shape == (4 * HEAD_DIM, 32)
        assert attention.k_proj.weight.shape == attention.v_proj.weight.shape == (2 * HEAD_DIM, 32)
        assert attention.o_proj.weight.shape == (32, 4 * HEAD_DIM)
        assert mlp.gate_proj.weight.shape == mlp.up_proj.weight.shape == (32, 32)
        assert mlp.down_proj.weight.shape == (32, 32)
    config = llama.config
    assert (config.intermediate_size, config.num_attention_heads, config.num_key_value_heads) == (32, 4, 2)
    assert config.head_dim == HEAD_DIM
    assert record["intermediate_size"] == {"before": 64, "after": 32}
    assert record["num_attention_heads"] == {"before": 8, "after": 4}
    assert record["num_key_value_heads"] == {"before": 4, "after": 2}
    assert record["mlp_channels_removed_fraction"] == record["attention_heads_removed_fraction"] == 0.5
    assert _logits(llama, calibration).shape == (6, 16, config.vocab_size)


def test_query_heads_stay_with_their_kv_group(llama, calibration):
    original = {name: parameter.clone() for name, parameter in llama.named_parameters()}
    record = prune_model(llama, "width", PruneTarget(ratio=0.5), calibration, importance="random", random_seed=3)
    for kept, block in zip(record["per_layer_kept"], decoder_layers(llama), strict=True):
        groups = torch.tensor(kept["kv_groups"])
        heads = group_heads(groups, HEADS_PER_GROUP)
        assert kept["attention_heads"] == heads.tolist()
        prefix = f"model.layers.{kept['layer']}.self_attn"
        query_rows, key_value_rows = head_channels(heads, HEAD_DIM), head_channels(groups, HEAD_DIM)
        attention = block.self_attn
        assert torch.equal(attention.q_proj.weight, original[f"{prefix}.q_proj.weight"][query_rows])
        assert torch.equal(attention.k_proj.weight, original[f"{prefix}.k_proj.weight"][key_value_rows])
        assert torch.equal(attention.v_proj.weight, original[f"{prefix}.v_proj.weight"][key_value_rows])
        assert torch.equal(attention.o_proj.weight, original[f"{prefix}.o_proj.weight"][:, query_rows])


def test_query_heads_of_a_group_are_its_repeat_kv_heads():
    assert group_heads(torch.tensor([0, 2]), 3).tolist() == [0, 1, 2, 6, 7, 8]
    assert head_channels(torch.tensor([1, 3]), 2).tolist() == [2, 3, 6, 7]


@pytest.mark.parametrize("importance", ["activation", "taylor"])
def test_dead_channels_and_groups_are_the_ones_removed(llama, calibration, importance):
    """Planted: per block, a different half of the MLP channels and KV groups writes nothing to the output."""
    dead_channels, dead_groups = {}, {}
    with torch.no_grad():
        for index, block in enumerate(decoder_layers(llama)):
            channels = torch.randperm(64, generator=torch.Generator().manual_seed(index))[:32]
            groups = torch.tensor([index % 4, (index + 1) % 4])
            block.mlp.down_proj.weight[:, channels] = 0
            block.self_attn.o_proj.weight[:, head_channels(group_heads(groups, HEADS_PER_GROUP), HEAD_DIM)] = 0
            dead_channels[index], dead_groups[index] = set(channels.tolist()), set(groups.tolist())
    before = _logits(llama, calibration)
    record = prune_model(llama, "width", PruneTarget(ratio=0.5), calibration, importance=importance)
    for kept in record["per_layer_kept"]:
        assert set(kept["mlp_channels"]) == set(range(64)) - dead_channels[kept["layer"]]
        assert set(kept["kv_groups"]) == set(range(4)) - dead_groups[kept["layer"]]
    # the same function, summed over fewer inner channels: float32 rounding differs by the matmul's blocking, which
    # depends on the CPU's kernels (3.7e-5 seen on an AMX machine), so the tolerance is float32 summation's, not 1e-5
    torch.testing.assert_close(_logits(llama, calibration), before, rtol=1e-4, atol=1e-4)


def test_random_importance_is_seeded(tiny_tokenizer, calibration):
    def kept(seed: int) -> list:
        model = _tiny(LlamaForCausalLM, LlamaConfig, len(tiny_tokenizer))
        target = PruneTarget(ratio=0.5)
        return prune_model(model, "width", target, calibration, importance="random", random_seed=seed)["per_layer_kept"]

    assert kept(1) == kept(1)
    assert kept(1) != kept(2)


@pytest.mark.parametrize(
    ("model_class", "config_class"),
    [(LlamaForCausalLM, LlamaConfig), (MistralForCausalLM, MistralConfig), (Qwen2ForCausalLM, Qwen2Config)],
)
def test_pruned_model_reloads_with_from_pretrained(tiny_tokenizer, calibration, tmp_path, model_class, config_class):
    model = _tiny(model_class, config_class, len(tiny_tokenizer))
    prune_model(model, "width", PruneTarget(ratio=0.5), calibration)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert type(reloaded) is model_class and reloaded.config.head_dim == HEAD_DIM
    torch.testing.assert_close(_logits(reloaded, calibration), _logits(model, calibration))
    assert reloaded.generate(calibration[:1, :4], max_new_tokens=5, do_sample=False).shape == (1, 9)


def test_qwen2_query_key_value_biases_follow_their_heads(tiny_tokenizer, calibration):
    model = _tiny(Qwen2ForCausalLM, Qwen2Config, len(tiny_tokenizer))
    biases = {name: parameter.clone() for name, parameter in model.named_parameters() if name.endswith("bias")}
    record = prune_model(model, "width", PruneTarget(ratio=0.5), calibration)
    kept = record["per_layer_kept"][1]
    rows = {
        "q_proj": head_channels(torch.tensor(kept["attention_heads"]), HEAD_DIM),
        "k_proj": head_channels(torch.tensor(kept["kv_groups"]), HEAD_DIM),
    }
    attention = decoder_layers(model)[1].self_attn
    for name, kept_rows in rows.items():
        original = biases[f"model.layers.1.self_attn.{name}.bias"]
        assert torch.equal(getattr(attention, name).bias, original[kept_rows])
    assert attention.o_proj.bias is None


@pytest.fixture(scope="module")
def width_checkpoint(tiny_model_dir, tmp_path_factory):
    """The tiny model width-pruned to 0.5 by `prune_checkpoint` on demo calibration: (folder, record)."""
    out = tmp_path_factory.mktemp("width") / "width-50"
    target = PruneTarget(ratio=0.5)
    record = prune_checkpoint(
        str(tiny_model_dir),
        "width",
        target,
        out,
        calibration_source="demo",
        calibration_samples=4,
        calibration_seqlen=16,
    )
    return out, record


def test_checkpoint_holds_what_pruning_json_says(tiny_model_dir, width_checkpoint):
    out, record = width_checkpoint
    written = json.loads((out / "pruning.json").read_text())
    assert written["target"] == {"ratio": 0.5, "fraction_pruned": 0.5, "label": "width 50%"}
    assert written["calibration"]["source"] == "demo" and written["calibration"]["text_sha256"]
    assert written["options"]["importance"] == "activation"
    assert written["parameters_after"] < written["parameters_before"]
    decoder_share = written["decoder_parameters_after"] / written["decoder_parameters_before"]
    assert decoder_share == pytest.approx(1 - written["decoder_parameters_removed_fraction"])
    assert decoder_share == pytest.approx(0.5, abs=0.01)  # norms are kept whole
    # The original narrowed by hand to the recorded channels and groups is the saved checkpoint.
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    shape = BlockShape.of(original.config)
    for kept, block in zip(record["per_layer_kept"], decoder_layers(original), strict=True):
        shrink_mlp(block.mlp, torch.tensor(kept["mlp_channels"]))
        shrink_attention(block.self_attn, torch.tensor(kept["kv_groups"]), shape)
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = torch.arange(1, 17)[None]
    torch.testing.assert_close(_logits(reloaded, ids), _logits(original, ids))


def test_models_outside_the_llama_family_are_refused(calibration):
    model = GPT2LMHeadModel(GPT2Config(vocab_size=600, n_embd=32, n_layer=2, n_head=4, n_positions=64)).eval()
    with pytest.raises(ValueError, match=r"supports Llama-family models \(llama, mistral, qwen2\); .* 'gpt2'"):
        prune_model(model, "width", PruneTarget(ratio=0.5), calibration)


def test_keeping_the_first_and_last_blocks_whole_is_refused_with_the_reason(llama, calibration):
    with pytest.raises(ValueError, match="one intermediate_size and one head count for every block"):
        prune_model(llama, "width", PruneTarget(ratio=0.5), calibration, keep_first_last=True)


@pytest.mark.parametrize(
    ("ratio", "message"), [(0.001, "removes nothing"), (0.95, "removes every MLP channel .* or every KV group")]
)
def test_a_ratio_that_removes_nothing_or_everything_is_refused(llama, calibration, ratio, message):
    with pytest.raises(ValueError, match=message):
        prune_model(llama, "width", PruneTarget(ratio=ratio), calibration)
    assert llama.config.intermediate_size == 64


def test_a_ratio_too_small_for_one_kv_group_prunes_mlp_channels_only(llama, calibration):
    record = prune_model(llama, "width", PruneTarget(ratio=0.1), calibration)
    assert record["intermediate_size"]["after"] == 58 and record["num_key_value_heads"]["after"] == 4


def test_targets_and_options_of_other_methods_are_refused(llama, calibration):
    with pytest.raises(ValueError, match="width pruning takes a ratio .* not sparsity"):
        prune_model(llama, "width", PruneTarget(sparsity=0.5), calibration)
    with pytest.raises(ValueError, match="method 'wanda' prunes weights: .* not ratio"):
        prune_model(llama, "wanda", PruneTarget(ratio=0.5), calibration)
    with pytest.raises(ValueError, match="unknown width importance 'fisher'; known: activation, taylor, random"):
        prune_model(llama, "width", PruneTarget(ratio=0.5), calibration, importance="fisher")
    with pytest.raises(ValueError, match="method 'wanda' takes no option importance; its options: batch_size, device"):
        prune_model(llama, "wanda", PruneTarget(sparsity=0.5), calibration, importance="taylor")


def test_ratio_target_describes_itself():
    target = PruneTarget.from_args(ratio=0.2)
    assert (target.kind, target.fraction_pruned, target.describe()) == ("ratio", 0.2, "width 20%")
    with pytest.raises(ValueError, match="ratio must be in \\(0, 1\\), got 1.2"):
        PruneTarget(ratio=1.2)


def test_degradation_scoring_compares_models_of_different_widths(tiny_model_dir, tiny_samples, tiny_tokenizer):
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    narrow = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    calibration = torch.randint(0, len(tiny_tokenizer), (4, 16), generator=torch.Generator().manual_seed(0))
    prune_model(narrow, "width", PruneTarget(ratio=0.5), calibration)
    encoded = encode_corpus(tiny_samples[:8], tiny_tokenizer, max_length=128, show_progress=False)[0]
    scores = score_degradation(original, narrow, encoded, DegradationConfig(show_progress=False))
    assert ((scores["cds"] > 0) & (scores["cds"] <= math.log(2))).all()
    assert (scores["nll_pruned"] != scores["nll_original"]).all()


def test_recovery_merges_a_width_pruned_model_without_a_mask(width_checkpoint):
    out, _ = width_checkpoint
    model = AutoModelForCausalLM.from_pretrained(out)
    assert mask_policy(out, model) == (False, "width-pruned: dense, merged as is")


def test_prune_command_narrows_a_model(tiny_model_dir, tmp_path, capsys):
    args = ["prune", "--model", str(tiny_model_dir), "--method", "width", "--ratio", "0.5", "--importance", "taylor"]
    args += ["--calibration", "demo", "--calibration-samples", "2", "--seqlen", "16", "--out", str(tmp_path)]
    assert main(args) == 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["intermediate_size"], config["num_attention_heads"], config["head_dim"]) == (48, 2, 12)
    assert json.loads((tmp_path / "pruning.json").read_text())["options"]["importance"] == "taylor"
    assert "MLP channels 96 -> 48, attention heads 4 -> 2 per block" in capsys.readouterr().out


def test_a_width_prune_spec_targets_its_ratio():
    spec = PruneSpec(method="width", ratio=0.2, calibration="demo")
    assert spec.target() == PruneTarget(ratio=0.2)
