"""Models loaded in several threads at once (the evaluation service loads a candidate and its
champion; a service's handlers run in worker threads) keep their weight tying: transformers swaps
``PreTrainedModel.tie_weights`` for a no-op on the class while it loads, and concurrent loads could
leave the no-op in place for the rest of the process (then SmolLM2's ``lm_head`` stays on the meta
device). Real loads of the packaged models, in threads."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from transformers import PreTrainedModel

from llmops_models.kinds.causal_lm.network import load_base_model
from llmops_models.kinds.classifier.network import load_encoder

ENCODER = "sentence-transformers/all-MiniLM-L6-v2"


def _at_once(*loads: Callable[[], Any]) -> list[Any]:
    results: list[Any] = [None] * len(loads)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            results[index] = loads[index]()
        except BaseException as error:  # re-raised below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(loads))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def test_concurrent_loads_leave_weight_tying_in_place() -> None:
    original = PreTrainedModel.tie_weights
    for _ in range(3):
        _at_once(*[lambda: load_encoder(ENCODER)] * 3)
        assert PreTrainedModel.tie_weights is original
    (causal_lm, _), _ = _at_once(lambda: load_base_model("smollm2"), lambda: load_encoder(ENCODER))
    assert PreTrainedModel.tie_weights is original
    assert causal_lm.lm_head.weight.device.type == "cpu"
    assert causal_lm.lm_head.weight.data_ptr() == causal_lm.model.embed_tokens.weight.data_ptr()
