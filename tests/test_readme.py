"""README promises: its tables are generated and current, and CI runs its test command."""
import re
from pathlib import Path

from tinycnn.readme import render

ROOT = Path(__file__).resolve().parents[1]


def test_generated_sections_are_current():
    text = (ROOT / "README.md").read_text()
    assert "<!-- BEGIN mnist-phases -->" in text
    assert render(text) == text, "README is stale: run `python experiments/make_readme.py`"


def test_ci_runs_the_readme_commands():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
    install, test_cmd = blocks[0].strip(), blocks[1].strip()
    assert test_cmd in ci.splitlines()
    for step in ("pip install torch==2.14.1 torchvision==0.29.1", 'pip install -e ".[test]"'):
        assert step in install and step.replace("pip install", "pip install --quiet") in ci
