"""Regenerate the tables of README.md and experiments/LOG.md from the ladders and experiments/results.

    python experiments/make_readme.py          # rewrite both files' generated sections
    python experiments/make_readme.py --check  # exit 1 naming the stale files; writes nothing
"""
import argparse
import sys
from pathlib import Path

from tinycnn.readme import GENERATED_FILES, stale_files, update_all

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="make_readme.py",
        description="Regenerate the generated sections (between <!-- BEGIN name --> and "
                    "<!-- END name --> markers) of " + " and ".join(GENERATED_FILES)
                    + " from the ladders and the committed results under experiments/results/.")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 and name the files that are stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(ROOT)
        for path in stale:
            print(f"{path.relative_to(ROOT)} is stale: run `python experiments/make_readme.py`",
                  file=sys.stderr)
        if not stale:
            print(" and ".join(GENERATED_FILES) + " are current")
        return 1 if stale else 0
    changed = {p.relative_to(ROOT).as_posix() for p in update_all(ROOT)}
    for name in GENERATED_FILES:
        print(f"{name} {'updated' if name in changed else 'already current'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
