"""The Ray engine on a local 2-CPU Ray cluster: the same scores, embeddings and selection as the local engine,
and a job killed part-way resumes from its finished shards."""

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from paser.pipelines.config import SelectConfig, load_config
from paser.pipelines.select import run_select

ray = pytest.importorskip("ray", reason="the ray extra is not installed")

from paser.pipelines import ray_engine  # noqa: E402
from paser.pipelines.config import RayConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ray_cluster():
    ray_engine.connect(RayConfig(num_cpus=2))
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    from paser.data.demo import demo_rows

    path = tmp_path_factory.mktemp("ray_corpus") / "rows.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in demo_rows(rows_per_skill=6)) + "\n")
    return path


def config_for(corpus_file, original, pruned, out, engine, *extra):
    return load_config(
        SelectConfig,
        None,
        [
            f"corpus.path={corpus_file}",
            f"models.original={original}",
            f"models.pruned={pruned}",
            "models.dtype=fp32",
            "models.device=cpu",
            "selection.budget=10",
            "clustering.n_clusters=4",
            "scoring.shard_size=8",
            "scoring.show_progress=false",
            "embedding.shard_size=16",
            f"engine={engine}",
            "ray.actors=2",
            "ray.cpus_per_actor=1",
            f"out={out}",
            *extra,
        ],
    )


def run_on_both_engines(corpus_file, original, pruned, root, *extra):
    """`run_select` of the same config on the local engine and on Ray, under `root/local` and `root/ray`."""
    import torch

    # One thread here too, as in each 1-CPU actor, so both engines do the same arithmetic.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {
            engine: run_select(config_for(corpus_file, original, pruned, root / engine, engine, *extra))
            for engine in ("local", "ray")
        }
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def both_runs(ray_cluster, corpus_file, tiny_model_dir, perturbed_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("engines")
    return run_on_both_engines(corpus_file, tiny_model_dir, perturbed_model_dir, root)


def test_ray_scores_match_the_local_engine(both_runs):
    local, remote = both_runs["local"].scores, both_runs["ray"].scores
    assert len(local) == 36  # 6 skills x 6 rows
    assert local["id"].tolist() == remote["id"].tolist()
    assert (local["cds"] > 0).all()
    pd.testing.assert_frame_equal(local, remote, check_exact=False, atol=1e-5, rtol=0)


def test_ray_writes_the_same_shard_files(both_runs):
    for folder in ("score_shards", "embed_shards"):
        local_dir, ray_dir = (both_runs[engine].out_dir / folder for engine in ("local", "ray"))
        names = sorted(path.name for path in local_dir.glob("shard-*"))
        assert names and names == sorted(path.name for path in ray_dir.glob("shard-*"))
        assert (local_dir / "meta.json").read_text() == (ray_dir / "meta.json").read_text()
        for marker in local_dir.glob("shard-*.done"):
            assert marker.read_text() == (ray_dir / marker.name).read_text()
        assert not (ray_dir / "ray-input").exists()


def test_ray_embeddings_match_the_local_engine(both_runs):
    local, remote = (np.load(both_runs[engine].out_dir / "embed_shards" / "embeddings.npy") for engine in both_runs)
    assert local.shape == (36, 384)
    np.testing.assert_allclose(local, remote, atol=1e-5, rtol=0)


def test_ray_embeds_long_texts_in_chunks_as_the_local_engine(ray_cluster, tmp_path):
    """`embedding.long_text=chunks` on either engine: the same embeddings, token counts and summary."""
    import torch

    from paser.selection.embed import embed_in_shards

    long = " ".join(["The committee reconsidered its stance on the unaffable proposal, then voted again."] * 36)
    texts = ["Give three tips for staying healthy.", long, "What is the capital of Australia?", long[:1500], ""]
    ids = [f"row-{index}" for index in range(len(texts))]
    options = {"shard_size": 2, "show_progress": False, "long_text": "chunks"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each 1-CPU actor
    try:
        local = embed_in_shards(ids, texts, tmp_path / "local", **options)
    finally:
        torch.set_num_threads(threads)
    remote = ray_engine.embed_on_ray(ids, texts, tmp_path / "ray", RayConfig(actors=2, cpus_per_actor=1), **options)
    np.testing.assert_allclose(local, remote, atol=1e-5, rtol=0)
    names = ["meta.json", "summary.json", *sorted(path.name for path in (tmp_path / "local").glob("*.tokens.json"))]
    assert len(names) == 2 + 3
    for name in names:
        assert (tmp_path / "local" / name).read_text() == (tmp_path / "ray" / name).read_text()
    assert json.loads((tmp_path / "ray" / "summary.json").read_text())["rows_over_limit"] == 2


def test_ray_selects_the_same_rows(both_runs):
    assert both_runs["local"].selection["id"].tolist() == both_runs["ray"].selection["id"].tolist()
    assert both_runs["local"].clusters["cluster"].tolist() == both_runs["ray"].clusters["cluster"].tolist()


def ray_rerun_sends_nothing(local_run, corpus_file, original, pruned, *extra) -> None:
    """A ray rerun over a local run's folder reads every shard the local engine wrote: it sends no shard to the
    actors and returns the same scores."""
    sent = []
    real_write_inputs = ray_engine._write_inputs

    def spy(folder, tables):
        sent.extend(tables)
        return real_write_inputs(folder, tables)

    config = config_for(corpus_file, original, pruned, local_run.out_dir, "ray", *extra)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ray_engine, "_write_inputs", spy)
        rerun = run_select(config)
    assert sent == []
    pd.testing.assert_frame_equal(rerun.scores, local_run.scores)


def test_ray_resumes_a_local_run_without_recomputing(both_runs, corpus_file, tiny_model_dir, perturbed_model_dir):
    ray_rerun_sends_nothing(both_runs["local"], corpus_file, tiny_model_dir, perturbed_model_dir)


KILLED_JOB = """
import os, signal, sys
from paser.pipelines import ray_engine
from paser.pipelines.config import SelectConfig, load_config
from paser.pipelines.select import run_select

written = []
real_write = ray_engine.write_score_shard

def write_then_die(store, index, frame):
    real_write(store, index, frame)
    written.append(index)
    if len(written) == 3:
        os.kill(os.getpid(), signal.SIGKILL)

ray_engine.write_score_shard = write_then_die
run_select(load_config(SelectConfig, None, sys.argv[1:]))
"""


@pytest.mark.slow  # 70 s and more; test_ray_resumes_a_local_run_without_recomputing keeps resumption in CI
def test_killed_ray_job_resumes_from_its_finished_shards(
    ray_cluster, corpus_file, tiny_model_dir, perturbed_model_dir, tmp_path
):
    out = tmp_path / "run"
    # Shards of 4 rows: 9 shards; the job's driver is SIGKILLed right after writing its third.
    overrides = ["scoring.shard_size=4", "ray.actors=1"]
    config = config_for(corpus_file, tiny_model_dir, perturbed_model_dir, out, "ray", *overrides)
    args = [
        f"corpus.path={corpus_file}",
        f"models.original={tiny_model_dir}",
        f"models.pruned={perturbed_model_dir}",
        "models.dtype=fp32",
        "models.device=cpu",
        "selection.budget=10",
        "clustering.n_clusters=4",
        "scoring.show_progress=false",
        "embedding.shard_size=16",
        "engine=ray",
        "ray.cpus_per_actor=1",
        "ray.num_cpus=1",
        f"out={out}",
        *overrides,
    ]
    environment = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    environment["PYTHONPATH"] = str(REPO)
    job = subprocess.Popen(
        [sys.executable, "-c", KILLED_JOB, *args],
        cwd=REPO,
        env=environment,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _, stderr = job.communicate(timeout=300)
    finally:
        # The job's own Ray processes live in its session: end them too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == -signal.SIGKILL, stderr.decode()[-2000:]
    shard_dir = out / "score_shards"
    finished = sorted(shard_dir.glob("shard-*.done"))
    assert len(finished) == 3
    stamps = {path.name: path.stat().st_mtime_ns for path in finished}

    sent = []
    real_write_inputs = ray_engine._write_inputs

    def spy(folder, tables):
        if folder.parent == shard_dir:
            sent.extend(tables)
        return real_write_inputs(folder, tables)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ray_engine, "_write_inputs", spy)
        resumed = run_select(config)
    done_before = {int(name[len("shard-") : -len(".done")]) for name in stamps}
    assert sorted(sent) == sorted(set(range(9)) - done_before)
    assert {path.name: path.stat().st_mtime_ns for path in finished} == stamps
    assert len(resumed.scores) == 36 and (resumed.scores["cds"] > 0).all()


@pytest.fixture(scope="module")
def topk_runs(ray_cluster, corpus_file, tiny_model_dir, perturbed_model_dir, tmp_path_factory):
    """The same top-k selection (k=16, sampled tail) on both engines."""
    root = tmp_path_factory.mktemp("topk_engines")
    return run_on_both_engines(corpus_file, tiny_model_dir, perturbed_model_dir, root, "topk.k=16")


@pytest.mark.slow  # with its fixture (both engines' top-k runs): 80-90 s of CI; local top-k stays in CI
def test_ray_topk_matches_the_local_topk_path(topk_runs):
    """One model per actor pool: the cache shards (tail samples seeded per shard) and the scores are those of
    the local top-k path, and so is the selection."""
    local, remote = topk_runs["local"], topk_runs["ray"]
    assert remote.stats["models"]["engine"] == "ray"
    assert remote.stats["models"]["topk"]["k"] == 16
    assert (local.scores["cds"] > 0).all()
    pd.testing.assert_frame_equal(local.scores, remote.scores, check_exact=False, atol=1e-5, rtol=0)
    assert local.selection["id"].tolist() == remote.selection["id"].tolist()
    for folder in ("topk_cache", "topk_score_shards"):
        local_dir, ray_dir = local.out_dir / folder, remote.out_dir / folder
        assert (local_dir / "meta.json").read_text() == (ray_dir / "meta.json").read_text()
        markers = sorted(path.name for path in local_dir.glob("shard-*.done"))
        assert len(markers) == 5  # 36 rows in shards of 8
        assert markers == sorted(path.name for path in ray_dir.glob("shard-*.done"))
        assert not (ray_dir / "ray-input").exists()
    for path in (local.out_dir / "topk_cache").glob("shard-*.npz"):
        with np.load(path) as mine, np.load(remote.out_dir / "topk_cache" / path.name) as theirs:
            assert mine.files == theirs.files
            np.testing.assert_array_equal(mine["topk_ids"], theirs["topk_ids"])
            np.testing.assert_array_equal(mine["tail_sample_ids"], theirs["tail_sample_ids"])
            np.testing.assert_allclose(mine["topk_logprobs"], theirs["topk_logprobs"], atol=1e-5, rtol=0)


@pytest.mark.slow  # with its fixture (both engines' top-k runs): 80-90 s of CI; local top-k stays in CI
def test_ray_topk_resumes_a_local_topk_run(topk_runs, corpus_file, tiny_model_dir, perturbed_model_dir):
    ray_rerun_sends_nothing(topk_runs["local"], corpus_file, tiny_model_dir, perturbed_model_dir, "topk.k=16")
