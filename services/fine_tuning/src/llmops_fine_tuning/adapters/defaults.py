"""Reading the defaults file (``deploy/training/defaults.yaml``)."""

from __future__ import annotations

from pathlib import Path

import yaml

from llmops_fine_tuning.domain.request import TrainingDefaults


def load_defaults(path: Path) -> TrainingDefaults:
    with path.open(encoding="utf-8") as handle:
        return TrainingDefaults.model_validate(yaml.safe_load(handle))
