"""Static facts about the supported datasets (shape, classes, normalisation).

Kept apart from `data.py` so the builder can size the input layer and bake the
normalisation into the model without importing any I/O code.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import SpecError


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    channels: int
    size: int  # images are square
    classes: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, of the training set scaled to [0, 1]
    std: tuple[float, ...]
    budget: int  # parameter budget of the final phase
    train_size: int
    test_size: int
    # Whether a left-right mirror keeps an image's class (a mirrored digit is another shape);
    # test-time flip augmentation is refused where it does not.
    mirror_invariant: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.classes)


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist", channels=1, size=28,
        classes=tuple(str(i) for i in range(10)),
        mean=(0.1307,), std=(0.3081,),
        budget=1_500, train_size=60_000, test_size=10_000, mirror_invariant=False,
    ),
    "cifar10": DatasetInfo(
        name="cifar10", channels=3, size=32,
        classes=("airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck"),
        mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
        budget=140_000, train_size=50_000, test_size=10_000, mirror_invariant=True,
    ),
}


def dataset_info(name: str) -> DatasetInfo:
    """Look up a dataset by name; unknown names list the accepted ones."""
    try:
        return DATASETS[name.lower()]
    except KeyError:
        raise SpecError(
            f"unknown dataset {name!r}; accepted: {', '.join(DATASETS)}"
        ) from None
