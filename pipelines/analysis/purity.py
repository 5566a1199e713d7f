"""How well a clustering recovers a label the pool carries (a task category, a source dataset): the confusion
of clusters against labels, each cluster's purity, and the clustering-agreement scores NMI and ARI.

    purity = cluster_purity(clusters["cluster"], labels)
    purity.confusion        # clusters × labels, row counts
    purity.per_cluster      # size, majority label, purity of each cluster
    purity.purity, purity.nmi, purity.ari

Purity of a cluster is the share of its rows that carry its most frequent label; overall purity is the
share of all rows that carry their cluster's majority label (1 = every cluster holds one label; it rises
trivially with the number of clusters, which is why NMI and ARI are given beside it). NMI is the mutual
information of clusters and labels normalised by the arithmetic mean of their entropies, ARI the Rand index
adjusted for chance (`sklearn.metrics`); both are 1 for a clustering that is the labelling up to renaming.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.image import AxesImage
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

MAX_HEATMAP_LABELS = 30  # label columns drawn; the rarer labels are summed into one "other" column
MAX_ANNOTATED_CELLS = 400  # heat maps with more cells than this are drawn without numbers in the cells


@dataclass(frozen=True)
class ClusterPurity:
    """The agreement of one clustering with one labelling of the same rows; built by `cluster_purity`.

    `confusion`: row counts, index = cluster (ascending), columns = label (ascending). `per_cluster`: index =
    cluster, columns size, majority_label (the most frequent label; the first in label order on a tie) and
    purity (its share of the cluster's rows). `purity`, `nmi`, `ari`: over all rows, as floats.
    """

    confusion: pd.DataFrame
    per_cluster: pd.DataFrame
    purity: float
    nmi: float
    ari: float

    @property
    def rows(self) -> int:
        """The number of rows compared."""
        return int(self.confusion.to_numpy().sum())


def cluster_purity(
    clusters: pd.Series | Sequence[Any] | np.ndarray, labels: pd.Series | Sequence[Any] | np.ndarray
) -> ClusterPurity:
    """The confusion, per-cluster purity, overall purity, NMI and ARI of `clusters` against `labels`, paired by
    position (a Series' index is ignored).

    Refuses (ValueError) inputs of different lengths, no rows, and a missing value (None or NaN) in either:
    leave rows without a label out first, and say so.
    """
    clusters = pd.Series(np.asarray(clusters), name="cluster")
    labels = pd.Series(np.asarray(labels), name="label")
    if len(clusters) != len(labels):
        raise ValueError(f"clusters and labels differ in length: {len(clusters)} clusters, {len(labels)} labels")
    if len(clusters) == 0:
        raise ValueError("no rows to compare: clusters and labels are empty")
    for name, values in (("clusters", clusters), ("labels", labels)):
        missing = int(values.isna().sum())
        if missing:
            raise ValueError(f"{name} has {missing} missing value(s); leave those rows out first")
    confusion = pd.crosstab(clusters, labels)
    counts = confusion.to_numpy()
    sizes = counts.sum(axis=1)
    per_cluster = pd.DataFrame(
        {
            "size": sizes,
            "majority_label": confusion.columns[counts.argmax(axis=1)],
            "purity": counts.max(axis=1) / sizes,
        },
        index=confusion.index,
    )
    return ClusterPurity(
        confusion=confusion,
        per_cluster=per_cluster,
        purity=float(counts.max(axis=1).sum() / counts.sum()),
        nmi=float(normalized_mutual_info_score(labels, clusters)),
        ari=float(adjusted_rand_score(labels, clusters)),
    )


def draw_confusion(axis: Axes, purity: ClusterPurity) -> AxesImage:
    """Draw `purity`'s confusion on `axis` as a heat map of row-normalised shares (rows = clusters, columns =
    labels; each cell the share of the cluster's rows carrying the label), the shares written in the cells
    when there are at most `MAX_ANNOTATED_CELLS`. Beyond `MAX_HEATMAP_LABELS` labels the rarest are summed
    into a last column "other (N labels)". Returns the image, for a colour bar."""
    confusion = purity.confusion
    if confusion.shape[1] > MAX_HEATMAP_LABELS:
        order = confusion.sum(axis=0).sort_values(ascending=False, kind="stable").index
        kept, rest = order[: MAX_HEATMAP_LABELS - 1], order[MAX_HEATMAP_LABELS - 1 :]
        confusion = confusion[kept].assign(**{f"other ({len(rest)} labels)": confusion[rest].sum(axis=1)})
    shares = confusion.to_numpy(dtype=float) / confusion.to_numpy().sum(axis=1, keepdims=True)
    image = axis.imshow(shares, vmin=0, vmax=1, cmap="Blues", aspect="auto")
    axis.set_xticks(range(shares.shape[1]), [str(label) for label in confusion.columns], rotation=45, ha="right")
    axis.set_yticks(range(shares.shape[0]), [str(cluster) for cluster in confusion.index])
    axis.set_xlabel("label")
    axis.set_ylabel("cluster")
    if shares.size <= MAX_ANNOTATED_CELLS:
        for row, column in np.ndindex(shares.shape):
            share = shares[row, column]
            color = "white" if share >= 0.6 else "black"
            axis.text(column, row, f"{share:.2f}", ha="center", va="center", color=color, fontsize="small")
    return image
