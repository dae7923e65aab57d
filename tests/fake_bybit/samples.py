"""Loads the recorded Bybit messages in `shared/bybit/samples/` that the fake builds its pushes from.

Read-only: the samples are evidence, never edited (see SOURCES.md beside them). Every getter returns a deep
copy, so a generator may mutate what it gets without changing what the next one sees.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

SAMPLES_ENV_VAR = "BYBIT_SAMPLES_DIR"

JsonObject = dict[str, Any]


def default_samples_dir() -> Path:
    """`$BYBIT_SAMPLES_DIR` when set, else `shared/bybit/samples` beside the repository."""
    override = os.environ.get(SAMPLES_ENV_VAR)
    if override:
        return Path(override)
    # tests/fake_bybit/samples.py -> parents[2] is the repo, parents[3] the folder that holds it.
    return Path(__file__).resolve().parents[3] / "shared" / "bybit" / "samples"


class Samples:
    """The `*.json` files of one samples directory, parsed once."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory if directory is not None else default_samples_dir()
        if not self.directory.is_dir():
            raise FileNotFoundError(f"Bybit samples directory not found: {self.directory} (set {SAMPLES_ENV_VAR})")
        self._messages: dict[str, JsonObject] = {}
        for path in sorted(self.directory.glob("*.json")):
            self._messages[path.stem] = json.loads(path.read_text(encoding="utf-8"))

    def names(self) -> list[str]:
        return sorted(self._messages)

    def get(self, name: str) -> JsonObject:
        """A fresh copy of the sample `name` (file name without `.json`)."""
        try:
            return copy.deepcopy(self._messages[name])
        except KeyError:
            raise KeyError(f"no sample {name}.json in {self.directory}") from None
