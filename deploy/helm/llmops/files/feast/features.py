"""Feature repository entry for `feast plan` / `feast apply` in a deployed environment.

The definitions live in the ``llmops_features`` library so the ingestion service
and this repository can never disagree. The embedded default does not use this folder: the
service writes its own repository under ``$LLMOPS_VAR_DIR/feast`` at start-up and applies the
same definitions there. ``CURATED_RECORDS_PATH`` and ``CURATED_INSTRUCTIONS_PATH`` are the offline
Parquet locations of the two feature views (any fsspec URI Feast's file offline store accepts,
e.g. ``s3://bucket/feast/curated_records.parquet``).
"""

import os

from llmops_features import feature_definitions

(
    entity,
    file_source,
    push_source,
    curated_records,
    instructions_file_source,
    instructions_push_source,
    curated_instructions,
) = feature_definitions(
    os.environ.get("CURATED_RECORDS_PATH", "data/curated_records.parquet"),
    instructions_offline_path=os.environ.get("CURATED_INSTRUCTIONS_PATH", "data/curated_instructions.parquet"),
)
