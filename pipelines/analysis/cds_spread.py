"""How unevenly pruning damaged a pool, before anything is trained: the spread of CDS over its clusters and over
its rows' categories (issue 27, item 6).

PASER's allocation gives each cluster a budget that grows with its mean CDS (capability degradation score, the
mean Jensen-Shannon divergence in nats between the original and the pruned model's next-token distributions over a
row's response; `paser.selection.degradation`). Where every cluster's mean CDS is about the same, that allocation
is about size-proportional and a comparison of `paser` with `paser_size_allocation` tests nothing. `cds_spread`
measures how far apart the groups are; `folder_spread` reads it from a `paser select` folder (scores.parquet,
clusters.parquet, corpus.parquet) or a run's `shared/` (its clustering of one seed), so a setting's spread is known
after scoring and clustering, before any training.

    python -m paser.pipelines.analysis.cds_spread RUN/shared --seed 0 [--label-field category]
    python -m paser.pipelines.analysis.cds_spread SELECT_OUT
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from paser.pipelines.analysis.reader import corpus_labels
from paser.pipelines.layout import SelectFolder, SharedFolder


@dataclass(frozen=True)
class CdsSpread:
    """The CDS of a pool's rows by group. `table`: one row per group (`group`, `rows`, `mean_cds`, `sd_cds`,
    `tokens`: prompt + response tokens of its rows where known, else NaN), highest mean CDS first. `spread`: the
    highest group mean minus the lowest (nats); `relative_spread`: that over the pool's mean CDS; `between_share`:
    the share of the rows' CDS variance that lies between the group means (eta squared, 0 = every group has the
    pool's mean, 1 = the groups explain all of it)."""

    grouping: str
    table: pd.DataFrame
    spread: float
    relative_spread: float
    between_share: float

    def markdown(self) -> list[str]:
        """The table and the three numbers as markdown lines."""
        lines = [f"| {self.grouping} | rows | mean CDS | sd CDS | tokens |", "|---|---|---|---|---|"]
        for row in self.table.itertuples(index=False):
            tokens = "" if row.tokens != row.tokens else f"{row.tokens:,.0f}"
            lines.append(f"| {row.group} | {row.rows} | {row.mean_cds:.4f} | {row.sd_cds:.4f} | {tokens} |")
        lines += [
            "",
            f"spread of the {self.grouping} means: {self.spread:.4f} nats ({self.relative_spread:.1%} of the pool's "
            f"mean CDS); share of the CDS variance between the groups: {self.between_share:.1%}",
        ]
        return lines


def cds_spread(cds: pd.Series, groups: pd.Series, grouping: str, tokens: pd.Series | None = None) -> CdsSpread:
    """The spread (`CdsSpread`) of `cds` (one value per row, indexed by id) over `groups` (each row's group, indexed
    by id; rows without a group are left out), named `grouping` ("cluster", "category"); `tokens` (by id) adds each
    group's token count. Refuses (ValueError) fewer than two groups or rows with no CDS."""
    frame = pd.DataFrame({"group": groups}).join(cds.rename("cds"), how="left")
    if frame["cds"].isna().any():
        missing = frame.index[frame["cds"].isna()][0]
        raise ValueError(f"{int(frame['cds'].isna().sum())} grouped row(s) have no CDS, e.g. {missing!r}")
    frame["tokens"] = np.nan if tokens is None else tokens.reindex(frame.index).astype(float)
    by_group = frame.groupby("group", sort=True)
    table = pd.DataFrame(
        {
            "rows": by_group.size(),
            "mean_cds": by_group["cds"].mean(),
            "sd_cds": by_group["cds"].std(ddof=1).fillna(0.0),
            "tokens": by_group["tokens"].sum(min_count=1),
        }
    )
    if len(table) < 2:
        raise ValueError(f"a spread needs at least two {grouping}s, got {len(table)}")
    table = table.rename_axis("group").reset_index().sort_values("mean_cds", ascending=False, ignore_index=True)
    mean = float(frame["cds"].mean())
    total = float(((frame["cds"] - mean) ** 2).sum())
    between = float((table["rows"] * (table["mean_cds"] - mean) ** 2).sum())
    spread = float(table["mean_cds"].max() - table["mean_cds"].min())
    return CdsSpread(
        grouping,
        table,
        spread=spread,
        relative_spread=spread / mean if mean else float("nan"),
        between_share=between / total if total else 0.0,
    )


def folder_spread(folder: str | Path, *, seed: int | None = None, label_field: str = "category") -> list[CdsSpread]:
    """The CDS spread over clusters, then over the rows' `label_field` values where at least two are found, of a
    `paser select` folder (its clusters.parquet), or with `seed` of a run's `shared/` (clusters-s{seed}.parquet).
    Labels are read from the folder's corpus.parquet raw rows, of the clustered (pool) rows only. Refuses a
    folder without scores.parquet or the clustering (FileNotFoundError naming the file)."""
    root = Path(folder)
    scores_path = SelectFolder(root).scores
    clusters_path = SelectFolder(root).clusters if seed is None else SharedFolder(root).cluster_table(seed)
    for path in (scores_path, clusters_path):
        if not path.is_file():
            raise FileNotFoundError(f"{root}: no {path.name} (score and cluster the pool first: paser select)")
    scores = pd.read_parquet(scores_path)
    scores["id"] = scores["id"].astype(str)
    scores = scores.set_index("id")
    cds, tokens = scores["cds"], scores["prompt_tokens"] + scores["response_tokens"]
    clusters = pd.read_parquet(clusters_path)
    clusters["id"] = clusters["id"].astype(str)
    spreads = [cds_spread(cds, clusters.set_index("id")["cluster"], "cluster", tokens)]
    corpus = SelectFolder(root).corpus
    labels = corpus_labels(corpus, label_field) if corpus.is_file() else pd.Series(dtype=object)
    labels = labels[labels.index.isin(clusters["id"])]  # the pool's rows: what the clusters hold
    if labels.nunique() >= 2:
        spreads.append(cds_spread(cds, labels, label_field, tokens))
    return spreads


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a `paser select` output folder, or a run's shared/ with --seed")
    parser.add_argument("--seed", type=int, help="read a run's clusters-s{SEED}.parquet (a run's shared/)")
    parser.add_argument("--label-field", default="category", help="the raw-row field of the categories")
    args = parser.parse_args(argv)
    spreads = folder_spread(args.folder, seed=args.seed, label_field=args.label_field)
    pool_tokens = spreads[0].table["tokens"].sum()
    for spread in spreads:
        print(f"## CDS by {spread.grouping}\n")
        print("\n".join(spread.markdown()) + "\n")
    shares = ", ".join(f"{share:.0%}: {share * pool_tokens:,.0f}t" for share in (0.03, 0.1, 0.3))
    print(f"pool: {pool_tokens:,.0f} prompt + response tokens per pass; token budgets {shares}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
