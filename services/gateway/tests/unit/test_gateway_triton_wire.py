"""The classifier's Triton wire format without tritonclient (pure logic): the BYTES tensor the
gateway sends, the raw outputs it reads back, and how waiting calls are grouped into one call."""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.grpc import service_pb2
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from llmops_gateway.adapters.triton import bytes_tensor, coalesce, raw_outputs


def test_the_bytes_tensor_is_what_tritonclient_would_send() -> None:
    texts = ["where is my card", "", "carte perdue, l'été dernier ✈"]
    serialized = serialize_byte_tensor(np.array([[t.encode()] for t in texts], dtype=np.object_))
    expected = serialized.item() if serialized.dtype == np.object_ else serialized.tobytes()
    assert bytes_tensor(texts) == expected
    assert [v.decode() for v in deserialize_bytes_tensor(bytes_tensor(texts))] == texts


def _response(labels: list[bytes], scores: np.ndarray) -> service_pb2.ModelInferResponse:
    response = service_pb2.ModelInferResponse(model_name="m")
    response.outputs.add(name="LABEL", datatype="BYTES", shape=[len(labels), 1])
    response.outputs.add(name="CONFIDENCE", datatype="FP32", shape=[len(labels), 1])
    response.outputs.add(name="SCORES", datatype="FP32", shape=list(scores.shape))
    response.raw_output_contents.append(bytes_tensor([label.decode() for label in labels]))
    response.raw_output_contents.append(scores.max(axis=1, keepdims=True).astype(np.float32).tobytes())
    response.raw_output_contents.append(scores.astype(np.float32).tobytes())
    return response


def test_raw_outputs_are_read_in_their_shapes() -> None:
    scores = np.array([[0.1, 0.9], [0.7, 0.3], [0.5, 0.5]], dtype=np.float32)
    outputs = raw_outputs(_response([b"b", b"a", b"a"], scores))
    assert outputs["LABEL"].shape == (3, 1) and list(outputs["LABEL"].reshape(-1)) == [b"b", b"a", b"a"]
    assert outputs["CONFIDENCE"].reshape(-1).tolist() == pytest.approx([0.9, 0.7, 0.5])
    assert np.array_equal(outputs["SCORES"], scores)


def test_a_malformed_answer_is_refused() -> None:
    response = _response([b"a"], np.array([[1.0]], dtype=np.float32))
    del response.raw_output_contents[-1]
    with pytest.raises(ValueError, match="raw contents"):
        raw_outputs(response)
    odd = service_pb2.ModelInferResponse()
    odd.outputs.add(name="X", datatype="BF16", shape=[1])
    odd.raw_output_contents.append(b"\0\0")
    with pytest.raises(ValueError, match="unsupported datatype BF16"):
        raw_outputs(odd)


def test_waiting_calls_are_grouped_in_order_up_to_the_models_batch_bound() -> None:
    def rows(item: int) -> int:
        return item

    assert coalesce([1, 1, 1], max_rows=8, rows=rows) == [[1, 1, 1]]
    assert coalesce([3, 3, 3, 1], max_rows=6, rows=rows) == [[3, 3], [3, 1]]
    assert coalesce([2, 9, 2], max_rows=4, rows=rows) == [[2], [9], [2]]  # too big for company: alone
    assert coalesce([1, 1], max_rows=0, rows=rows) == [[1], [1]]  # a model that does not batch
    assert coalesce([], max_rows=8, rows=rows) == []
