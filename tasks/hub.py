"""Data sets from the Hugging Face Hub (``--data.dataset``): loaded once, a split found by its usual names."""

from __future__ import annotations

import datasets

from .io import UserError

# What a split is called on the Hub besides its own name (GLUE's MNLI: validation_matched).
SPLIT_NAMES = {"validation": ("validation", "validation_matched", "dev")}


def load_hub_dataset(name: str, config: str | None) -> datasets.DatasetDict:
    """The whole data set, or a UserError that says what to do offline."""
    try:
        return datasets.load_dataset(name, config)
    except Exception as err:
        raise UserError(
            f"could not load data set '{name}'"
            f"{f' ({config})' if config else ''} from the Hugging Face Hub "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). Offline? Pass "
            "local files with --data.train_file / --data.validation_file / --data.test_file."
        ) from None


def find_split(hub: datasets.DatasetDict, split: str) -> datasets.Dataset | None:
    """``split`` under the first of its names the data set has (None when it has none)."""
    for name in SPLIT_NAMES.get(split, (split,)):
        if name in hub:
            return hub[name]
    return None
