"""Regenerate README.md's tables from the ladders and experiments/results.

    python experiments/make_readme.py
"""
from pathlib import Path

from tinycnn.readme import update_readme

if __name__ == "__main__":
    readme = Path(__file__).resolve().parents[1] / "README.md"
    print("README.md updated" if update_readme(readme) else "README.md already current")
