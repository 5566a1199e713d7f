"""Width pruning: remove a uniform share of MLP channels and of attention heads from every decoder block.

Structured pruning as in LLM-Pruner, Minitron and Sheared-LLaMA makes a narrower dense model, faster with any
kernel, where unstructured zeros save nothing without sparse ones. In every block the same number of MLP
intermediate channels (rows of gate_proj and up_proj, columns of down_proj) and of attention key/value groups is
removed; a group goes whole, with the query heads that share it, so the ratio of query heads to KV heads (GQA)
and `head_dim` are kept. The result loads with plain `AutoModelForCausalLM.from_pretrained`: its config states
the smaller `intermediate_size`, `num_attention_heads` and `num_key_value_heads`, and `head_dim` explicitly
(hidden_size / heads no longer gives it).

Which channels and groups go is decided by an importance score, lowest first:

- `activation` (default; Wanda-sp's ‖X‖·‖W‖ on the output projection): for MLP channel j,
  E[h_j²] · ‖W_down[:, j]‖², the expected squared norm the channel adds to the block's output, h_j being
  down_proj's input over the calibration tokens; for an attention group, the same over the o_proj input
  channels of its query heads, summed. Cross terms between channels are ignored. Minitron scores the
  activations alone; weighting them by the output weights they multiply makes a channel with large
  activations but near-zero outgoing weights cheap to remove, as it is. Computed layer by layer
  (`paser.recovery.sequential`): each block is scored on the outputs of the already-pruned blocks.
- `taylor` (LLM-Pruner's first-order, element-wise Taylor term, summed over the group): the sum over every
  weight (and bias) of the channel or group, in all the projections it spans, of |w · ∂L/∂w|, L being the
  language-model loss over all calibration windows, computed once on the unpruned model (one backward per
  window; memory for the gradients of every decoder linear layer).
- `random`: seeded uniform scores, the control. It needs no calibration text, but the method is registered
  as needing it (the default needs it), so a source is still loaded; the record says which score was used.

Counts: round(ratio × intermediate_size) channels and round(ratio × num_key_value_heads) groups are removed
from every block, so a model with few KV groups loses attention in coarse steps (SmolLM2-135M: 3 groups of 3
heads, so ratio 0.2 and 0.3 both remove one group, a third of the heads). The record gives the shares reached.

Not supported: keeping the first and last blocks whole (LLM-Pruner's default). Llama-family configs hold one
`intermediate_size` and one head count for all blocks, so blocks of different widths would not reload with
`from_pretrained`, and no uniform width can keep two blocks whole while the others shrink. Llama, Mistral and
Qwen2 (q/k/v biases) models only; other architectures are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from paser.common.registry import check_name
from paser.recovery.models import decoder_layers, prunable_linears
from paser.recovery.pruners import PruneTarget
from paser.recovery.sequential import BlockLayers, check_calibration, prune_sequentially
from paser.recovery.wanda import InputNorms

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")
IMPORTANCE_SCORES = ("activation", "taylor", "random")
ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class BlockShape:
    """The widths every decoder block of a model has: MLP channels, KV groups, query heads per group, head_dim."""

    intermediate_size: int
    key_value_heads: int
    heads_per_group: int
    head_dim: int

    @classmethod
    def of(cls, config: Any) -> BlockShape:
        """The shape a Llama-family config states (`head_dim` from the config, else hidden_size / heads)."""
        heads, key_value_heads = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
        return cls(
            intermediate_size=config.intermediate_size,
            key_value_heads=key_value_heads,
            heads_per_group=heads // key_value_heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
        )

    @property
    def attention_heads(self) -> int:
        return self.key_value_heads * self.heads_per_group

    def narrowed(self, ratio: float) -> BlockShape:
        """The shape after removing round(ratio × n) MLP channels and KV groups (Python's round, half to even).

        Refuses (ValueError naming the counts) a ratio that removes nothing at all, or every channel or group.
        """
        channels_removed = round(ratio * self.intermediate_size)
        groups_removed = round(ratio * self.key_value_heads)
        if channels_removed == 0 and groups_removed == 0:
            raise ValueError(
                f"width ratio {ratio} removes nothing: round({ratio} x {self.intermediate_size} MLP channels) and "
                f"round({ratio} x {self.key_value_heads} KV groups) are both 0"
            )
        if channels_removed == self.intermediate_size or groups_removed == self.key_value_heads:
            raise ValueError(
                f"width ratio {ratio} removes every MLP channel ({channels_removed} of {self.intermediate_size}) or "
                f"every KV group ({groups_removed} of {self.key_value_heads}); choose a smaller ratio"
            )
        return BlockShape(
            self.intermediate_size - channels_removed,
            self.key_value_heads - groups_removed,
            self.heads_per_group,
            self.head_dim,
        )


def check_width_model(model: torch.nn.Module) -> BlockShape:
    """The block shape of a model width pruning can rewrite; refuses (ValueError) any other.

    Refused: a `config.model_type` outside `SUPPORTED_MODEL_TYPES` (named, with the supported ones), query heads
    that do not split evenly over the KV heads, and a block without the Llama layout (self_attn.{q,k,v,o}_proj,
    mlp.{gate,up,down}_proj).
    """
    config = model.config
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"width pruning supports Llama-family models ({', '.join(SUPPORTED_MODEL_TYPES)}); "
            f"{type(model).__name__} has model_type {model_type!r}"
        )
    key_value_heads = config.num_key_value_heads or config.num_attention_heads
    if config.num_attention_heads % key_value_heads:
        raise ValueError(
            f"{config.num_attention_heads} attention heads do not split evenly over {key_value_heads} KV heads"
        )
    parts = [("self_attn", name) for name in ATTENTION_PROJECTIONS] + [("mlp", name) for name in MLP_PROJECTIONS]
    for index, block in enumerate(decoder_layers(model)):
        for parent, name in parts:
            if not isinstance(getattr(getattr(block, parent, None), name, None), torch.nn.Linear):
                raise ValueError(f"decoder block {index} has no linear layer {parent}.{name}; not a Llama layout")
    return BlockShape.of(config)


def head_channels(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    """The row (or column) indices of the given heads in a projection laid out head by head, in order."""
    return (heads[:, None] * head_dim + torch.arange(head_dim, device=heads.device)).flatten()


def group_heads(groups: torch.Tensor, heads_per_group: int) -> torch.Tensor:
    """The query heads sharing the given KV groups: group g serves heads g·r .. g·r + r − 1 (transformers'
    `repeat_kv` layout), in order."""
    return (groups[:, None] * heads_per_group + torch.arange(heads_per_group, device=groups.device)).flatten()


def top_indices(scores: torch.Tensor, count: int) -> torch.Tensor:
    """The positions of the `count` highest scores, ascending; ties keep the earlier position."""
    order = torch.sort(scores.float().cpu(), descending=True, stable=True).indices[:count]
    return torch.sort(order).values


@torch.no_grad()
def _select(layer: torch.nn.Linear, indices: torch.Tensor, dim: int) -> None:
    """Keep the output rows (dim 0) or input columns (dim 1) of `layer` at `indices`, in place."""
    indices = indices.to(layer.weight.device)
    layer.weight = torch.nn.Parameter(layer.weight.index_select(dim, indices).contiguous())
    if dim == 0:
        if layer.bias is not None:
            layer.bias = torch.nn.Parameter(layer.bias.index_select(0, indices).contiguous())
        layer.out_features = len(indices)
    else:
        layer.in_features = len(indices)


def shrink_mlp(mlp: torch.nn.Module, channels: torch.Tensor) -> None:
    """Keep the MLP intermediate `channels` (rows of gate_proj and up_proj, columns of down_proj), in place."""
    _select(mlp.gate_proj, channels, 0)
    _select(mlp.up_proj, channels, 0)
    _select(mlp.down_proj, channels, 1)
    if hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = len(channels)


def shrink_attention(attention: torch.nn.Module, groups: torch.Tensor, shape: BlockShape) -> None:
    """Keep the KV `groups` and their query heads (q/k/v rows and biases, o_proj columns), in place."""
    query_channels = head_channels(group_heads(groups, shape.heads_per_group), shape.head_dim)
    key_value_channels = head_channels(groups, shape.head_dim)
    _select(attention.q_proj, query_channels, 0)
    _select(attention.k_proj, key_value_channels, 0)
    _select(attention.v_proj, key_value_channels, 0)
    _select(attention.o_proj, query_channels, 1)
    # Older transformers versions keep head counts on the module; 5.x reads only head_dim and the group ratio.
    if hasattr(attention, "num_heads"):
        attention.num_heads = len(groups) * shape.heads_per_group
    if hasattr(attention, "num_key_value_heads"):
        attention.num_key_value_heads = len(groups)


@dataclass(frozen=True)
class BlockScores:
    """Importance of every MLP intermediate channel [intermediate_size] and KV group [key_value_heads] of a block."""

    channels: torch.Tensor
    groups: torch.Tensor


@dataclass(frozen=True)
class KeptWidth:
    """What one block kept: MLP channels and KV groups (original positions, ascending)."""

    channels: torch.Tensor
    groups: torch.Tensor

    def to_dict(self, layer: int, heads_per_group: int) -> dict[str, Any]:
        return {
            "layer": layer,
            "mlp_channels": self.channels.tolist(),
            "kv_groups": self.groups.tolist(),
            "attention_heads": group_heads(self.groups, heads_per_group).tolist(),
        }


def narrow_block(block: torch.nn.Module, scores: BlockScores, shape: BlockShape, narrowed: BlockShape) -> KeptWidth:
    """Keep the highest-scoring `narrowed.intermediate_size` channels and `narrowed.key_value_heads` groups."""
    kept = KeptWidth(
        top_indices(scores.channels, narrowed.intermediate_size), top_indices(scores.groups, narrowed.key_value_heads)
    )
    shrink_mlp(block.mlp, kept.channels)
    shrink_attention(block.self_attn, kept.groups, shape)
    return kept


def _per_group(per_head_channel: torch.Tensor, shape: BlockShape) -> torch.Tensor:
    """Sum a score over the query-head channels of each KV group: [heads × head_dim] → [key_value_heads]."""
    return per_head_channel.reshape(shape.key_value_heads, -1).sum(dim=1)


def activation_scores(
    down_proj: torch.nn.Linear,
    down_inputs: InputNorms,
    o_proj: torch.nn.Linear,
    o_inputs: InputNorms,
    shape: BlockShape,
) -> BlockScores:
    """The `activation` score of one block: E[x_c²] · ‖W[:, c]‖² per input channel c of down_proj (one per MLP
    channel) and of o_proj (summed over each KV group's query heads), float32."""

    def contribution(layer: torch.nn.Linear, inputs: InputNorms) -> torch.Tensor:
        column_norms = layer.weight.detach().float().pow(2).sum(dim=0)
        return inputs.mean_squares().to(column_norms.device) * column_norms

    return BlockScores(contribution(down_proj, down_inputs), _per_group(contribution(o_proj, o_inputs), shape))


def _saliences(layer: torch.nn.Linear, dim: int) -> torch.Tensor:
    """|w · ∂L/∂w| of `layer` summed to one value per output row (dim 0, bias included) or input column (dim 1)."""
    weight = layer.weight
    salience = (weight.detach() * weight.grad).abs().float().sum(dim=1 - dim)
    if dim == 0 and layer.bias is not None:
        salience = salience + (layer.bias.detach() * layer.bias.grad).abs().float()
    return salience


def taylor_block_scores(block: torch.nn.Module, shape: BlockShape) -> BlockScores:
    """LLM-Pruner's element-wise first-order score of one block, from the gradients left on its weights."""
    mlp, attention = block.mlp, block.self_attn
    channels = _saliences(mlp.gate_proj, 0) + _saliences(mlp.up_proj, 0) + _saliences(mlp.down_proj, 1)
    query = _saliences(attention.q_proj, 0) + _saliences(attention.o_proj, 1)
    key_value = _saliences(attention.k_proj, 0) + _saliences(attention.v_proj, 0)
    groups = _per_group(query, shape) + _per_group(key_value, shape)
    return BlockScores(channels, groups)


def accumulate_gradients(model: torch.nn.Module, calibration: torch.Tensor) -> Callable[[], None]:
    """Leave on every decoder linear weight and bias the gradient of the mean next-token loss over all windows.

    Other parameters (embeddings, norms, lm_head) get none. One window per forward and backward, so memory holds
    one window's activations (a 7B model's 2048-token window fits where a batch of them would not); each
    window's mean loss is divided by the number of windows, so the sum is the gradient of the mean over all.
    Returns a function that clears the gradients and restores every parameter's `requires_grad`.
    """
    parameters = list(model.parameters())
    previous = [parameter.requires_grad for parameter in parameters]
    linears = prunable_linears(model).values()
    tracked = {id(parameter) for layer in linears for parameter in layer.parameters()}
    for parameter in parameters:
        parameter.requires_grad_(id(parameter) in tracked)
        parameter.grad = None
    device = next(model.parameters()).device
    with torch.enable_grad():
        for window in calibration:
            ids = window[None].to(device)
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
            (loss / calibration.shape[0]).backward()

    def restore() -> None:
        for parameter, requires_grad in zip(parameters, previous, strict=True):
            parameter.grad = None
            parameter.requires_grad_(requires_grad)

    return restore


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(all parameters, decoder-block parameters) of a model; tied weights are counted once."""
    total = sum(parameter.numel() for parameter in model.parameters())
    decoder = sum(parameter.numel() for parameter in decoder_layers(model).parameters())
    return total, decoder


def set_block_shape(config: Any, shape: BlockShape) -> None:
    """Write `shape` into a Llama-family config: intermediate_size, head counts and an explicit head_dim."""
    config.intermediate_size = shape.intermediate_size
    config.num_attention_heads = shape.attention_heads
    config.num_key_value_heads = shape.key_value_heads
    config.head_dim = shape.head_dim


def _narrow_by_activations(
    model: torch.nn.Module,
    calibration: torch.Tensor,
    shape: BlockShape,
    narrowed: BlockShape,
    batch_size: int,
    device: str | None,
) -> list[KeptWidth]:
    """Narrow block by block, each scored (`activation_scores`) on the outputs of the blocks already narrowed."""
    blocks = decoder_layers(model)
    block_index = {id(block.mlp.down_proj): index for index, block in enumerate(blocks)}
    kept: list[KeptWidth] = []

    def prune_block(layers: BlockLayers[InputNorms]) -> None:
        by_role = {name.rsplit(".", 1)[-1]: pair for name, pair in layers.items()}
        down_proj, down_inputs = by_role["down_proj"]
        o_proj, o_inputs = by_role["o_proj"]
        block = blocks[block_index[id(down_proj)]]
        scores = activation_scores(down_proj, down_inputs, o_proj, o_inputs, shape)
        kept.append(narrow_block(block, scores, shape, narrowed))

    prune_sequentially(
        model,
        calibration,
        InputNorms.for_layer,
        prune_block,
        batch_size=batch_size,
        device=device,
        description="width",
    )
    return kept


def _static_scores(
    model: torch.nn.Module, calibration: torch.Tensor | None, shape: BlockShape, importance: str, random_seed: int
) -> list[BlockScores]:
    """Every block's scores computed on the unpruned model: first-order Taylor, or seeded random."""
    blocks = decoder_layers(model)
    if importance == "taylor":
        restore = accumulate_gradients(model, calibration)
        try:
            return [taylor_block_scores(block, shape) for block in blocks]
        finally:
            restore()
    generator = torch.Generator().manual_seed(random_seed)
    return [
        BlockScores(
            torch.rand(shape.intermediate_size, generator=generator),
            torch.rand(shape.key_value_heads, generator=generator),
        )
        for _ in blocks
    ]


def width_prune(
    model: torch.nn.Module,
    target: PruneTarget,
    calibration: torch.Tensor | None,
    importance: str = "activation",
    keep_first_last: bool = False,
    random_seed: int = 0,
    batch_size: int = 8,
    device: str | None = None,
) -> dict[str, Any]:
    """Remove `target.ratio` of the MLP channels and KV groups of every decoder block, lowest `importance` first.

    `importance`: `activation`, `taylor` or `random` (module docstring). `random_seed` seeds the random scores.
    `batch_size`: calibration windows per forward for `activation` (`taylor` takes one window per forward and
    backward). `device`: where blocks compute for `activation` (default: the model's). The model and its config
    are changed in place.

    Returns the record fields: block shape before and after (`intermediate_size`, `num_attention_heads`,
    `num_key_value_heads`: {before, after}; `head_dim`), the shares of MLP channels and attention heads removed,
    parameters and decoder-block parameters before and after and the decoder share removed, and
    `per_layer_kept` (per block: kept MLP channels, KV groups and query heads, original positions).

    Refuses (ValueError): a target without a ratio, `keep_first_last` (see the module docstring), an unknown
    importance, calibration that is not [windows, tokens] token ids (unless `random`), a model
    `check_width_model` refuses, and a ratio `BlockShape.narrowed` refuses; all before any weight changes.
    """
    if target.ratio is None:
        raise ValueError(f"width pruning takes a ratio (fraction of channels and heads), not {target.kind}")
    if keep_first_last:
        raise ValueError(
            "keep_first_last is not supported: a Llama-family config has one intermediate_size and one head count "
            "for every block, so whole first and last blocks next to narrower ones would not reload with "
            "from_pretrained; width pruning narrows every block"
        )
    check_name("width importance", importance, IMPORTANCE_SCORES)
    if importance != "random":
        check_calibration(calibration)
    shape = check_width_model(model)
    narrowed = shape.narrowed(target.ratio)
    parameters_before, decoder_before = parameter_counts(model)
    if importance == "activation":
        kept = _narrow_by_activations(model, calibration, shape, narrowed, batch_size, device)
    else:
        scores = _static_scores(model, calibration, shape, importance, random_seed)
        kept = [
            narrow_block(block, block_scores, shape, narrowed)
            for block, block_scores in zip(decoder_layers(model), scores, strict=True)
        ]
    set_block_shape(model.config, narrowed)
    parameters_after, decoder_after = parameter_counts(model)
    return {
        "intermediate_size": {"before": shape.intermediate_size, "after": narrowed.intermediate_size},
        "num_attention_heads": {"before": shape.attention_heads, "after": narrowed.attention_heads},
        "num_key_value_heads": {"before": shape.key_value_heads, "after": narrowed.key_value_heads},
        "head_dim": shape.head_dim,
        "mlp_channels_removed_fraction": 1 - narrowed.intermediate_size / shape.intermediate_size,
        "attention_heads_removed_fraction": 1 - narrowed.attention_heads / shape.attention_heads,
        "parameters_before": parameters_before,
        "parameters_after": parameters_after,
        "decoder_parameters_before": decoder_before,
        "decoder_parameters_after": decoder_after,
        "decoder_parameters_removed_fraction": 1 - decoder_after / decoder_before,
        "per_layer_kept": [width.to_dict(index, shape.heads_per_group) for index, width in enumerate(kept)],
    }
