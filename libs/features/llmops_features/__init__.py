"""The Feast objects of curated data: entity, file sources, push sources, feature views.

Two feature views share the entity ``record_id``: ``curated_records`` (classifier records: a text
and maybe a label) and ``curated_instructions`` (chat-style instruction examples: every turn as
JSON, the last user turn as ``text`` and the reference answer as ``label``). Each has its own
sources and offline directory, so the classifier's view stays exactly what its readers know.

Defined in code (not discovered by ``feast apply`` scanning a folder) so the ingestion service applies
them to a repository under ``var/`` at start-up, and ``deploy/feast/features.py`` re-exports
them for a production feature repository.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from llmops_privacy.redaction import PiiKind

FEATURE_VIEW = "curated_records"
PUSH_SOURCE = "curated_records_push"
FILE_SOURCE = "curated_records_file"
ENTITY = "record_id"
TIMESTAMP_FIELD = "event_timestamp"
CREATED_FIELD = "created"

# Column → Feast type name; also the column order of the offline Parquet file.
STRING_FEATURES = ("tenant", "source", "text", "label", "language", "metadata_json", "occurred_at")
INT_FEATURES = ("length", "token_count", *(f"pii_{kind.value}" for kind in PiiKind))
FLOAT_FEATURES = ("non_alpha_share",)
FEATURES = (*STRING_FEATURES, *INT_FEATURES, *FLOAT_FEATURES)

# Instruction examples. ``text``/``label`` are the last user turn and the reference answer (so the
# descriptors and the snapshot columns mean what they mean for records); ``messages_json`` is every
# turn, ``output_format_json`` the declared answer format ("" when none), ``chat_tokens`` the
# length of the whole chat in tokens of the ingestion tokenizer's chat template.
INSTRUCTION_FEATURE_VIEW = "curated_instructions"
INSTRUCTION_PUSH_SOURCE = "curated_instructions_push"
INSTRUCTION_FILE_SOURCE = "curated_instructions_file"
INSTRUCTION_STRING_FEATURES = (*STRING_FEATURES, "messages_json", "output_format_json")
INSTRUCTION_INT_FEATURES = (*INT_FEATURES, "turn_count", "chat_tokens")
INSTRUCTION_FLOAT_FEATURES = FLOAT_FEATURES
INSTRUCTION_FEATURES = (*INSTRUCTION_STRING_FEATURES, *INSTRUCTION_INT_FEATURES, *INSTRUCTION_FLOAT_FEATURES)


@dataclass(frozen=True, slots=True)
class ViewSpec:
    """One feature view and its sources, by name, with its columns by type."""

    name: str
    push_source: str
    file_source: str
    string_features: tuple[str, ...]
    int_features: tuple[str, ...]
    float_features: tuple[str, ...]
    description: str

    @property
    def features(self) -> tuple[str, ...]:
        return (*self.string_features, *self.int_features, *self.float_features)


RECORDS_VIEW = ViewSpec(
    name=FEATURE_VIEW,
    push_source=PUSH_SOURCE,
    file_source=FILE_SOURCE,
    string_features=STRING_FEATURES,
    int_features=INT_FEATURES,
    float_features=FLOAT_FEATURES,
    description="Curated (redacted, de-duplicated) records with descriptors and PII counts.",
)
INSTRUCTIONS_VIEW = ViewSpec(
    name=INSTRUCTION_FEATURE_VIEW,
    push_source=INSTRUCTION_PUSH_SOURCE,
    file_source=INSTRUCTION_FILE_SOURCE,
    string_features=INSTRUCTION_STRING_FEATURES,
    int_features=INSTRUCTION_INT_FEATURES,
    float_features=INSTRUCTION_FLOAT_FEATURES,
    description=(
        "Curated (redacted, de-duplicated) instruction examples: every turn as JSON, the last user turn"
        " and the reference answer, the answer format, descriptors, chat length in tokens and PII counts."
    ),
)


def feature_definitions(offline_path: Path | str, *, instructions_offline_path: Path | str | None = None) -> list[Any]:
    """Entity, batch source, push source and feature view of records, with the offline Parquet at
    ``offline_path``; with ``instructions_offline_path``, then the batch source, push source and
    feature view of instruction examples too (the same entity)."""
    from feast import Entity, ValueType

    entity = Entity(
        name=ENTITY,
        join_keys=[ENTITY],
        value_type=ValueType.STRING,
        description="Tenant-scoped id of a curated record or instruction example: <tenant>/<record id>.",
    )
    definitions: list[Any] = [entity, *_view_definitions(RECORDS_VIEW, entity, offline_path)]
    if instructions_offline_path is not None:
        definitions += _view_definitions(INSTRUCTIONS_VIEW, entity, instructions_offline_path)
    return definitions


def _view_definitions(spec: ViewSpec, entity: Any, offline_path: Path | str) -> list[Any]:
    from feast import FeatureView, Field, FileSource, PushSource
    from feast.types import Float32, Int64, String

    file_source = FileSource(
        name=spec.file_source,
        path=str(offline_path),
        timestamp_field=TIMESTAMP_FIELD,
        created_timestamp_column=CREATED_FIELD,
    )
    push_source = PushSource(name=spec.push_source, batch_source=file_source)
    schema = [Field(name=name, dtype=String) for name in spec.string_features]
    schema += [Field(name=name, dtype=Int64) for name in spec.int_features]
    schema += [Field(name=name, dtype=Float32) for name in spec.float_features]
    view = FeatureView(
        name=spec.name,
        entities=[entity],
        ttl=timedelta(0),  # 0 = never expires: a labelled record stays training data
        source=push_source,
        online=True,
        schema=schema,
        description=spec.description,
    )
    return [file_source, push_source, view]


def offline_schema(spec: ViewSpec = RECORDS_VIEW) -> Any:
    """The Arrow schema of a view's offline Parquet files (records by default).

    The file must exist before ``apply`` and before the first push, and an empty file written
    from pandas would type every column ``null``, which later pushes cannot be cast to.
    """
    import pyarrow as pa

    timestamp = pa.timestamp("ns", tz="UTC")
    return pa.schema(
        [pa.field(ENTITY, pa.string())]
        + [pa.field(name, pa.string()) for name in spec.string_features]
        + [pa.field(name, pa.int64()) for name in spec.int_features]
        + [pa.field(name, pa.float32()) for name in spec.float_features]
        + [pa.field(TIMESTAMP_FIELD, timestamp), pa.field(CREATED_FIELD, timestamp)]
    )
