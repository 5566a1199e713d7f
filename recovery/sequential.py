"""The layer-by-layer engine that calibration-based pruners (Wanda, SparseGPT) run on.

As in the published Wanda and SparseGPT code, the calibration windows go through the model one decoder block
at a time: the inputs of block 0 are caught once (the embedding output plus the keyword arguments the model
passes its blocks: rotary position embeddings, attention mask, position ids), then for every block the hooks
on its linear layers gather input statistics over all windows, a callback prunes the block, and the pruned
block is run again so that the next block sees the outputs of the already-pruned ones. Memory holds one
block's activations, [windows, tokens, hidden], at a time; the buffer is overwritten in place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import torch

from paser.common.console import progress_bar
from paser.recovery.models import decoder_layers


class InputStatistic(Protocol):
    """Something that accumulates a statistic of a linear layer's inputs, one batch at a time."""

    def add_batch(self, inputs: torch.Tensor) -> None:
        """Fold in a batch of layer inputs, [..., in_features]."""


StatisticT = TypeVar("StatisticT", bound=InputStatistic)
BlockLayers = dict[str, tuple[torch.nn.Linear, StatisticT]]


class _BlockInputsCaught(Exception):
    """Raised by the capture hook to stop the model's forward once block 0's inputs are caught."""


@dataclass
class BlockInputs:
    """The calibration activations entering the current block, and the arguments the model passes every block.

    `hidden` is [windows, tokens, hidden] on the compute device, in the dtype the model computes in (what the
    blocks see in a plain forward), overwritten by each block's outputs.
    `arguments` maps a batch size to the (extra positional args, keyword args) caught for batches of that size:
    with unpadded windows of one length these depend on the batch shape only, so one capture per size serves
    every block and batch.
    """

    hidden: torch.Tensor
    arguments: dict[int, tuple[tuple[Any, ...], dict[str, Any]]] = field(default_factory=dict)

    def batches(self, batch_size: int) -> Iterator[slice]:
        """Slices of `batch_size` windows (the last may be shorter) covering all windows."""
        for start in range(0, self.hidden.shape[0], batch_size):
            yield slice(start, min(start + batch_size, self.hidden.shape[0]))


def check_calibration(calibration: torch.Tensor) -> None:
    """Refuse calibration that is not a non-empty [windows, tokens] tensor of integer token ids."""
    if not isinstance(calibration, torch.Tensor) or calibration.dim() != 2 or calibration.numel() == 0:
        shape = tuple(calibration.shape) if isinstance(calibration, torch.Tensor) else type(calibration).__name__
        raise ValueError(f"calibration must be a non-empty [windows, tokens] tensor of token ids, got {shape}")
    if calibration.dtype.is_floating_point or calibration.dtype.is_complex or calibration.dtype == torch.bool:
        raise ValueError(f"calibration must hold integer token ids, got dtype {calibration.dtype}")


def _to_device(value: Any, device: torch.device) -> Any:
    """`value` with every tensor inside (nested tuples, lists, dicts) moved to `device`."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(_to_device(item, device) for item in value)
    if isinstance(value, dict):
        return {key: _to_device(item, device) for key, item in value.items()}
    return value


@torch.no_grad()
def capture_block_inputs(
    model: torch.nn.Module, calibration: torch.Tensor, batch_size: int, device: torch.device
) -> BlockInputs:
    """Run the model up to decoder block 0 on every calibration batch and keep what enters that block.

    The model runs where it lives (only the embedding and the position encodings are computed before the
    capture hook stops it); the caught tensors are moved to `device`. No KV cache is built (`use_cache=False`).
    """
    first_block = decoder_layers(model)[0]
    caught: dict[str, Any] = {}

    def catch(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hidden = args[0] if args else kwargs.pop("hidden_states")
        caught["hidden"], caught["args"], caught["kwargs"] = hidden, args[1:], kwargs
        raise _BlockInputsCaught

    input_device = model.get_input_embeddings().weight.device
    hidden_states: torch.Tensor | None = None
    arguments: dict[int, tuple[tuple[Any, ...], dict[str, Any]]] = {}
    handle = first_block.register_forward_pre_hook(catch, with_kwargs=True)
    try:
        for start in range(0, calibration.shape[0], batch_size):
            batch = calibration[start : start + batch_size].to(input_device)
            try:
                model(batch, use_cache=False)
            except _BlockInputsCaught:
                pass
            else:
                raise ValueError(f"{type(model).__name__}'s forward never called its decoder block 0")
            if hidden_states is None:
                shape = (calibration.shape[0], *caught["hidden"].shape[1:])
                hidden_states = torch.empty(shape, dtype=caught["hidden"].dtype, device=device)
            hidden_states[start : start + batch.shape[0]] = caught["hidden"].to(device)
            if batch.shape[0] not in arguments:
                arguments[batch.shape[0]] = (_to_device(caught["args"], device), _to_device(caught["kwargs"], device))
    finally:
        handle.remove()
    return BlockInputs(hidden_states, arguments)


def _block_linears(block: torch.nn.Module, block_name: str) -> dict[str, torch.nn.Linear]:
    return {
        f"{block_name}.{name}": module for name, module in block.named_modules() if isinstance(module, torch.nn.Linear)
    }


def _run_block(block: torch.nn.Module, inputs: BlockInputs, batch: slice) -> torch.Tensor:
    args, kwargs = inputs.arguments[batch.stop - batch.start]
    output = block(inputs.hidden[batch], *args, **kwargs)
    # transformers 5 Llama-style blocks return the hidden states; older or remote-code blocks return a tuple.
    return output[0] if isinstance(output, tuple) else output


@torch.no_grad()
def prune_sequentially(
    model: torch.nn.Module,
    calibration: torch.Tensor,
    make_statistic: Callable[[torch.nn.Linear], StatisticT],
    prune_block: Callable[[BlockLayers], None],
    batch_size: int = 8,
    device: str | torch.device | None = None,
    description: str = "pruning",
) -> torch.Tensor:
    """Run the calibration windows through the decoder block by block, pruning each block on the way.

    For every block: one `make_statistic(layer)` per linear layer in it is fed that layer's inputs over all
    windows (forward hooks, `batch_size` windows per forward), `prune_block({qualified name: (layer,
    statistic)})` prunes the block in place, and the block is run again to produce the next block's inputs.
    `calibration` is [windows, tokens] token ids without padding. Blocks compute on `device` (default: the
    device of the model's parameters); a block living elsewhere is moved there for its turn and back after.

    Returns the last block's outputs, [windows, tokens, hidden] (before the model's final norm).
    Refuses malformed calibration and a batch size below 1.
    """
    check_calibration(calibration)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    blocks = decoder_layers(model)
    names = {id(module): name for name, module in model.named_modules()}
    inputs = capture_block_inputs(model, calibration, batch_size, device)
    for block in progress_bar(blocks, desc=f"{description} ({len(blocks)} blocks)", unit="block"):
        home = next(block.parameters()).device
        block.to(device)
        layers = {
            name: (layer, make_statistic(layer)) for name, layer in _block_linears(block, names[id(block)]).items()
        }
        handles = [
            layer.register_forward_hook(lambda module, args, output, statistic=statistic: statistic.add_batch(args[0]))
            for layer, statistic in layers.values()
        ]
        try:
            for batch in inputs.batches(batch_size):
                _run_block(block, inputs, batch)
        finally:
            for handle in handles:
                handle.remove()
        prune_block(layers)
        del layers
        for batch in inputs.batches(batch_size):
            inputs.hidden[batch] = _run_block(block, inputs, batch)
        block.to(home)
    return inputs.hidden
