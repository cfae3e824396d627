"""Where things live in the artifact store: the one spelling of its layout.

::

    datasets/<dataset_id>/            a dataset snapshot (Parquet per split + manifest.json)
    models/<model_name>/<version>/    a model version (the kind's files + manifest.json)
    evaluations/<model_name>/<version>/  the evaluation gate's report of that version (beside the
                                      model folder, not inside it: a published model is immutable)
    erasures/<erasure_id>.json        what an erasure removed and which snapshots and model
                                      versions held the erased records (``llmops_models.erasures``)

Every name that becomes part of a path (model name, dataset id) must match ``NAME_PATTERN``:
a name from an event can never climb out of its folder (``../x``) or hide (``.x``).
"""

from __future__ import annotations

from llmops_events.names import NAME_MAX_LENGTH, is_safe_name
from llmops_events.names import NAME_PATTERN as NAME_PATTERN

DATASETS_PREFIX = "datasets"
MODELS_PREFIX = "models"
EVALUATIONS_PREFIX = "evaluations"
ERASURES_PREFIX = "erasures"
MANIFEST_FILE = "manifest.json"
OPTIMIZED_FILE = "optimized.json"
"""An artifact's optimized serving format (the classifier's ONNX export), when it has one; also
spelled in ``kinds/classifier/onnx_runtime.py``, which must stand alone inside Triton."""

# The one rule for names that become paths, shared with the event types that carry them
# (``llmops_events.names``: a forged name fails decoding before it reaches this kernel):
# letters, digits, ``.``, ``_``, ``-``; a letter or digit first; no ``..``; at most 128.


class InvalidName(ValueError):
    """A model name or dataset id that cannot be part of an artifact path."""


def check_name(name: str, *, what: str = "name") -> str:
    """``name`` unchanged when it is a safe path segment, else ``InvalidName``."""
    if not is_safe_name(name):
        raise InvalidName(f"{what} {shown(str(name))} must match {NAME_PATTERN.pattern} (at most {NAME_MAX_LENGTH})")
    return name


def shown(name: str, *, limit: int = 80) -> str:
    """``name`` as it may appear in an error message: quoted, and cut past ``limit`` characters, so a
    huge name from a caller never makes the message itself too big to deliver (gRPC's 8 KiB)."""
    if len(name) <= limit:
        return repr(name)
    return f"{name[:limit]!r}… ({len(name)} characters)"


def is_valid_name(name: str) -> bool:
    try:
        check_name(name)
    except InvalidName:
        return False
    return True


def dataset_path(dataset_id: str) -> str:
    return f"{DATASETS_PREFIX}/{check_name(dataset_id, what='dataset id')}"


def dataset_file(dataset_id: str, file_name: str) -> str:
    return f"{dataset_path(dataset_id)}/{file_name}"


def model_path(model_name: str, version: int | None = None) -> str:
    """``models/<model_name>`` or, with a version, ``models/<model_name>/<version>``."""
    path = f"{MODELS_PREFIX}/{check_name(model_name, what='model name')}"
    if version is None:
        return path
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidName(f"model version {version!r} must be an integer >= 1")
    return f"{path}/{version}"


def model_file(model_name: str, version: int, file_name: str) -> str:
    return f"{model_path(model_name, version)}/{file_name}"


def manifest_path(model_name: str, version: int) -> str:
    return model_file(model_name, version, MANIFEST_FILE)


def evaluation_path(model_name: str, version: int) -> str:
    return model_path(model_name, version).replace(MODELS_PREFIX, EVALUATIONS_PREFIX, 1)


def erasure_path(erasure_id: str) -> str:
    """``erasures/<erasure_id>.json``: the record of one erasure."""
    return f"{ERASURES_PREFIX}/{check_name(erasure_id, what='erasure id')}.json"
