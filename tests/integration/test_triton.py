"""The real tritonserver: health over HTTP, and a Python-backend model loaded, served and
unloaded through the gRPC model-control API (explicit mode)."""

from __future__ import annotations

import json
import textwrap

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from llmops_config import PlatformSettings

pytestmark = pytest.mark.integration

MODEL_NAME = "echo_upper"

# Runs inside Triton's own environment (.venv-triton, numpy<2), not the test's.
MODEL_SOURCE = textwrap.dedent(
    """
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            responses = []
            for request in requests:
                texts = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
                upper = np.array([[t.decode().upper().encode() for t in row] for row in texts], dtype=np.object_)
                length = np.array([[len(t) for t in row] for row in texts], dtype=np.int64)
                responses.append(pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("UPPER", upper), pb_utils.Tensor("LENGTH", length)]))
            return responses
    """
)

MODEL_CONFIG = {
    "name": MODEL_NAME,
    "backend": "python",
    "max_batch_size": 8,
    "input": [{"name": "TEXT", "data_type": "TYPE_STRING", "dims": [1]}],
    "output": [
        {"name": "UPPER", "data_type": "TYPE_STRING", "dims": [1]},
        {"name": "LENGTH", "data_type": "TYPE_INT64", "dims": [1]},
    ],
    "dynamic_batching": {"max_queue_delay_microseconds": 1000},
    "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
}


def test_server_is_ready_over_http(triton_settings: PlatformSettings) -> None:
    response = httpx.get(f"{triton_settings.triton_http_url}/v2/health/ready", timeout=5)
    assert response.status_code == 200


def test_model_is_loaded_served_and_unloaded_through_grpc_model_control(triton_settings: PlatformSettings) -> None:
    # Written into the repository the way the deployment service will: config + version folder.
    model_dir = triton_settings.model_repository / MODEL_NAME
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "1" / "model.py").write_text(MODEL_SOURCE)
    (model_dir / "config.pbtxt").write_text(f'name: "{MODEL_NAME}"\nbackend: "python"\n')
    client = grpcclient.InferenceServerClient(triton_settings.triton_grpc_url)

    assert not client.is_model_ready(MODEL_NAME)
    client.load_model(MODEL_NAME, config=json.dumps(MODEL_CONFIG))
    assert client.is_model_ready(MODEL_NAME)

    text = grpcclient.InferInput("TEXT", [2, 1], "BYTES")
    text.set_data_from_numpy(np.array([[b"hello triton"], [b"ok"]], dtype=np.object_))
    result = client.infer(
        MODEL_NAME,
        [text],
        outputs=[grpcclient.InferRequestedOutput("UPPER"), grpcclient.InferRequestedOutput("LENGTH")],
    )
    assert result.as_numpy("UPPER").ravel().tolist() == [b"HELLO TRITON", b"OK"]
    assert result.as_numpy("LENGTH").ravel().tolist() == [12, 2]

    index = {entry["name"]: entry for entry in client.get_model_repository_index(as_json=True)["models"]}
    assert index[MODEL_NAME]["state"] == "READY"

    client.unload_model(MODEL_NAME, unload_dependents=True)
    with pytest.raises(InferenceServerException):
        client.infer(MODEL_NAME, [text])
    assert not client.is_model_ready(MODEL_NAME)
