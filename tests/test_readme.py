"""README promises: its tables (and LOG.md's) are generated and current, CI runs its test
command, its module map names every module, and its links resolve."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tinycnn.readme import GENERATED_FILES, render, section_names

ROOT = Path(__file__).resolve().parents[1]
MAKE_README = ROOT / "experiments" / "make_readme.py"


@pytest.mark.parametrize("name", GENERATED_FILES)
def test_generated_sections_are_current(name):
    text = (ROOT / name).read_text()
    assert "<!-- BEGIN " in text
    assert render(text) == text, f"{name} is stale: run `python experiments/make_readme.py`"


def test_every_section_is_rendered_somewhere():
    """Each generated section is marked in exactly one of the files: a table moved between
    README.md and LOG.md cannot get lost or doubled."""
    texts = {name: (ROOT / name).read_text() for name in GENERATED_FILES}
    assert "<!-- BEGIN mnist-phases -->" in texts["README.md"]
    assert "<!-- BEGIN mnist-candidates -->" in texts["experiments/LOG.md"]
    for section in section_names():
        holders = [name for name, text in texts.items()
                   if f"<!-- BEGIN {section} -->" in text and f"<!-- END {section} -->" in text]
        assert len(holders) == 1, f"section {section!r} is marked in {holders or 'no file'}"


def test_unknown_section_marker_is_an_error():
    """A marker without a generator (a renamed section, report.py failing to provide it)
    fails loudly instead of leaving the stale table in place and passing the check."""
    with pytest.raises(ValueError, match="no-such-section"):
        render("<!-- BEGIN no-such-section -->\nold table\n<!-- END no-such-section -->\n")


def test_ci_runs_the_readme_commands():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
    install, test_cmd = blocks[0].strip(), blocks[1].strip()
    assert test_cmd in ci.splitlines()
    for step in ("pip install torch==2.14.1 torchvision==0.29.1", 'pip install -e ".[test]"'):
        assert step in install and step.replace("pip install", "pip install --quiet") in ci


def _module_map() -> set[str]:
    """Module names in the table rows (| `name.py` | job |) of README's Layout section."""
    readme = (ROOT / "README.md").read_text()
    layout = re.search(r"^## Layout\n(.*?)(?=^## |\Z)", readme, re.S | re.M)
    assert layout, "README has no '## Layout' section"
    return set(re.findall(r"^\| `(\w+)\.py` \| \S.*\|$", layout.group(1), re.M))


def test_module_map_names_every_module():
    modules = {p.stem for p in (ROOT / "tinycnn").glob("*.py")} - {"__init__", "__main__"}
    mapped = _module_map()
    assert not modules - mapped, f"README's module map (## Layout) lacks {sorted(modules - mapped)}"
    assert not mapped - modules, f"README's module map names missing modules {sorted(mapped - modules)}"


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("name", GENERATED_FILES)
def test_relative_links_resolve(name):
    """Every relative link and image in README.md and LOG.md points at a file that exists,
    and an #anchor into a Markdown file at one of its headings."""
    path = ROOT / name
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # http(s)://, mailto:
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        assert dest.exists(), f"{name}: link to missing {target}"
        if anchor and dest.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", dest.read_text(), re.M)
            assert anchor in {_slug(h) for h in headings}, f"{name}: no heading for #{anchor}"


def _snapshot():
    return {name: ((ROOT / name).stat().st_mtime_ns, (ROOT / name).read_bytes())
            for name in GENERATED_FILES}


def _make_readme(*args):
    return subprocess.run([sys.executable, str(MAKE_README), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_make_readme_help_writes_nothing():
    before = _snapshot()
    done = _make_readme("--help")
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout and "--check" in done.stdout
    assert _snapshot() == before


def test_make_readme_rejects_unknown_flags_and_writes_nothing():
    before = _snapshot()
    done = _make_readme("--no-such-flag")
    assert done.returncode == 2
    assert "unrecognized arguments" in done.stderr
    assert _snapshot() == before


def test_make_readme_check_passes_on_current_files():
    before = _snapshot()
    done = _make_readme("--check")
    assert done.returncode == 0, done.stderr
    assert _snapshot() == before
