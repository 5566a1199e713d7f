"""The settings of selection's heavy stages, apart from the code that runs them: degradation scoring
(`DegradationConfig`, run by `paser.selection.degradation`) and clustering (`ClusterConfig`, run by
`paser.selection.cluster`). This module imports only the standard library, so a run config loads, and the
`paser` command starts, without torch or scikit-learn.
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
    keep_token_jsd: bool = field(
        default=False,
        metadata={
            "help": "Also keep the JSD of every response token (float16, ~2 bytes a token: ~400 MB for 1M rows of "
            "200-token responses) in shard-*.token_jsd.npz beside the score shards, for recovery's "
            "token_weighting (paser.selection.token_jsd). Exact scoring on the local engine only."
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
        """The fields that decide which rows share a batch or chunk, and so the exact bits of the results
        (`keep_token_jsd` does not: it keeps more of them)."""
        fields = asdict(self)
        del fields["show_progress"], fields["keep_token_jsd"]
        return fields


@dataclass
class ClusterConfig:
    """How to cluster embeddings; defaults are what a user should run."""

    method: str = field(
        default="leiden",
        metadata={
            "help": "Clusterer: 'leiden' (modularity communities of the sparse kNN graph, small ones merged; the "
            "measured default), 'spectral' (the paper's: k-means on manifold coordinates of the kNN graph, K "
            "from the eigengap), 'nmf' (the paper's NMF variant on the sparse affinity) or 'kmeans' (on the "
            "features)."
        },
    )
    manifold: str = field(
        default="diffusion",
        metadata={"help": "Coordinates for 'spectral': 'diffusion' (diffusion map) or 'umap'."},
    )
    n_clusters: int | None = field(
        default=None,
        metadata={"help": "Fixed number of clusters K; None: K from the communities ('leiden') or the eigengap."},
    )
    min_clusters: int = field(
        default=5,
        metadata={
            "help": "Smallest automatic K. Real instruction corpora have a smoothly decaying spectrum whose "
            "largest gap is often at K=2 (one outlying skill vs the rest: 2,000 Alpaca rows gave K=2 with a "
            "floor of 2), which leaves the allocation nothing to work with; 5 keeps K useful. 'leiden' raises "
            "its resolution until it finds this many communities."
        },
    )
    max_clusters: int = field(
        default=30,
        metadata={"help": "Largest automatic K; 'leiden' merges its smallest communities down to it."},
    )
    resolution: float = field(
        default=0.3,
        metadata={
            "help": "'leiden': modularity resolution; lower gives fewer, larger communities. 0.3 was measured on "
            "labelled task pools (bench/cluster_quality.py): 1.0 split task categories into 20-25 communities."
        },
    )
    min_cluster_fraction: float = field(
        default=0.02,
        metadata={
            "help": "'leiden': a community with fewer rows than this share of the fitted rows is merged into "
            "the community it has the most kNN edges to (near-duplicate groups form such crumbs)."
        },
    )
    n_init: int = field(default=4, metadata={"help": "k-means restarts (k-means++ seeds) wherever k-means runs."})
    response_weight: float = field(
        default=0.7,
        metadata={
            "help": "Weight of the response's sentence embedding beside the prompt's (features; 0 leaves it out). "
            "The response carries what the capability produces (a label, a number, code, an essay)."
        },
    )
    lexical_weight: float = field(
        default=0.7,
        metadata={
            "help": "Weight of the prompt's lexical block (TF-IDF in an LSA basis: template wording such as "
            "'summarize' or 'Choices:'), beside the prompt's embedding (0 leaves it out)."
        },
    )
    lexical_dimensions: int = field(default=100, metadata={"help": "LSA dimensions of the lexical block."})
    n_neighbors: int = field(default=20, metadata={"help": "Neighbours per row in the cosine kNN graph."})
    diffusion_time: float = field(default=1.0, metadata={"help": "Diffusion time t: coordinates are ψ_i · λ_i^t."})
    landmark_threshold: int = field(
        default=200_000,
        metadata={"help": "Above this many rows, fit on landmarks and assign the rest by nearest landmark."},
    )
    n_landmarks: int = field(
        default=20_000,
        metadata={"help": "Landmark sample size when the landmark path is used (seeded random rows)."},
    )
    seed: int | None = field(
        default=None,
        metadata={
            "help": "Seed for landmarks, the graph search, Leiden, the eigensolver start, k-means and the lexical "
            "basis. None: `paser select` and `paser run` use the selection seed (each seed re-clusters); the "
            "library uses 0. A value set here is used as given (every seed then shares one clustering)."
        },
    )
