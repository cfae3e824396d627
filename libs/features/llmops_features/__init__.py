"""The Feast objects of curated records: entity, file source, push source, feature view.

Defined in code (not discovered by ``feast apply`` scanning a folder) so the ingestion service applies
them to a repository under ``var/`` at start-up, and ``deploy/feast/features.py`` re-exports
them for a production feature repository.
"""

from __future__ import annotations

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


def feature_definitions(offline_path: Path | str) -> list[Any]:
    """Entity, batch source, push source and feature view, with the offline Parquet at ``offline_path``."""
    from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
    from feast.types import Float32, Int64, String

    entity = Entity(
        name=ENTITY,
        join_keys=[ENTITY],
        value_type=ValueType.STRING,
        description="Tenant-scoped id of a curated record: <tenant>/<record id>.",
    )
    file_source = FileSource(
        name=FILE_SOURCE,
        path=str(offline_path),
        timestamp_field=TIMESTAMP_FIELD,
        created_timestamp_column=CREATED_FIELD,
    )
    push_source = PushSource(name=PUSH_SOURCE, batch_source=file_source)
    schema = [Field(name=name, dtype=String) for name in STRING_FEATURES]
    schema += [Field(name=name, dtype=Int64) for name in INT_FEATURES]
    schema += [Field(name=name, dtype=Float32) for name in FLOAT_FEATURES]
    view = FeatureView(
        name=FEATURE_VIEW,
        entities=[entity],
        ttl=timedelta(0),  # 0 = never expires: a labelled record stays training data
        source=push_source,
        online=True,
        schema=schema,
        description="Curated (redacted, de-duplicated) records with descriptors and PII counts.",
    )
    return [entity, file_source, push_source, view]


def offline_schema() -> Any:
    """The Arrow schema of the offline Parquet file.

    The file must exist before ``apply`` and before the first push, and an empty file written
    from pandas would type every column ``null``, which later pushes cannot be cast to.
    """
    import pyarrow as pa

    timestamp = pa.timestamp("ns", tz="UTC")
    return pa.schema(
        [pa.field(ENTITY, pa.string())]
        + [pa.field(name, pa.string()) for name in STRING_FEATURES]
        + [pa.field(name, pa.int64()) for name in INT_FEATURES]
        + [pa.field(name, pa.float32()) for name in FLOAT_FEATURES]
        + [pa.field(TIMESTAMP_FIELD, timestamp), pa.field(CREATED_FIELD, timestamp)]
    )
