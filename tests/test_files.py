"""One implementation of atomic writes, folder swaps and the cache folder (mlxlab.files), and checkpoints that
are never missing: a crash between the two renames of a re-saved checkpoint leaves the old one recoverable."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mlxlab.files import atomic_path, atomic_write, cache_dir, recover_dir, replace_dir


def test_atomic_write_leaves_no_temporary_and_keeps_the_old_file_on_error(tmp_path):
    path = tmp_path / "deep" / "report.json"
    atomic_write(path, "one\n")
    atomic_write(path, b"two\n")
    assert path.read_text() == "two\n" and os.listdir(path.parent) == ["report.json"]
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half of thr")
            raise RuntimeError("the writer died")
    assert path.read_text() == "two\n" and os.listdir(path.parent) == ["report.json"]
    with atomic_path(tmp_path / "weights.safetensors", suffix=".safetensors") as tmp:
        assert tmp.name.endswith(".safetensors") and tmp.name.startswith(".")
        tmp.write_bytes(b"x")
    assert (tmp_path / "weights.safetensors").read_bytes() == b"x"


def test_replace_dir_and_recovery(tmp_path):
    final, staging = tmp_path / "model", tmp_path / "model.tmp"
    final.mkdir()
    (final / "v").write_text("old")
    staging.mkdir()
    (staging / "v").write_text("new")
    replace_dir(staging, final)
    assert (final / "v").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    # a crash after the old folder was moved aside and before the new one arrived
    os.rename(final, tmp_path / "model.old")
    recover_dir(final)
    assert (final / "v").read_text() == "new"


def test_one_cache_folder_with_home_expanded(monkeypatch, tmp_path):
    import mlxlab.taxonomy.documents
    import mlxlab.models

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("MLXLAB_CACHE", "~/my-cache")
    assert cache_dir() == tmp_path / "my-cache" and cache_dir().is_dir()
    assert mlxlab.taxonomy.documents.cache_dir is cache_dir and mlxlab.models.cache_dir is cache_dir


def _tiny_state():
    import mlx.nn as nn
    import mlx.optimizers as optim

    model = nn.Linear(4, 2)
    optimizer = optim.Adam(learning_rate=1e-3)
    optimizer.init(model.trainable_parameters())
    return model, optimizer


def test_a_resaved_checkpoint_is_never_missing(tmp_path, monkeypatch):
    from mlxlab.train.checkpoints import checkpoints, save_checkpoint

    model, optimizer = _tiny_state()
    save_checkpoint(tmp_path, 10, model, optimizer, {"step": 10, "run": "first"}, {})
    real = os.rename

    def crash_on_the_way_in(src, dst):
        if Path(src).name.endswith(".tmp"):            # the new checkpoint moving in
            raise OSError("killed")
        return real(src, dst)

    monkeypatch.setattr(os, "rename", crash_on_the_way_in)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, 10, model, optimizer, {"step": 10, "run": "second"}, {})
    monkeypatch.setattr(os, "rename", real)
    found = checkpoints(tmp_path)                         # puts the old one back
    assert list(found) == [10]
    assert json.loads((found[10] / "state.json").read_text())["run"] == "first"
    save_checkpoint(tmp_path, 10, model, optimizer, {"step": 10, "run": "second"}, {})
    assert json.loads((checkpoints(tmp_path)[10] / "state.json").read_text())["run"] == "second"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["iter_000010"]
