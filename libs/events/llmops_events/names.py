"""The one pattern every name that becomes part of a path must match, as pydantic types.

A model name, a dataset id or an adapter name read from an event ends up in a file path (the
artifact store's ``models/<model>/<version>/``, the Triton repository's ``<model>__v<version>/``,
the adapters folder). Checked here, at the event boundary, a forged ``../../victim`` fails
decoding and goes to the DLQ (``schema_violation``, with the field and the rule in
``error.detail``) before any handler joins it into a path.

The rule: letters, digits, ``.``, ``_`` and ``-``; a letter or digit first (no ``.x``, no ``-x``
that a tool could read as an option); never two dots in a row (no ``..``); at most 128
characters. No ``/`` or ``\\`` at all, so a name is always exactly one path segment. The regex has
no look-ahead, so the JSON Schema published for other languages states the same rule.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field, ValidationInfo, ValidatorFunctionWrapHandler, WrapValidator
from pydantic_core import PydanticCustomError

NAME_MAX_LENGTH = 128
NAME_REGEX = r"^[A-Za-z0-9](?:\.?[A-Za-z0-9_-])*\.?$"
"""A letter or digit, then letters, digits, ``_``, ``-`` and single dots (``..`` cannot occur)."""
NAME_PATTERN = re.compile(NAME_REGEX)


def is_safe_name(name: object) -> bool:
    """Whether ``name`` is a string that may be one segment of a path (``NAME_REGEX``, length)."""
    return isinstance(name, str) and 0 < len(name) <= NAME_MAX_LENGTH and NAME_PATTERN.match(name) is not None


def _shown(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(str(value))} characters)"


def _explained(value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
    """Replace pydantic's generic "String should match pattern" with a sentence naming the value
    and the rule, so a DLQ entry reads as what it is: an unsafe name, refused."""
    try:
        return handler(value)
    except Exception as error:
        if isinstance(value, str) and not is_safe_name(value):
            raise PydanticCustomError(
                "unsafe_name",
                "{value} is not a safe name: it becomes a path segment, so it must match {regex}"
                " and be 1 to {limit} characters (no '/', no '..', no leading '.')",
                {"value": _shown(value), "regex": NAME_REGEX, "limit": NAME_MAX_LENGTH},
            ) from error
        raise


SafeName = Annotated[
    str,
    Field(min_length=1, max_length=NAME_MAX_LENGTH, pattern=NAME_REGEX),
    WrapValidator(_explained),
]
"""Any name that becomes one path segment."""

ModelName = Annotated[SafeName, Field(examples=["banking-intents"])]
"""A served model's name (``models/<model_name>/``, Triton's ``<model_name>__v<version>``)."""

DatasetId = Annotated[SafeName, Field(examples=["banking-20261128T101500Z-3f9a1c"])]
"""A dataset snapshot's id (``datasets/<dataset_id>/``)."""

AdapterName = Annotated[SafeName, Field(examples=["banking-assistant__v3"])]
"""A LoRA adapter's folder name under the causal-LM base's adapters directory."""

ModelVersion = Annotated[int, Field(ge=1)]
"""A model version: a positive integer (``models/<model_name>/<version>/``)."""
