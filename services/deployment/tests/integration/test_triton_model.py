"""A trained version written into the model repository loads on the real tritonserver and
classifies texts (single and dynamically batched requests)."""

from __future__ import annotations

import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from llmops_config import PlatformSettings
from llmops_models.kinds import ServingOptions
from llmops_models.kinds.classifier.serving import (
    CONFIDENCE_OUTPUT,
    LABEL_OUTPUT,
    LABELS_PARAMETER,
    SCORES_OUTPUT,
    TEXT_INPUT,
)
from llmops_models.triton_repository import ModelRepository
from llmops_storage import ArtifactStore

pytestmark = pytest.mark.integration


def _infer(client: grpcclient.InferenceServerClient, name: str, texts: list[str]) -> Any:
    text = grpcclient.InferInput(TEXT_INPUT, [len(texts), 1], "BYTES")
    text.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=np.object_))
    outputs = [grpcclient.InferRequestedOutput(n) for n in (LABEL_OUTPUT, CONFIDENCE_OUTPUT, SCORES_OUTPUT)]
    return client.infer(name, [text], outputs=outputs)


def test_a_written_version_loads_and_classifies(triton_settings: PlatformSettings, tiny_model: Any) -> None:
    store = ArtifactStore(triton_settings.resolved_artifact_store_uri)
    repository = ModelRepository(triton_settings.model_repository)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "model"
        store.download_folder(f"models/{tiny_model.model_name}/{tiny_model.model_version}", folder)
        name = repository.write(tiny_model.model_name, tiny_model.model_version, folder, ServingOptions())
    assert repository.deployed()[name] == (tiny_model.model_name, tiny_model.model_version)
    assert not any(p.name.startswith(".") for p in triton_settings.model_repository.iterdir())

    client = grpcclient.InferenceServerClient(triton_settings.triton_grpc_url)
    client.load_model(name)
    try:
        config = client.get_model_config(name, as_json=True)["config"]
        labels = json.loads(config["parameters"][LABELS_PARAMETER]["string_value"])
        assert sorted(labels) == ["card_arrival", "exchange_rate", "lost_card"]

        result = _infer(client, name, ["my card was stolen yesterday", "what exchange rate do you use"])
        assert [v.decode() for v in result.as_numpy(LABEL_OUTPUT).ravel()] == ["lost_card", "exchange_rate"]
        scores = result.as_numpy(SCORES_OUTPUT)
        assert scores.shape == (2, 3) and np.allclose(scores.sum(axis=1), 1, atol=1e-4)
        assert np.allclose(result.as_numpy(CONFIDENCE_OUTPUT).ravel(), scores.max(axis=1))

        # Concurrent single-text requests are merged by the dynamic batcher and answered one by one.
        texts = ["where is my new card", "i lost my card", "is your currency rate fair"] * 8
        with ThreadPoolExecutor(8) as pool:
            labels_out = list(
                pool.map(lambda t: _infer(client, name, [t]).as_numpy(LABEL_OUTPUT)[0, 0].decode(), texts)
            )
        assert labels_out == ["card_arrival", "lost_card", "exchange_rate"] * 8
    finally:
        client.unload_model(name)
