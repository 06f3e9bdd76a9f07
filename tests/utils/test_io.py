"""The cached sha256: reused while a file is provably unchanged, never trusted after any change."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from auto_quantize_model.utils.io import sha256_cache_path, sha256_file_cached


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_second_call_reads_the_cache_not_the_file(tmp_path):
    """A planted digest under the file's own stamp is returned as is: the file was not read again."""
    model = tmp_path / "m.onnx"
    model.write_bytes(b"model bytes")
    assert sha256_file_cached(model) == _digest(model)
    cache = sha256_cache_path(model)
    record = json.loads(cache.read_text())
    cache.write_text(json.dumps({**record, "sha256": "planted"}))
    assert sha256_file_cached(model) == "planted"


def test_same_size_rewrite_with_restored_mtime_is_rehashed(tmp_path):
    """Same size, mtime set back with os.utime: ctime still moved, so the old digest is not trusted."""
    model = tmp_path / "m.onnx"
    model.write_bytes(b"AAAA")
    first = sha256_file_cached(model)
    before = os.stat(model)
    with open(model, "r+b") as handle:  # in place: same inode, same size
        handle.write(b"BBBB")
    os.utime(model, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(model).st_mtime_ns == before.st_mtime_ns
    assert sha256_file_cached(model) == _digest(model) != first


def test_a_file_moved_into_place_is_rehashed(tmp_path):
    """A different file under the same name (new inode, copied mtime) gets its own digest."""
    model, other = tmp_path / "m.onnx", tmp_path / "other.onnx"
    model.write_bytes(b"old")
    other.write_bytes(b"new")
    shutil.copystat(model, other)
    first = sha256_file_cached(model)
    os.replace(other, model)
    assert sha256_file_cached(model) == _digest(model) != first


def test_unwritable_folder_still_hashes(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    model = folder / "m.onnx"
    model.write_bytes(b"x")
    folder.chmod(0o555)
    try:
        assert sha256_file_cached(model) == _digest(model)
        assert not sha256_cache_path(model).exists() or os.geteuid() == 0
    finally:
        folder.chmod(0o755)
