"""A published report names no absolute path of the machine that made it.

The run root is named relative to the repository when it lies inside it (``tmp/.../bench-1``), else by the
report's run id; other paths inside the repository become repository-relative. Every copied text file, the
published ``summary.md`` and ``MANIFEST.json`` go through :meth:`PathRewrite.apply`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from auto_quantize_model.runs.run_root import RunRoot

TEXT_SUFFIXES = frozenset({".md", ".csv", ".yaml", ".json"})
NOT_A_PATH_END = r"(?![\w.+-])"  # /x/run-1 must not match inside /x/run-10


def run_root_name(run_root: RunRoot, run_id: str, repository: Path | None) -> str:
    """How a published report names its run root: relative to the repository when inside it, else the run id."""
    if repository is not None and run_root.root.is_relative_to(repository.resolve()):
        return run_root.root.relative_to(repository.resolve()).as_posix()
    return run_id


@dataclass(frozen=True)
class PathRewrite:
    """Ordered (pattern, replacement) pairs: the run root first, then the repository."""

    pairs: tuple[tuple[re.Pattern[str], str], ...]

    @classmethod
    def for_report(cls, run_root: RunRoot, run_id: str, repository: Path | None) -> PathRewrite:
        pairs = [(re.escape(str(run_root.root)) + NOT_A_PATH_END, run_root_name(run_root, run_id, repository))]
        if repository is not None:
            repo = re.escape(str(repository.resolve()))
            pairs += [(repo + "/", ""), (repo + NOT_A_PATH_END, ".")]
        return cls(tuple((re.compile(pattern), replacement) for pattern, replacement in pairs))

    def apply(self, text: str) -> str:
        for pattern, replacement in self.pairs:
            text = pattern.sub(lambda _match, name=replacement: name, text)
        return text

    def apply_bytes(self, data: bytes) -> bytes:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return data
        return self.apply(text).encode("utf-8")

    def files(self, files: Mapping[str, bytes | Path]) -> dict[str, bytes | Path]:
        """``files`` with every text file that names a rewritten path replaced by its rewritten bytes."""
        rewritten: dict[str, bytes | Path] = {}
        for relative, source in files.items():
            if isinstance(source, Path) and source.suffix not in TEXT_SUFFIXES:
                rewritten[relative] = source
                continue
            data = source if isinstance(source, bytes) else source.read_bytes()
            new = self.apply_bytes(data)
            rewritten[relative] = source if new == data and isinstance(source, Path) else new
        return rewritten
