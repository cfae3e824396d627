"""The service's one error hierarchy. A record that cannot be curated is not an error here: it is a
``Rejected`` verdict (``domain.validation.RejectReason``) that the consumer dead-letters."""

from __future__ import annotations


class IngestionError(Exception):
    """Anything the service itself cannot do (as opposed to a bad record)."""


class NothingToSnapshot(IngestionError):
    """No labelled record has been curated yet."""
