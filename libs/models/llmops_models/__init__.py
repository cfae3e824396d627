"""The model kernel: the one place that knows how model artifacts and dataset snapshots are laid
out, hashed, versioned and read, and which kinds of model exist.

Every service uses it; none spells ``models/<name>/<version>`` or a kind's shape itself. Importing
it is cheap (no torch): the kinds load their frameworks only when asked to load a model.
"""

from llmops_models.layout import (
    DATASETS_PREFIX,
    MANIFEST_FILE,
    MODELS_PREFIX,
    NAME_PATTERN,
    InvalidName,
    check_name,
    dataset_file,
    dataset_path,
    evaluation_path,
    is_valid_name,
    manifest_path,
    model_file,
    model_path,
    shown,
)
from llmops_models.manifest import (
    ManifestMismatch,
    build_manifest,
    combined_hash,
    hash_folder,
    read_manifest,
    sha256_file,
    verify_folder,
    write_manifest,
)
from llmops_models.registry import ArtifactMissing, ModelRegistry, next_version

__all__ = [
    "DATASETS_PREFIX",
    "MANIFEST_FILE",
    "MODELS_PREFIX",
    "NAME_PATTERN",
    "ArtifactMissing",
    "InvalidName",
    "ManifestMismatch",
    "ModelRegistry",
    "build_manifest",
    "check_name",
    "combined_hash",
    "dataset_file",
    "dataset_path",
    "evaluation_path",
    "hash_folder",
    "is_valid_name",
    "manifest_path",
    "model_file",
    "model_path",
    "next_version",
    "read_manifest",
    "sha256_file",
    "shown",
    "verify_folder",
    "write_manifest",
]
