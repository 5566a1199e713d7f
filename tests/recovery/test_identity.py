"""A checkpoint folder's cheap identity (recovery/identity.py), the key of caches of what a model computed."""

from __future__ import annotations

import shutil
from pathlib import Path

from paser.recovery.identity import checkpoint_identity


def test_checkpoint_identity_changes_when_the_folder_is_pruned_again(pruned_dir, tmp_path):
    copy = Path(shutil.copytree(pruned_dir, tmp_path / "copy"))
    first = checkpoint_identity(copy)
    assert first == checkpoint_identity(copy)
    (copy / "pruning.json").write_text((copy / "pruning.json").read_text().replace("magnitude", "wanda"))
    assert checkpoint_identity(copy) != first


def test_a_hub_id_has_no_checkpoint_identity():
    assert checkpoint_identity("some-org/some-model") is None
