"""PII in generated answers, found with ``llmops_privacy``'s detectors (the gateway's own)."""

from __future__ import annotations

import threading
from typing import Any


class RedactorPiiFinder:
    """Counts PII findings per text. The ``Redactor`` (Presidio: seconds to import) is built on the
    first generation report, so a service that only monitors classifiers never pays for it."""

    def __init__(self, redactor: Any | None = None) -> None:
        self._redactor = redactor
        self._lock = threading.Lock()

    def __call__(self, text: str) -> int:
        if self._redactor is None:
            with self._lock:
                if self._redactor is None:
                    from llmops_privacy import Redactor

                    self._redactor = Redactor()
        return len(self._redactor.find(text))
