"""The optimized format's bookkeeping (issue 21), without a model: the manifest names the file that
serves and its sha256, a changed file is refused, and the bench's FLOP count of one query."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.serving import query_flops
from llmops_models import build_manifest, hash_folder, read_manifest, write_manifest
from llmops_models.kinds.classifier.onnx_runtime import (
    OPTIMIZED_FILE,
    OptimizedFormatMissing,
    _sha256,
    model_file,
    read_optimized,
    softmax,
)


def _exported(folder: Path) -> Path:
    (folder / "onnx").mkdir(parents=True)
    (folder / "onnx" / "model.onnx").write_bytes(b"float graph")
    (folder / "onnx" / "model.int8.onnx").write_bytes(b"int8 graph")
    described = {
        "format": "onnx",
        "file": "onnx/model.int8.onnx",
        "sha256": _sha256(folder / "onnx" / "model.int8.onnx"),
        "float_file": "onnx/model.onnx",
        "float_sha256": _sha256(folder / "onnx" / "model.onnx"),
        "quantization": "int8_dynamic",
        "opset": 17,
        "torch_version": "not carried into the manifest",
    }
    (folder / OPTIMIZED_FILE).write_text(json.dumps(described))
    return folder


def test_the_manifest_names_the_file_that_serves_and_its_sha256(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    folder = _exported(tmp_path / "v")
    manifest = build_manifest(
        model_name="m", version=1, kind="classifier", files=hash_folder(folder), lineage={}, metrics={},
        created_at=datetime.now(UTC),
    )  # fmt: skip
    write_manifest(folder, manifest)
    optimized = read_manifest(folder)["optimized"]
    assert optimized["file"] == "onnx/model.int8.onnx" and optimized["quantization"] == "int8_dynamic"
    assert optimized["sha256"] == read_manifest(folder)["files"]["onnx/model.int8.onnx"]
    assert "torch_version" not in optimized
    assert model_file(folder) == folder / "onnx" / "model.int8.onnx"
    assert model_file(folder, "float") == folder / "onnx" / "model.onnx"


def test_a_changed_or_missing_export_is_refused(tmp_path: Path) -> None:
    folder = _exported(tmp_path / "v")
    (folder / "onnx" / "model.int8.onnx").write_bytes(b"tampered")
    with pytest.raises(ValueError, match="does not hash"):
        model_file(folder)
    with pytest.raises(ValueError, match="unknown ONNX variant"):
        model_file(folder, "fp16")
    with pytest.raises(OptimizedFormatMissing):
        read_optimized(tmp_path / "nothing")
    plain = tmp_path / "plain"
    plain.mkdir()
    write_manifest(plain, {"files": {}})
    assert "optimized" not in read_manifest(plain)


def test_one_minilm_query_at_16_tokens_costs_about_a_third_of_a_gflop() -> None:
    assert query_flops(16) == pytest.approx(0.342e9, rel=0.01)
    assert query_flops(32) > 2 * query_flops(16)  # attention grows with the square of the length


def test_softmax_rows_sum_to_one() -> None:
    import numpy as np

    rows = softmax(np.array([[1000.0, 1000.0], [0.0, -1000.0]], dtype=np.float32))
    assert np.allclose(rows, [[0.5, 0.5], [1.0, 0.0]])
