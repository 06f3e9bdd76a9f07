"""A published report names no absolute path of the machine that made it.

The run root is named relative to the repository when it lies inside it (``tmp/.../bench-1``), else by the
report's run id; other paths inside the repository become repository-relative. Every copied text file, the
published ``summary.md`` and ``MANIFEST.json`` go through :meth:`PathRewrite.apply`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auto_quantize_model.runs.run_root import RunRoot

TEXT_SUFFIXES = frozenset({".md", ".csv", ".yaml", ".json"})
NOT_A_PATH_END = r"(?![\w.+-])"  # /x/run-1 must not match inside /x/run-10


def stage_checkouts(run_state: Mapping[str, Any]) -> set[Path]:
    """The project checkouts whose scripts ran the stages of ``run.json`` (a run resumed from a second checkout,
    or one made in a worktree and published from another): ``<checkout>/scripts/<dir>/<cli>.py`` in a command."""
    checkouts = set()
    for record in (run_state.get("stages") or {}).values():
        for arg in (record or {}).get("command") or ():
            path = Path(str(arg))
            is_cli = path.is_absolute() and path.suffix == ".py" and len(path.parents) > 3
            if is_cli and path.parents[1].name == "scripts":
                checkouts.add(path.parents[2])
    return checkouts


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
    def for_report(
        cls, run_root: RunRoot, run_id: str, repository: Path | None, checkouts: Iterable[Path] = ()
    ) -> PathRewrite:
        """``checkouts``: other checkouts of this project whose code ran stages (see :func:`stage_checkouts`);
        their paths become repository-relative like the repository's own."""
        pairs = [(re.escape(str(run_root.root)) + NOT_A_PATH_END, run_root_name(run_root, run_id, repository))]
        roots = [repository.resolve()] if repository is not None else []
        roots += sorted({Path(c) for c in checkouts} - set(roots), key=lambda c: -len(str(c)))
        for root in roots:
            escaped = re.escape(str(root))
            pairs += [(escaped + "/", ""), (escaped + NOT_A_PATH_END, ".")]
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
