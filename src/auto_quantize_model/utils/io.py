"""Atomic file writes and small hashing helpers shared by every stage."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _default_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_DEFAULT_FILE_MODE = _default_file_mode()


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds.

    A crash mid-write therefore never leaves a truncated artifact under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, _DEFAULT_FILE_MODE)  # mkstemp creates 0600; artifacts are shared like any file
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return ``path``."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: Path, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically and return ``path``."""
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> Any:
    """Read a JSON file, naming the file in the error when it is not valid JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error}); delete or repair the file") from error


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Return the hex sha256 of a file, read in chunks so large checkpoints stay out of memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_cache_path(path: Path) -> Path:
    """Where :func:`sha256_file_cached` keeps the digest of ``path``: a hidden JSON beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.sha256.json")


def _file_stamp(path: Path) -> list[int]:
    """What changes whenever ``path`` may hold other bytes: device, inode, size, mtime and ctime (ns).

    A write changes mtime and ctime, a copy or a replace the inode; ``touch -d``/``os.utime`` can restore mtime but
    always moves ctime, which no user call can set back.
    """
    info = os.stat(path)
    return [info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]


def sha256_file_cached(path: Path) -> str:
    """:func:`sha256_file`, reused across processes while the file provably has not changed.

    The digest is kept with the file's stamp (:func:`_file_stamp`) in :func:`sha256_cache_path`, so a rerun in a new
    process reads a few bytes instead of the whole model; any change to the file misses the cache and rehashes.
    A folder the cache cannot be written to only costs the rehash.
    """
    path = Path(path)
    stamp = _file_stamp(path)
    cache = sha256_cache_path(path)
    with contextlib.suppress(OSError, ValueError):
        cached = json.loads(cache.read_text(encoding="utf-8"))
        if isinstance(cached, dict) and cached.get("stamp") == stamp and isinstance(cached.get("sha256"), str):
            return cached["sha256"]
    digest = sha256_file(path)
    if _file_stamp(path) == stamp:  # unchanged while it was read: the digest belongs to this stamp
        with contextlib.suppress(OSError):
            write_json_atomic(cache, {"file": path.name, "stamp": stamp, "sha256": digest})
    return digest


def tree_entries(folder: Path) -> list[tuple[str, int, int]]:
    """``(relative path, size, mtime_ns)`` of every file under ``folder``, sorted; symlinks are followed.

    A link whose target is gone gets size and mtime ``-1`` (listed, so it counts as a change).
    """
    folder = Path(folder)
    entries = []
    for directory, _, files in os.walk(folder, followlinks=True):
        for name in files:
            path = Path(directory) / name
            try:
                stat = path.stat()
                entries.append((path.relative_to(folder).as_posix(), stat.st_size, stat.st_mtime_ns))
            except OSError:  # dangling symlink or unreadable entry
                entries.append((path.relative_to(folder).as_posix(), -1, -1))
    return sorted(entries)


def entries_digest(entries: list[tuple[str, int, int]]) -> str:
    """sha256 of a :func:`tree_entries` listing: names, sizes and mtimes, not contents (cheap on 100k files)."""
    digest = hashlib.sha256()
    for name, size, mtime_ns in entries:
        digest.update(f"{name}\t{size}\t{mtime_ns}\n".encode())
    return digest.hexdigest()


def tree_digest(folder: Path) -> str:
    """:func:`entries_digest` of everything under ``folder``."""
    return entries_digest(tree_entries(folder))
