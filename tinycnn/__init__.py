"""tinycnn: tiny CNNs for MNIST and CIFAR-10 under hard parameter budgets.

The public API is small and stable: ``build``, ``ladder``, ``get_phase``, ``fit``,
``count_params``, ``count_macs``, ``fit_width``, ``load_model``, ``load_splits``.
Everything else may change.
"""
from .budget import check_budget, count_macs, count_params, fit_width, phase_cost
from .build import build
from .checkpoint import load_model, save_model
from .data import load_dataset, load_splits
from .engine import FitResult, fit
from .errors import TinyCNNError
from .ladders import get_phase, ladder
from .spec import PhaseSpec, parse_arch

__version__ = "0.1.0"
__all__ = [
    "FitResult", "PhaseSpec", "TinyCNNError", "build", "check_budget", "count_macs", "count_params",
    "fit", "fit_width", "get_phase", "ladder", "load_dataset", "load_model", "load_splits",
    "parse_arch", "phase_cost", "save_model",
]
