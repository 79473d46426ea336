"""``python -m tinycnn`` runs the CLI, for environments where the console script is not on PATH."""
from .cli import main

raise SystemExit(main())
