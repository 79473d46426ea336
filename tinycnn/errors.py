"""One exception family, so the CLI can turn every user mistake into a one-line message.

Each error says what was wrong, what is accepted, and where to look; the CLI prints it
without a traceback and exits with status 2.
"""


class TinyCNNError(Exception):
    """Base class for errors a user can act on (bad input, not a bug in tinycnn)."""


class SpecError(TinyCNNError, ValueError):
    """An unknown dataset, phase or block string, or an inconsistent spec."""


class BudgetError(TinyCNNError):
    """A model was asked to fit a parameter budget and does not."""


class DataError(TinyCNNError):
    """A dataset file is missing, corrupt or has the wrong shape."""


class CheckpointError(TinyCNNError):
    """A model or checkpoint file is missing, corrupt or not a tinycnn file."""


class RecipeError(TinyCNNError, ValueError):
    """A training recipe names an unknown field or an invalid value."""


class TrainingDiverged(TinyCNNError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class RunInterrupted(TinyCNNError):
    """A run was stopped (Ctrl-C); the message says how to continue it."""


class ExportError(TinyCNNError):
    """A model cannot be exported or quantised, or an export's inputs or output folder are unusable."""
