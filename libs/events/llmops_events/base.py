"""The base every event payload derives from, and the registry of event types."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

EVENT_TYPE_PATTERN = re.compile(r"^llmops\.[a-z_]+\.[a-z_]+\.v[0-9]+$")

_REGISTRY: dict[str, type[EventData]] = {}


class EventData(BaseModel):
    """The ``data`` of a CloudEvent of this platform.

    Subclasses declare their CloudEvents ``type`` (``llmops.<noun>.<verb>.v<N>``), the topic
    they travel on and which field is the Kafka key. Unknown fields are ignored so that a
    consumer keeps working when a producer adds an optional field (a version only grows).
    """

    model_config = ConfigDict(extra="ignore", frozen=True, use_attribute_docstrings=True)

    event_type: ClassVar[str]
    topic: ClassVar[str]
    key_field: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        event_type = cls.__dict__.get("event_type")
        if event_type is None:
            return  # an intermediate base class
        if not EVENT_TYPE_PATTERN.match(event_type):
            raise ValueError(f"event type {event_type!r} is not of the form llmops.<noun>.<verb>.v<N>")
        if event_type in _REGISTRY:
            raise ValueError(f"event type {event_type!r} is defined twice")
        _REGISTRY[event_type] = cls

    @property
    def key(self) -> str:
        """The Kafka message key, as fixed by the topic's contract."""
        return str(getattr(self, self.key_field))


def event_types() -> dict[str, type[EventData]]:
    """Every registered event type, by CloudEvents type name."""
    import llmops_events.v1  # noqa: F401  (importing registers the models)

    return dict(_REGISTRY)


def model_for(event_type: str) -> type[EventData] | None:
    """The payload model of an event type, or None when the type is unknown."""
    return event_types().get(event_type)
