import pytest
import torch

from paser.recovery.models import decoder_layers
from paser.recovery.prune import magnitude_prune_layer
from paser.recovery.pruners import PruneTarget
from paser.recovery.sequential import prune_sequentially


class TokenCount:
    def __init__(self) -> None:
        self.tokens = 0

    def add_batch(self, inputs: torch.Tensor) -> None:
        self.tokens += inputs.reshape(-1, inputs.shape[-1]).shape[0]


@pytest.fixture
def calibration(tiny_tokenizer):
    generator = torch.Generator().manual_seed(0)
    return torch.randint(10, len(tiny_tokenizer), (5, 12), generator=generator)


def last_block_output(model: torch.nn.Module, calibration: torch.Tensor) -> torch.Tensor:
    """What the model's last decoder block outputs in one plain forward (before the final norm)."""
    caught = {}
    handle = decoder_layers(model)[-1].register_forward_hook(lambda m, a, output: caught.update(output=output))
    with torch.no_grad():
        model(calibration, use_cache=False)
    handle.remove()
    return caught["output"]


def test_engine_with_a_no_op_callback_reproduces_the_models_hidden_states(tiny_model, calibration):
    # 5 windows in batches of 2: the last batch is smaller, so its block arguments are caught separately.
    final = prune_sequentially(tiny_model, calibration, lambda layer: TokenCount(), lambda layers: None, batch_size=2)
    assert torch.allclose(final, last_block_output(tiny_model, calibration), atol=1e-5)


def test_each_block_sees_the_outputs_of_the_already_pruned_blocks(tiny_model, calibration):
    def prune_block(layers):
        for layer, _ in layers.values():
            magnitude_prune_layer(layer, PruneTarget(sparsity=0.5))

    final = prune_sequentially(tiny_model, calibration, lambda layer: TokenCount(), prune_block, batch_size=3)
    # The engine's outputs are those of the fully pruned model, not of a dense model with one pruned block.
    assert torch.allclose(final, last_block_output(tiny_model, calibration), atol=1e-5)


def test_statistics_see_every_calibration_token_of_every_linear_layer(tiny_model, calibration):
    seen = {}

    def prune_block(layers):
        seen.update({name: statistic.tokens for name, (_, statistic) in layers.items()})

    prune_sequentially(tiny_model, calibration, lambda layer: TokenCount(), prune_block, batch_size=2)
    assert len(seen) == 2 * 7 and "model.layers.1.mlp.down_proj" in seen
    assert set(seen.values()) == {calibration.numel()}


@pytest.mark.parametrize(
    "calibration",
    [torch.zeros(8, dtype=torch.long), torch.zeros(2, 4), torch.zeros(0, 4, dtype=torch.long)],
    ids=["one-dimensional", "floating-point", "empty"],
)
def test_malformed_calibration_is_refused(tiny_model, calibration):
    with pytest.raises(ValueError, match="calibration must"):
        prune_sequentially(tiny_model, calibration, lambda layer: TokenCount(), lambda layers: None)


def test_batch_size_below_one_is_refused(tiny_model, calibration):
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        prune_sequentially(tiny_model, calibration, lambda layer: TokenCount(), lambda layers: None, batch_size=0)
