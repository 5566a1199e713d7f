"""The settings of selection's model-heavy stages, apart from the code that runs them: degradation scoring
(`DegradationConfig`, run by `paser.selection.degradation`). This module imports only the standard library, so
a run config loads, and the `paser` command starts, without torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class DegradationConfig:
    """How degradation scoring batches and chunks its work; see `score_degradation`."""

    tokens_per_batch: int = field(
        default=8192,
        metadata={
            "help": "Token budget per forward batch: rows × padded length stays within it (a longer row "
            "runs alone). Rows are length-sorted within a shard, so padding is small."
        },
    )
    max_batch_rows: int = field(default=64, metadata={"help": "Upper bound on rows per forward batch."})
    max_padding: float = field(
        default=0.1,
        metadata={
            "help": "Largest fraction of a batch that may be padding: a row shorter than the batch's longest "
            "by more than this fraction starts a new batch (padding costs as much as real tokens)."
        },
    )
    position_chunk: int = field(
        default=1024,
        metadata={
            "help": "Response positions per output-head + log-softmax chunk; peak memory is a few × chunk × "
            "vocab float32 values, independent of batch size and sequence length."
        },
    )
    shard_size: int = field(
        default=1024, metadata={"help": "Rows per result shard; finished shards are skipped on a rerun."}
    )
    share_prompt_prefix: bool = field(
        default=True,
        metadata={
            "help": "Run the token prefix that all rows of a shard share (e.g. a chat template's system "
            "prompt) once per model and reuse its key/value cache across the shard's batches. Turn off "
            "for models whose cache cannot be repeated over a batch (`batch_repeat_interleave`)."
        },
    )
    min_shared_prefix: int = field(
        default=16,
        metadata={
            "help": "Shortest common prefix worth sharing: below it (e.g. just the BOS token) each batch runs "
            "whole, which lets SDPA use its causal kernel."
        },
    )
    compile_jsd: str = field(
        default="auto",
        metadata={
            "help": "Fuse each chunk's float32 log-softmax, JSD and NLL into compiled kernels (`torch.compile`) "
            "that read the two heads' logits a few times instead of a dozen or more elementwise passes over "
            "chunk × vocab float32 tensors: on, off, or auto (on when the original model is on a CUDA device)."
        },
    )
    compile_body: bool = field(
        default=False,
        metadata={
            "help": "`torch.compile` each model's decoder body in place (`nn.Module.compile`, dynamic shapes) "
            "before scoring. Measured on an H200 with a Llama-3.2-1B pair: scoring 157k → 192k tokens/s (MFU "
            "37% → 45%) after ~45 s of compilation; worth it for long scoring runs on a GPU."
        },
    )
    unconditioned_nll: bool = field(
        default=False,
        metadata={
            "help": "Also score the response alone (after the BOS token only) under the pruned model, column "
            "nll_pruned_unconditioned; needed by the `ifd` strategy."
        },
    )
    show_progress: bool = field(default=True, metadata={"help": "Show a progress bar (rows/s and ETA)."})

    def __post_init__(self) -> None:
        for name in ("tokens_per_batch", "max_batch_rows", "position_chunk", "shard_size", "min_shared_prefix"):
            if getattr(self, name) < 1:
                raise ValueError(f"DegradationConfig.{name} must be >= 1, got {getattr(self, name)}")

        if self.compile_jsd not in ("auto", "on", "off"):
            raise ValueError(f"DegradationConfig.compile_jsd must be auto, on or off, got {self.compile_jsd!r}")
        if not 0.0 <= self.max_padding < 1.0:
            raise ValueError(f"DegradationConfig.max_padding must be in [0, 1), got {self.max_padding}")

    def numerics(self) -> dict[str, object]:
        """The fields that decide which rows share a batch or chunk, and so the exact bits of the results."""
        fields = asdict(self)
        del fields["show_progress"]
        return fields
