"""The prompt-injection probes (a YAML file; the package's ``data/injection_probes.yaml`` by default)."""

from __future__ import annotations

from pathlib import Path

import yaml

from llmops_evaluation.domain.generative_evaluation import Probes

DEFAULT_PROBES_FILE = Path(__file__).resolve().parents[1] / "data" / "injection_probes.yaml"


def load_probes(path: Path | None = None) -> Probes:
    """The probes of ``path``: ``canary_system_prompt`` (a string) and ``probes`` (strings)."""
    data = yaml.safe_load((path or DEFAULT_PROBES_FILE).read_text(encoding="utf-8")) or {}
    probes, canary = data.get("probes"), data.get("canary_system_prompt")
    if not isinstance(probes, list) or not all(isinstance(p, str) and p.strip() for p in probes) or not probes:
        raise ValueError(f"{path}: 'probes' must be a non-empty list of strings")
    if not isinstance(canary, str) or not canary.strip():
        raise ValueError(f"{path}: 'canary_system_prompt' must be a non-empty string")
    return Probes(texts=[p.strip() for p in probes], canary_system_prompt=" ".join(canary.split()))
