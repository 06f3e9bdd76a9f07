"""The published ``summary.md``: the run root's, every link rewritten to resolve inside the report folder."""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable
from pathlib import Path

from auto_quantize_model.reports.publish_files import PublishPlan
from auto_quantize_model.runs.run_root import RunRoot

# [text](target) and ![alt](target "title"); group 1 = "!"-prefix and text, group 2 = target.
MARKDOWN_LINK = re.compile(r"(!?\[[^\]]*\])\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def _run_root_relative(target: str, run_root: RunRoot) -> str | None:
    """The run-root-relative POSIX path a link target points at, or None when it leaves the run root."""
    path = Path(target) if os.path.isabs(target) else run_root.root / target
    try:
        relative = Path(os.path.normpath(path)).relative_to(run_root.root).as_posix()
    except ValueError:
        return None
    return "" if relative == "." else relative


def rewrite_summary_links(text: str, plan: PublishPlan) -> str:
    """Make every link of ``summary.md`` resolve inside the report folder.

    Links to copied files (or folders holding copied files) become report-relative; links to files
    left behind, or outside the run root, become code text with a pointer to MANIFEST.json, so no
    published link dangles. Web links and in-page anchors stay as they are.
    """
    copied = set(plan.copied)
    copied_dirs = {posixpath.dirname(path) for path in copied}
    copied_dirs |= {parent for path in copied_dirs for parent in _parents(path)}

    def replace(match: re.Match[str]) -> str:
        label, target = match.group(1), match.group(2)
        if URL_SCHEME.match(target) or target.startswith("#"):
            return match.group(0)
        path_part, _, anchor = target.partition("#")
        relative = _run_root_relative(path_part, plan.run_root)
        if relative is not None and (relative in copied or relative.rstrip("/") in copied_dirs):
            return f"{label}({relative or '.'}{'#' + anchor if anchor else ''})"
        where = "left in the run root, see MANIFEST.json" if relative is not None else "outside the run root"
        text_label = label.lstrip("!")[1:-1]
        shown = relative if relative is not None else path_part
        return f"{text_label} (`{shown}`, {where})" if text_label and text_label != shown else f"`{shown}` ({where})"

    return MARKDOWN_LINK.sub(replace, text)


def _parents(relative: str) -> Iterable[str]:
    while relative:
        relative = posixpath.dirname(relative)
        yield relative


def render_summary(plan: PublishPlan, run_id: str, partial: bool) -> str:
    """The report's summary.md: the run root's, links rewritten, with a note on where it came from."""
    text = rewrite_summary_links(plan.run_root.summary_md.read_text(encoding="utf-8"), plan)
    note = (
        f"> Published report `{run_id}`{' (**partial**: the run root was not complete)' if partial else ''}. "
        f"Weights, ONNX files, logs and other large files stay in the run root; [MANIFEST.json](MANIFEST.json) "
        "lists them with sizes and sha256s."
    )
    lines = text.splitlines()
    at = 1 if lines and lines[0].startswith("# ") else 0
    return "\n".join(lines[:at] + ["", note] + lines[at:]).rstrip() + "\n"
