"""The per-token JSD the scorer keeps beside its shards (`DegradationConfig.keep_token_jsd`, selection/token_jsd)."""

import numpy as np
import pandas as pd
import pytest
import torch

from paser.selection import degradation
from paser.selection.config import DegradationConfig
from paser.selection.degradation import jensen_shannon, score_degradation
from paser.selection.token_jsd import read_token_jsd, read_token_jsd_file, write_token_jsd

QUIET = {"show_progress": False}
pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _kept(tmp_path, original, perturbed, encoded, **config):
    config = DegradationConfig(keep_token_jsd=True, **QUIET, **config)
    return score_degradation(original, perturbed, encoded, config, shard_dir=tmp_path), read_token_jsd(tmp_path)


def test_kept_token_jsd_averages_to_each_rows_cds(original, perturbed, encoded, tmp_path):
    scores, kept = _kept(tmp_path, original, perturbed, encoded, shard_size=16)
    assert set(kept) == set(scores["id"])
    for row in scores.itertuples():
        values = kept[row.id]
        assert values.dtype == np.float16 and len(values) == row.response_tokens
        # cds is the float64 mean of the float32 per-token JSD; float16 keeps ~3 significant digits of each.
        assert values.astype(np.float64).mean() == pytest.approx(row.cds, rel=1e-3, abs=1e-7)


def test_kept_token_jsd_is_the_jsd_at_each_response_position(original, perturbed, encoded, tmp_path):
    _, kept = _kept(tmp_path, original, perturbed, encoded[:3])
    for sample in encoded[:3]:
        ids = torch.tensor([sample.input_ids])
        with torch.no_grad():
            expected = jensen_shannon(
                torch.log_softmax(original(ids).logits[0].float(), dim=-1),
                torch.log_softmax(perturbed(ids).logits[0].float(), dim=-1),
            )[sample.prompt_length - 1 : -1]
        np.testing.assert_allclose(kept[sample.id].astype(np.float32), expected.numpy(), rtol=1e-3, atol=1e-6)


def test_keeping_token_jsd_leaves_the_scores_table_bitwise_unchanged(original, perturbed, encoded, tmp_path):
    plain = score_degradation(original, perturbed, encoded, DegradationConfig(shard_size=16, **QUIET))
    scores, _ = _kept(tmp_path, original, perturbed, encoded, shard_size=16)
    pd.testing.assert_frame_equal(scores, plain, check_exact=True)
    assert sorted(path.name for path in tmp_path.glob("shard-00000*")) == [
        "shard-00000.done",
        "shard-00000.parquet",
        "shard-00000.token_jsd.npz",
    ]


def test_shards_scored_without_token_jsd_are_scored_again_when_it_is_asked(
    original, perturbed, encoded, tmp_path, monkeypatch
):
    config = DegradationConfig(shard_size=16, **QUIET)
    first = score_degradation(original, perturbed, encoded, config, shard_dir=tmp_path)
    scores, kept = _kept(tmp_path, original, perturbed, encoded, shard_size=16)
    pd.testing.assert_frame_equal(scores, first, check_exact=True)
    assert len(kept) == len(encoded)
    monkeypatch.setattr(degradation, "_score_shard", lambda *args: pytest.fail("a finished shard was recomputed"))
    again, kept_again = _kept(tmp_path, original, perturbed, encoded, shard_size=16)
    pd.testing.assert_frame_equal(again, first, check_exact=True)
    assert all(np.array_equal(kept_again[row_id], values) for row_id, values in kept.items())


def test_keeping_token_jsd_without_a_shard_dir_or_with_topk_is_refused(original, perturbed, encoded, tmp_path):
    from paser.selection.topk import score_degradation_topk

    config = DegradationConfig(keep_token_jsd=True, **QUIET)
    with pytest.raises(ValueError, match="keep_token_jsd needs a shard_dir"):
        score_degradation(original, perturbed, encoded, config)
    with pytest.raises(ValueError, match="keep_token_jsd: top-k scoring"):
        score_degradation_topk(lambda: original, lambda: perturbed, encoded, config, tmp_path / "cache")


def test_token_jsd_file_round_trips_and_bad_paths_are_refused(tmp_path):
    values = [np.array([0.5, 0.25], dtype=np.float32), np.zeros(0), np.array([0.125])]
    path = write_token_jsd(tmp_path / "kept.npz", ["a", "b", "c"], values)
    kept = read_token_jsd_file(path)
    assert list(kept) == ["a", "b", "c"]
    assert [row.tolist() for row in kept.values()] == [[0.5, 0.25], [], [0.125]]
    assert read_token_jsd(path).keys() == kept.keys()
    with pytest.raises(ValueError, match="not found"):
        read_token_jsd(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="keep_token_jsd=true"):
        read_token_jsd(tmp_path)
    np.savez(tmp_path / "bad.npz", ids=np.array(["a"]), offsets=np.array([0, 3]), values=np.zeros(2, np.float16))
    with pytest.raises(ValueError, match="offsets do not split"):
        read_token_jsd(tmp_path / "bad.npz")


def test_the_ray_engine_refuses_to_keep_token_jsd_before_starting(encoded, tmp_path):
    from paser.pipelines.config import RayConfig
    from paser.pipelines.ray_engine import score_on_ray, score_topk_on_ray

    config = DegradationConfig(keep_token_jsd=True, **QUIET)
    with pytest.raises(ValueError, match="keep_token_jsd: the ray engine does not keep"):
        score_on_ray("original", "pruned", "fp32", encoded, config, tmp_path, RayConfig())
    with pytest.raises(ValueError, match="keep_token_jsd: top-k scoring"):
        score_topk_on_ray("original", "pruned", "fp32", encoded, config, tmp_path / "c", tmp_path / "s", RayConfig())
