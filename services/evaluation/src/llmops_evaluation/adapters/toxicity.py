"""A user's own toxicity model, plugged in by name: ``LLMOPS_EVALUATION_TOXICITY_SCORER`` is
``package.module:function``, a callable that takes the list of generated answers and returns one
score in [0, 1] per answer (1: toxic). The evaluation imports it once, at start-up, so a name that
does not resolve stops the service there rather than failing every evaluation; a scorer that fails
or answers out of shape at run time rejects that candidate (``toxicity_scorer_error``).

Example (a module on ``PYTHONPATH``)::

    # my_safety.py
    def score(texts: list[str]) -> list[float]:
        return [my_classifier.probability_toxic(t) for t in texts]

    LLMOPS_EVALUATION_TOXICITY_SCORER=my_safety:score
"""

from __future__ import annotations

import importlib
from typing import Any


def load_callable(spec: str) -> Any:
    """The callable ``module:attribute`` names (``attribute`` may be dotted); ``ValueError`` saying
    why when it does not resolve to a callable."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"toxicity scorer {spec!r} must be 'module:function'")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"toxicity scorer {spec!r}: cannot import {module_name!r}: {error}") from error
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"toxicity scorer {spec!r}: {module_name!r} has no {attribute!r}") from None
    if not callable(target):
        raise ValueError(f"toxicity scorer {spec!r} is not callable")
    return target
