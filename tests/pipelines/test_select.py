"""End-to-end `paser select` on tiny random models and the built-in demo corpus."""

import json
import weakref

import pandas as pd
import pytest

from paser.data.demo import demo_rows
from paser.pipelines.cli import main
from paser.pipelines.config import SelectConfig, load_config
from paser.pipelines.select import format_summary, run_select

ARTIFACTS = ("selection.jsonl", "scores.parquet", "clusters.parquet", "stats.json")


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    rows = demo_rows(rows_per_skill=12)
    rows += [
        {"instruction": "Say hi.", "input": "", "output": ""},  # empty response
        {"instruction": "Say hi.", "input": "", "output": None},  # missing output
        dict(rows[0]),  # exact duplicate
    ]
    path = tmp_path_factory.mktemp("corpus") / "rows.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


def select_config(corpus_file, original, pruned, out, *extra):
    overrides = [
        f"corpus.path={corpus_file}",
        f"models.original={original}",
        f"models.pruned={pruned}",
        "models.dtype=fp32",
        "selection.budget=15",
        "clustering.n_clusters=6",
        f"out={out}",
        *extra,
    ]
    return load_config(SelectConfig, None, overrides)


@pytest.fixture(scope="module")
def first_run(corpus_file, tiny_model_dir, perturbed_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("select") / "run"
    return run_select(select_config(corpus_file, tiny_model_dir, perturbed_model_dir, out))


def test_select_writes_every_artifact(first_run):
    for name in ARTIFACTS:
        assert (first_run.out_dir / name).is_file(), name


def test_exactly_the_budget_is_selected_with_scores_attached(first_run):
    rows = [json.loads(line) for line in (first_run.out_dir / "selection.jsonl").read_text().splitlines()]
    assert len(rows) == 15
    assert len({row["id"] for row in rows}) == 15
    assert all({"instruction", "output", "id", "cluster", "cds", "ies"} <= row.keys() for row in rows)
    assert all(row["cds"] > 0 for row in rows)


def test_bad_rows_are_counted_in_stats(first_run):
    stats = json.loads((first_run.out_dir / "stats.json").read_text())
    assert stats["skipped"] == {"duplicate": 1, "empty_response": 1, "missing_field:output": 1}
    assert stats["totals"]["rows_read"] == 6 * 12 + 3
    assert stats["totals"]["rows_scored"] == 6 * 12


def test_stats_per_cluster_add_up(first_run):
    stats = json.loads((first_run.out_dir / "stats.json").read_text())
    clusters = stats["clusters"]
    assert sum(row["size"] for row in clusters) == 72
    assert sum(row["selected"] for row in clusters) == 15
    assert sum(row["budget"] for row in clusters) == 15
    assert {"versions", "models", "config", "strategy", "embedding"} <= stats.keys()


def test_scores_and_clusters_cover_every_valid_row(first_run):
    scores = pd.read_parquet(first_run.out_dir / "scores.parquet")
    clusters = pd.read_parquet(first_run.out_dir / "clusters.parquet")
    assert len(scores) == len(clusters) == 72
    assert list(scores["id"]) == list(clusters["id"])
    assert {"cds", "prompt_tokens", "response_tokens", "nll_original", "nll_pruned"} <= set(scores.columns)


def test_same_seed_gives_identical_selection(first_run, corpus_file, tiny_model_dir, perturbed_model_dir, tmp_path):
    second = run_select(select_config(corpus_file, tiny_model_dir, perturbed_model_dir, tmp_path / "again"))
    assert (second.out_dir / "selection.jsonl").read_bytes() == (first_run.out_dir / "selection.jsonl").read_bytes()


def test_identical_models_score_zero_everywhere_and_are_warned_about(corpus_file, tiny_model_dir, tmp_path, capsys):
    output = run_select(
        select_config(corpus_file, tiny_model_dir, tiny_model_dir, tmp_path / "same", "selection.strategy=random")
    )
    assert (output.scores["cds"] == 0.0).all()
    assert "warning: every row scored CDS 0" in capsys.readouterr().out
    assert "warning: every row scored CDS 0" in format_summary(output)


def test_cli_select_prints_a_summary(corpus_file, tiny_model_dir, perturbed_model_dir, tmp_path, capsys):
    status = main(
        [
            "select",
            "--original",
            str(tiny_model_dir),
            "--pruned",
            str(perturbed_model_dir),
            "--corpus",
            str(corpus_file),
            "--budget",
            "0.25",
            "--strategy",
            "cds_topk",
            "--clusters",
            "4",
            "--dtype",
            "fp32",
            "--out",
            str(tmp_path / "cli"),
        ]
    )
    printed = capsys.readouterr().out
    assert status == 0
    assert "cds_topk: 18 of 72 scored rows" in printed
    assert "selection.jsonl" in printed


def test_cli_select_with_a_token_budget_stays_within_its_tokens(
    corpus_file, tiny_model_dir, perturbed_model_dir, tmp_path, capsys
):
    out = tmp_path / "tokens"
    arguments = ["--original", str(tiny_model_dir), "--pruned", str(perturbed_model_dir), "--corpus", str(corpus_file)]
    arguments += ["--budget", "500t", "--clusters", "4", "--dtype", "fp32", "--out", str(out)]
    status = main(["select", *arguments])
    printed = capsys.readouterr().out
    assert status == 0
    stats = json.loads((out / "stats.json").read_text())
    totals = stats["totals"]
    assert totals["budget_requested"] == "500t" and totals["budget_kind"] == "tokens"
    assert totals["budget_tokens"] == 500 and totals["budget"] is None
    scores = pd.read_parquet(out / "scores.parquet").set_index("id")
    ids = [json.loads(line)["id"] for line in (out / "selection.jsonl").read_text().splitlines()]
    tokens = int((scores.loc[ids, "prompt_tokens"] + scores.loc[ids, "response_tokens"]).sum())
    assert 0 < tokens == totals["selected_tokens"] == stats["strategy"]["selected_tokens"] <= 500
    assert totals["selected"] == len(ids)
    assert sum(row["selected_tokens"] for row in stats["clusters"]) == tokens
    assert sum(row["budget"] for row in stats["clusters"]) == 500
    assert f"budget 500t: {tokens:,} tokens used" in printed


def test_cli_unknown_strategy_is_a_one_line_error(corpus_file, tiny_model_dir, tmp_path, capsys):
    status = main(
        [
            "select",
            "--pruned",
            str(tiny_model_dir),
            "--corpus",
            str(corpus_file),
            "--strategy",
            "magic",
            "--out",
            str(tmp_path / "x"),
        ]
    )
    error = capsys.readouterr().err
    assert status == 2
    assert "unknown" in error and "paser" in error and "random" in error


def test_cli_missing_corpus_names_the_file(tiny_model_dir, tmp_path, capsys):
    status = main(
        [
            "select",
            "--pruned",
            str(tiny_model_dir),
            "--corpus",
            str(tmp_path / "none.jsonl"),
            "--out",
            str(tmp_path / "x"),
        ]
    )
    assert status == 2
    assert "none.jsonl" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("strategy", "options"),
    [
        ("paser", "{manifold: false}"),
        ("paser", "{ccg: false, ranking: cds, degradation_allocation: false}"),
        ("random", "{}"),
        ("full", "{}"),
        ("loss", "{}"),
        ("ifd", "{}"),
        ("kmeans_diverse", "{}"),
    ],
)
def test_every_strategy_runs_through_the_pipeline(
    strategy, options, corpus_file, tiny_model_dir, perturbed_model_dir, tmp_path
):
    config = select_config(
        corpus_file,
        tiny_model_dir,
        perturbed_model_dir,
        tmp_path / "run",
        f"selection.strategy={strategy}",
        f"selection.options={options}",
    )
    output = run_select(config)
    expected = 72 if strategy == "full" else 15
    assert len(output.selection) == expected
    assert sum(row["selected"] for row in output.stats["clusters"]) == expected
    if strategy == "ifd":
        assert "nll_pruned_unconditioned" in output.scores.columns


def test_cluster_coordinates_make_a_two_dimensional_map(first_run):
    clusters = pd.read_parquet(first_run.out_dir / "clusters.parquet")
    assert clusters["coordinate_0"].std() > 0
    assert clusters["coordinate_1"].std() > 0


def test_rerun_with_another_budget_reuses_the_score_shards(corpus_file, tiny_model_dir, perturbed_model_dir, tmp_path):
    run_select(select_config(corpus_file, tiny_model_dir, perturbed_model_dir, tmp_path / "run"))
    shards = sorted((tmp_path / "run" / "score_shards").glob("shard-*.parquet"))
    written = [shard.stat().st_mtime_ns for shard in shards]
    output = run_select(
        select_config(corpus_file, tiny_model_dir, perturbed_model_dir, tmp_path / "run", "selection.budget=20")
    )
    assert len(output.selection) == 20
    assert [shard.stat().st_mtime_ns for shard in shards] == written
    # The CCG's concepts were kept for this rerun.
    assert list((tmp_path / "run" / "concept_cache").glob("shard-*.done"))


def test_topk_scoring_runs_one_model_at_a_time_and_tracks_exact_scores(
    first_run, corpus_file, tiny_model_dir, perturbed_model_dir, tmp_path, monkeypatch
):
    from paser.pipelines import engines

    loaded, alive = [], []
    real_load_model = engines.load_model

    def tracking_load_model(name, *args):
        # Only one model may be alive at once: the previous one must have been collected.
        assert not any(reference() is not None for reference in alive), "two models in memory at once"
        model, tokenizer = real_load_model(name, *args)
        loaded.append(str(name))
        alive.append(weakref.ref(model))
        return model, tokenizer

    monkeypatch.setattr(engines, "load_model", tracking_load_model)
    output = run_select(select_config(corpus_file, tiny_model_dir, perturbed_model_dir, tmp_path / "run", "topk.k=64"))
    assert loaded == [str(tiny_model_dir), str(perturbed_model_dir)]
    assert len(output.selection) == 15
    assert (tmp_path / "run" / "topk_cache" / "meta.json").is_file()
    exact = first_run.scores.set_index("id")["cds"]
    approximate = output.scores.set_index("id")["cds"]
    assert approximate.index.equals(exact.index)
    assert (approximate - exact).abs().max() < 0.1 * exact.mean()
    assert output.stats["models"]["topk"]["k"] == 64


def test_a_folder_scored_for_another_corpus_is_refused_before_anything_in_it_changes(
    corpus_file, tiny_model_dir, perturbed_model_dir, tmp_path
):
    out = tmp_path / "run"
    run_select(select_config(corpus_file, tiny_model_dir, perturbed_model_dir, out))
    before = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    other = tmp_path / "other.jsonl"
    other.write_text(
        "".join(json.dumps({**row, "output": row["output"] + " (edited)"}) + "\n" for row in demo_rows(12)),
        encoding="utf-8",
    )
    with pytest.raises(RuntimeError, match="holds the scores of another corpus"):
        run_select(select_config(other, tiny_model_dir, perturbed_model_dir, out))
    assert {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()} == before
    # The same corpus again is not a change: the folder is reused.
    run_select(select_config(corpus_file, tiny_model_dir, perturbed_model_dir, out))


def test_a_folder_scored_for_other_inputs_is_refused(corpus_file, tiny_model_dir, perturbed_model_dir, tmp_path):
    run_select(select_config(corpus_file, tiny_model_dir, perturbed_model_dir, tmp_path / "run"))
    with pytest.raises(RuntimeError, match="different inputs"):
        run_select(select_config(corpus_file, tiny_model_dir, tiny_model_dir, tmp_path / "run"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("selection.budget=0", "budget as a row count must be >= 1"),
        ("selection.budget=2.5", "budget"),
        ("selection.budget=500T", r"selection\.budget: '500T' is not a budget"),
        ("clustering.method=dbscan", "unknown clustering method 'dbscan'; known: kmeans, leiden, nmf, spectral"),
        ("clustering.manifold=tsne", "unknown manifold 'tsne'; known: diffusion, umap"),
        ("topk.estimator=exact", "unknown topk.estimator 'exact'; known: sampled_tail, bucket"),
        ("clustering.resolution=0", "clustering.resolution must be > 0"),
        ("clustering.n_clusters=100000", "clustering.n_clusters=100000: cannot make 100000 clusters from"),
    ],
)
def test_bad_settings_are_refused_before_any_model_loads(
    corpus_file, tiny_model_dir, tmp_path, monkeypatch, override, message
):
    def no_model_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the settings were checked")

    monkeypatch.setattr("paser.pipelines.engines.load_model", no_model_loading)
    # The checkpoints are checked (not loaded) before the output folder is made, so they must be real ones.
    config = select_config(corpus_file, tiny_model_dir, tiny_model_dir, tmp_path / "run", override)
    with pytest.raises(ValueError, match=message):
        run_select(config)


def test_rows_over_the_token_limit_are_flagged_or_skipped(
    first_run, corpus_file, tiny_model_dir, perturbed_model_dir, tmp_path
):
    lengths = first_run.scores["prompt_tokens"] + first_run.scores["response_tokens"]
    limit = int(lengths.median())
    over = int((lengths > limit).sum())
    truncating = run_select(
        select_config(
            corpus_file, tiny_model_dir, perturbed_model_dir, tmp_path / "cut", f"formatting.max_length={limit}"
        )
    )
    assert truncating.stats["flagged"] == {"truncated": over}
    assert f"kept but flagged: truncated {over}" in format_summary(truncating)
    assert int(truncating.scores["truncated"].sum()) == over
    assert len(truncating.stats["skipped_examples"]["truncated"]) == min(over, 5)
    skipping = run_select(
        select_config(
            corpus_file,
            tiny_model_dir,
            perturbed_model_dir,
            tmp_path / "skip",
            f"formatting.max_length={limit}",
            "formatting.overflow=skip",
        )
    )
    assert skipping.stats["skipped"]["too_long"] == over
    assert skipping.stats["totals"]["rows_scored"] == 72 - over


def test_the_corpus_is_never_held_as_sample_objects(corpus_file, tiny_model_dir, perturbed_model_dir, tmp_path):
    """`paser select` streams the corpus from its store: tokenising it (batches of 8 here) and embedding it
    (texts read shard by shard) never keep more than a batch of `Sample`s alive, even with the CCG's
    concept text (paser strategy) looked up by id."""
    import weakref

    from paser.selection import formatting, store

    alive = {"now": 0, "peak": 0, "made": 0}
    real = store._sample_from_row

    def counted(row, *, with_raw):
        sample = real(row, with_raw=with_raw)
        alive["now"] += 1
        alive["made"] += 1
        alive["peak"] = max(alive["peak"], alive["now"])
        weakref.finalize(sample, lambda: alive.__setitem__("now", alive["now"] - 1))
        return sample

    config = select_config(
        corpus_file, tiny_model_dir, perturbed_model_dir, tmp_path / "run", "embedding.shard_size=16"
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store, "_sample_from_row", counted)
        patch.setattr(formatting, "_TOKENIZE_BATCH_ROWS", 8)
        output = run_select(config)
    rows = output.stats["totals"]["rows_scored"]
    assert rows == 72 and alive["made"] >= rows  # every row was read (tokenised) ...
    # ... but never more than two batches alive at once (the next batch is built before the last is dropped).
    assert alive["peak"] <= 2 * 8 + 2


def test_rows_over_the_embedders_limit_are_counted_in_stats(tiny_model_dir, perturbed_model_dir, tmp_path):
    long_response = " ".join(["The committee reconsidered its stance on the unaffable proposal."] * 30)
    rows = demo_rows(rows_per_skill=12) + [
        {"instruction": f"Summarise the minutes of meeting {index}.", "input": "", "output": long_response}
        for index in range(3)
    ]
    corpus = tmp_path / "rows.jsonl"
    corpus.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    config = select_config(
        corpus,
        tiny_model_dir,
        perturbed_model_dir,
        tmp_path / "run",
        "corpus.embed_fields=[instruction, response]",
        "embedding.long_text=chunks",
    )
    output = run_select(config)
    expected = {"long_text": "chunks", "max_tokens": 256, "rows": 75, "rows_over_limit": 3}
    assert output.stats["embedding"] == expected
    assert json.loads((output.out_dir / "stats.json").read_text())["embedding"] == expected
    assert json.loads((output.out_dir / "embed_shards" / "meta.json").read_text())["long_text"] == "chunks"


def test_a_clamped_clustering_setting_is_in_the_stats_and_the_summary(
    first_run, corpus_file, tiny_model_dir, perturbed_model_dir, tmp_path
):
    import shutil

    # A copy of the first run's folder: its scores are reused, only clustering and selection run again.
    shutil.copytree(first_run.out_dir, tmp_path / "run")
    output = run_select(
        select_config(corpus_file, tiny_model_dir, perturbed_model_dir, tmp_path / "run", "clustering.n_neighbors=500")
    )
    rows = output.stats["totals"]["rows_scored"]
    assert output.stats["clustering"]["details"]["clamped"]["n_neighbors"] == {"asked": 500, "used": rows - 1}
    assert f"clustering.n_neighbors: 500 is too large for this pool, {rows - 1} was used" in format_summary(output)


# Rows whose own fields paser must carry through untouched: ids that repeat, hold "/", "../" or a newline, a
# field named like one paser adds (`cds`), a field only some rows have, and Alpaca and chat rows side by side.
MIXED_ROWS = [
    {"id": "dup", "instruction": "Add 2 and 3.", "input": "", "output": "5", "category": "math"},
    {"id": "dup", "messages": [{"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hello."}]},
    {"id": "a/b", "instruction": "Reverse 'abc'.", "output": "cba", "cds": "the user's own cds"},
    {
        "id": "../../etc",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": "Blue."},
        ],
    },
    {"id": "line\nbreak", "instruction": "Count the letters of 'tree'.", "input": "", "output": "4"},
    {"id": "x", "messages": [{"role": "user", "content": "Sort 3 1 2."}, {"role": "assistant", "content": "1 2 3"}]},
]


@pytest.fixture(scope="module")
def mixed_run(tiny_model_dir, perturbed_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixed")
    corpus = folder / "mixed.json"
    corpus.write_text(json.dumps(MIXED_ROWS, indent=1), encoding="utf-8")
    config = select_config(
        corpus,
        tiny_model_dir,
        perturbed_model_dir,
        folder / "run",
        "selection.strategy=full",
        "clustering.n_clusters=2",
        "clustering.lexical_weight=0",  # six rows share too few words for the lexical features
    )
    output = run_select(config)
    selected = [json.loads(line) for line in (output.out_dir / "selection.jsonl").read_text().splitlines()]
    return output, selected


def test_a_rows_own_id_and_fields_are_kept_beside_pasers_id(mixed_run):
    _, selected = mixed_run
    by_position = {int(row["id"]): row for row in selected}  # paser's id: the row's position in the source
    assert sorted(by_position) == list(range(len(MIXED_ROWS)))
    for position, source in enumerate(MIXED_ROWS):
        row = by_position[position]
        renamed = {("source_" + name if name in ("id", "cds") else name): value for name, value in source.items()}
        assert {name: row[name] for name in renamed} == renamed
        assert set(row) == set(renamed) | {"id", "cluster", "cds", "ies"}
    assert isinstance(by_position[2]["cds"], float) and by_position[2]["source_cds"] == "the user's own cds"


def test_the_dataset_keeps_every_field_of_a_mixed_corpus_of_alpaca_and_chat_rows(mixed_run):
    from datasets import load_from_disk

    output, selected = mixed_run
    dataset = load_from_disk(str(output.out_dir / "dataset"))
    assert {"messages", "instruction", "output", "category", "source_id", "source_cds"} <= set(dataset.column_names)
    for row, written in zip(dataset, selected, strict=True):
        assert {name: value for name, value in row.items() if value is not None} == written
    chat = [row for row in dataset if row["messages"] is not None]
    assert sorted(row["source_id"] for row in chat) == ["../../etc", "dup", "x"]
