import pytest
import torch

from paser.recovery.prune import magnitude_prune_layer
from paser.recovery.pruners import PruneTarget
from paser.recovery.sparsegpt import InputHessian, sparsegpt_prune_layer
from paser.recovery.wanda import InputNorms, wanda_prune_layer

IN_FEATURES = 192  # one full block of 128 columns and a partial one of 64


def correlated_inputs(tokens: int = 512, seed: int = 0) -> torch.Tensor:
    """Inputs with correlated channels of different scales, like a transformer's hidden states."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(IN_FEATURES, IN_FEATURES, generator=generator) / IN_FEATURES**0.5
    scales = torch.rand(IN_FEATURES, generator=generator) * 3 + 0.1
    return (torch.randn(tokens, IN_FEATURES, generator=generator) @ mixing) * scales


def linear(seed: int = 1) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(IN_FEATURES, 32, bias=False)


def hessian_of(inputs: torch.Tensor) -> InputHessian:
    hessian = InputHessian(inputs.shape[-1])
    hessian.add_batch(inputs)
    return hessian


def reconstruction_error(original: torch.Tensor, pruned: torch.Tensor, inputs: torch.Tensor) -> float:
    return float(torch.linalg.norm(inputs @ original.t() - inputs @ pruned.t()))


def test_sparsegpt_reconstructs_layer_outputs_better_than_magnitude_and_wanda():
    inputs = correlated_inputs()
    original = linear().weight.detach().clone()
    target = PruneTarget(sparsity=0.5)
    errors = {}
    for method in ("magnitude", "wanda", "sparsegpt"):
        layer = linear()
        if method == "magnitude":
            magnitude_prune_layer(layer, target)
        elif method == "wanda":
            norms = InputNorms(IN_FEATURES)
            norms.add_batch(inputs)
            wanda_prune_layer(layer, norms, target)
        else:
            sparsegpt_prune_layer("layer", layer, hessian_of(inputs), target)
        assert int((layer.weight == 0).sum()) == layer.weight.numel() // 2, method
        errors[method] = reconstruction_error(original, layer.weight.detach(), inputs)
    assert errors["sparsegpt"] < errors["wanda"] < errors["magnitude"], errors


@pytest.mark.parametrize("pattern", [(2, 4), (4, 8), (1, 4)])
def test_sparsegpt_n_m_keeps_exactly_n_of_every_group(pattern):
    kept, group = pattern
    layer = linear()
    sparsegpt_prune_layer("layer", layer, hessian_of(correlated_inputs()), PruneTarget(pattern=pattern))
    nonzero_per_group = (layer.weight != 0).reshape(32, -1, group).sum(dim=-1)
    assert torch.equal(nonzero_per_group, torch.full_like(nonzero_per_group, kept))


def test_hessian_accumulated_over_batches_is_two_over_n_x_transpose_x():
    inputs = correlated_inputs(tokens=300)
    hessian = InputHessian(IN_FEATURES)
    for batch in inputs.split(70):
        hessian.add_batch(batch)
    expected = 2 / 300 * inputs.t() @ inputs
    assert torch.allclose(hessian.matrix, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_weights_of_dead_inputs_are_pruned():
    inputs = correlated_inputs()
    inputs[:, 3] = 0
    layer = linear()
    sparsegpt_prune_layer("layer", layer, hessian_of(inputs), PruneTarget(sparsity=0.25))
    assert bool((layer.weight[:, 3] == 0).all())
    assert bool(torch.isfinite(layer.weight).all())


def test_cholesky_failure_names_the_layer():
    hessian = InputHessian(IN_FEATURES)
    hessian.matrix = -torch.eye(IN_FEATURES)
    with pytest.raises(ValueError, match="Cholesky factorisation failed for layer model.layers.3.mlp.up_proj"):
        sparsegpt_prune_layer("model.layers.3.mlp.up_proj", linear(), hessian, PruneTarget(sparsity=0.5))


def test_blocksize_that_splits_an_n_m_group_is_refused():
    with pytest.raises(ValueError, match="blocksize 126 must be a multiple of the pattern's group size 4"):
        sparsegpt_prune_layer(
            "layer", linear(), hessian_of(correlated_inputs()), PruneTarget(pattern=(2, 4)), blocksize=126
        )
