"""Regenerate the generated sections of README.md and experiments/LOG.md from code and results.

Sections live between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` markers; each is
produced by a function here, so no table in either file is typed by hand. README.md holds
the ladders and results; experiments/LOG.md, the record of the selection rounds, holds the
candidate tables. A test checks both files are current.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from .phases_table import phases_markdown
from .report import readme_results_sections

#: The files with generated sections, relative to the repository root.
GENERATED_FILES = ("README.md", "experiments/LOG.md", "experiments/SPEED.md")


def repo_root() -> Path:
    """The checkout this module sits in (an editable install's source tree)."""
    return Path(__file__).resolve().parents[1]


def _sections() -> dict[str, Callable[[], str]]:
    sections: dict[str, Callable[[], str]] = {
        "mnist-phases": lambda: phases_markdown("mnist"),
        "cifar10-phases": lambda: phases_markdown("cifar10"),
    }
    sections.update(readme_results_sections())
    return sections


def section_names() -> list[str]:
    """Every section name a file may mark for generation."""
    return list(_sections())


_MARKER = re.compile(r"^<!-- BEGIN (\S+) -->$", re.M)  # a marker is a line of its own


def render(text: str) -> str:
    """``text`` with every marked section regenerated; sections it does not mark are skipped.

    A marker naming no known section is an error, not a section silently left as it was.
    """
    sections = _sections()
    unknown = sorted(set(_MARKER.findall(text)) - set(sections))
    if unknown:
        raise ValueError(f"no generator for marked section(s) {unknown}; known: {sorted(sections)}")
    for name, make in sections.items():
        pattern = re.compile(rf"(<!-- BEGIN {name} -->\n).*?(<!-- END {name} -->)", re.S)
        if pattern.search(text):
            text = pattern.sub(lambda m: m.group(1) + make().rstrip() + "\n" + m.group(2), text)
    return text


def update_readme(path: str | Path) -> bool:
    """Rewrite the generated sections of ``path``; return True if anything changed."""
    path = Path(path)
    old = path.read_text()
    new = render(old)
    if new != old:
        path.write_text(new)
    return new != old


def generated_paths(root: str | Path | None = None) -> list[Path]:
    root = Path(root) if root is not None else repo_root()
    return [root / name for name in GENERATED_FILES]


def stale_files(root: str | Path | None = None) -> list[Path]:
    """The generated files whose sections differ from what the code renders now; writes nothing."""
    return [p for p in generated_paths(root) if render(p.read_text()) != p.read_text()]


def update_all(root: str | Path | None = None) -> list[Path]:
    """Rewrite README.md and experiments/LOG.md; return the files that changed."""
    return [p for p in generated_paths(root) if update_readme(p)]
