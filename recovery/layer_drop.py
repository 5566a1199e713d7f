"""Layer drop: remove the decoder blocks that change their input least (ShortGPT, Men et al. 2024).

The block influence (the paper's Block Influence, BI) of block i is 1 − the mean, over every calibration
token, of the cosine similarity between the hidden state entering the block and the one leaving it. A block
whose output nearly equals its input contributes little, so the blocks of lowest influence are removed. The
result is a smaller dense model whose config says how many blocks it has, so it loads with plain
`AutoModelForCausalLM.from_pretrained`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from paser.recovery.models import decoder_layers
from paser.recovery.sequential import check_calibration

# Config fields holding one entry per decoder block; filtered with the blocks.
PER_LAYER_CONFIG_FIELDS = (
    "layer_types",
    "mlp_layer_types",
    "layers_block_type",
    "layer_rope_theta",
    "no_rope_layers",
    "num_attention_heads_per_layer",
    "num_key_value_heads_per_layer",
)


@torch.no_grad()
def block_influence(model: torch.nn.Module, calibration: torch.Tensor, batch_size: int = 4) -> list[float]:
    """The block influence of every decoder block, in block order: 1 − mean cos(block input, block output).

    The mean runs over all `calibration` tokens (`[n_samples, seqlen]` long ids, every position counted),
    from plain forwards of the whole model in batches of `batch_size` windows (no cache, no gradient);
    cosines are taken in float32. 0 means the block leaves every hidden state's direction unchanged; the
    value lies in [0, 2]. Refuses (ValueError) calibration that is not [windows, tokens] token ids and batch_size < 1.
    """
    check_calibration(calibration)
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive number of windows, got {batch_size}")
    layers = decoder_layers(model)
    cosine_sums = torch.zeros(len(layers), dtype=torch.float64)

    def record(index: int) -> Callable[..., None]:
        def hook(_module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            block_input = args[0] if args else kwargs["hidden_states"]
            block_output = output[0] if isinstance(output, tuple) else output
            cosine = torch.nn.functional.cosine_similarity(block_input.float(), block_output.float(), dim=-1)
            cosine_sums[index] += cosine.sum().item()

        return hook

    handles = [layer.register_forward_hook(record(index), with_kwargs=True) for index, layer in enumerate(layers)]
    device = next(model.parameters()).device
    try:
        for start in range(0, calibration.shape[0], batch_size):
            model(calibration[start : start + batch_size].to(device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return [1.0 - value / calibration.numel() for value in cosine_sums.tolist()]


def drop_layers(model: torch.nn.Module, indices: list[int]) -> None:
    """Remove the decoder blocks at `indices` (original positions) from `model`, in place.

    The kept blocks keep their order in a new ModuleList; every `layer_idx` inside them (the attention's
    index into the KV cache) is renumbered 0..m-1; `config.num_hidden_layers` becomes m and every per-block
    config list (`PER_LAYER_CONFIG_FIELDS`, e.g. `layer_types`) is filtered the same way, so the saved model
    reloads with m blocks. Refuses (ValueError), before changing anything: no index, every block, an index out
    of range or repeated, a per-block config list of the wrong length, and any other config field listing
    layers (e.g. `mlp_only_layers`), whose meaning after renumbering this function cannot know.
    """
    layers = decoder_layers(model)
    n_layers = len(layers)
    if not indices:
        raise ValueError("no layer to drop: indices is empty")
    if len(set(indices)) != len(indices):
        raise ValueError(f"layer indices to drop repeat: {sorted(indices)}")
    out_of_range = [index for index in indices if not 0 <= index < n_layers]
    if out_of_range:
        raise ValueError(f"layer indices {out_of_range} are out of range for a model of {n_layers} layers")
    if len(indices) == n_layers:
        raise ValueError(f"cannot drop all {n_layers} layers")
    config = model.config
    per_layer = {name: getattr(config, name) for name in PER_LAYER_CONFIG_FIELDS if getattr(config, name, None)}
    for name, values in per_layer.items():
        if len(values) != n_layers:
            raise ValueError(f"config.{name} has {len(values)} entries for {n_layers} layers")
    for name, value in config.to_dict().items():
        if "layer" in name and name not in per_layer and isinstance(value, list) and value:
            raise ValueError(f"config.{name} = {value} refers to layers; layer drop cannot rewrite it")
    dropped = set(indices)
    kept = [index for index in range(n_layers) if index not in dropped]
    for new_index, old_index in enumerate(kept):
        for module in layers[old_index].modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = new_index
    model.model.layers = torch.nn.ModuleList(layers[index] for index in kept)
    config.num_hidden_layers = len(kept)
    for name, values in per_layer.items():
        setattr(config, name, [values[index] for index in kept])


def layer_drop_prune(
    model: torch.nn.Module, target: Any, calibration: torch.Tensor, batch_size: int = 4
) -> dict[str, Any]:
    """Drop the round(`target.drop` × n_layers) decoder blocks of lowest `block_influence` on `calibration`.

    `target` is any object with a `drop` fraction in (0, 1) (e.g. `paser.recovery.pruners.PruneTarget`); the count uses
    Python's `round` (half to even: 0.25 of 30 blocks drops 8, of 26 drops 6). `batch_size` is the number of
    calibration windows per forward in `block_influence`. Ties in influence drop the earlier block.

    Returns the record fields: block_influence (per original block), dropped_layers (original indices,
    ascending), layers_before, layers_after. Refuses (ValueError naming the fraction and layer count) a
    fraction outside (0, 1) or one that rounds to no block or to all.
    """
    drop = target.drop
    n_layers = len(decoder_layers(model))
    if drop is None or not 0.0 < drop < 1.0:
        raise ValueError(f"layer drop fraction must be in (0, 1), got {drop}")
    count = round(drop * n_layers)
    if count == 0 or count == n_layers:
        raise ValueError(
            f"layer drop fraction {drop} of {n_layers} layers rounds to {count} layers; "
            f"choose a fraction that drops between 1 and {n_layers - 1}"
        )
    influence = block_influence(model, calibration, batch_size)
    dropped = sorted(sorted(range(n_layers), key=lambda index: (influence[index], index))[:count])
    drop_layers(model, dropped)
    return {
        "block_influence": influence,
        "dropped_layers": dropped,
        "layers_before": n_layers,
        "layers_after": n_layers - count,
    }
