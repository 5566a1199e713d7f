import torch

from paser.recovery.prune import magnitude_prune_layer
from paser.recovery.pruners import PruneTarget
from paser.recovery.wanda import InputNorms, wanda_metric, wanda_prune_layer


def scaled_layer_and_inputs() -> tuple[torch.nn.Linear, torch.Tensor]:
    """A layer whose input channel 0 carries 100x larger activations and 10x smaller weights than the others."""
    generator = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(8, 4, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(4, 8, generator=generator).abs() + 0.5)
        layer.weight[:, 0] *= 0.1
    inputs = torch.randn(64, 8, generator=generator)
    inputs[:, 0] *= 100
    return layer, inputs


def test_wanda_keeps_the_small_weights_of_a_high_activation_channel_that_magnitude_drops():
    wanda_layer, inputs = scaled_layer_and_inputs()
    magnitude_layer, _ = scaled_layer_and_inputs()
    norms = InputNorms(8)
    norms.add_batch(inputs)
    wanda_prune_layer(wanda_layer, norms, PruneTarget(sparsity=0.5))
    magnitude_prune_layer(magnitude_layer, PruneTarget(sparsity=0.5))
    assert bool((magnitude_layer.weight[:, 0] == 0).all())
    assert bool((wanda_layer.weight[:, 0] != 0).all())


def test_metric_is_weight_magnitude_times_input_channel_rms():
    layer, inputs = scaled_layer_and_inputs()
    norms = InputNorms(8)
    norms.add_batch(inputs)
    expected = layer.weight.abs() * inputs.pow(2).mean(dim=0).sqrt()
    assert torch.allclose(wanda_metric(layer.weight, norms), expected, rtol=1e-5)


def test_input_norms_accumulated_over_batches_equal_those_of_all_tokens_at_once():
    inputs = torch.randn(3, 10, 8, generator=torch.Generator().manual_seed(1))
    in_batches, at_once = InputNorms(8), InputNorms(8)
    for batch in inputs:
        in_batches.add_batch(batch.unsqueeze(0))
    at_once.add_batch(inputs)
    assert in_batches.tokens == at_once.tokens == 30
    assert torch.allclose(in_batches.mean_squares(), at_once.mean_squares())


def test_unstructured_wanda_prunes_the_same_count_in_every_output_row():
    layer = torch.nn.Linear(16, 6, bias=False)
    norms = InputNorms(16)
    norms.add_batch(torch.randn(32, 16, generator=torch.Generator().manual_seed(2)))
    wanda_prune_layer(layer, norms, PruneTarget(sparsity=0.25))
    assert (layer.weight == 0).sum(dim=1).tolist() == [4] * 6


def test_n_m_wanda_keeps_the_highest_scoring_n_of_every_group():
    layer, inputs = scaled_layer_and_inputs()
    norms = InputNorms(8)
    norms.add_batch(inputs)
    metric = wanda_metric(layer.weight, norms)
    wanda_prune_layer(layer, norms, PruneTarget(pattern=(1, 4)))
    kept = (layer.weight != 0).reshape(4, 2, 4)
    best = metric.reshape(4, 2, 4).argmax(dim=-1, keepdim=True)
    assert torch.equal(kept, torch.zeros_like(kept).scatter_(-1, best, True))
