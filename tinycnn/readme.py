"""Regenerate the README's generated sections from code and committed results.

Sections live between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` markers; each is
produced by a function here, so no table in the README is typed by hand. A test checks
the README is current.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from .phases_table import phases_markdown


def _sections() -> dict[str, Callable[[], str]]:
    sections: dict[str, Callable[[], str]] = {
        "mnist-phases": lambda: phases_markdown("mnist"),
        "cifar10-phases": lambda: phases_markdown("cifar10"),
    }
    try:
        from .report import readme_results_sections
    except ImportError:  # report not available
        return sections
    sections.update(readme_results_sections())
    return sections


def render(text: str) -> str:
    for name, make in _sections().items():
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
