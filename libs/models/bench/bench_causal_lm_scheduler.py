"""The continuous-batching scheduler against plain ``generate()``, in-process (no Triton, no gateway).

Both decode ``ROWS`` greedy sequences of ``TOKENS`` tokens of one prompt on the packaged SmolLM2 in
the serving dtype with ``THREADS`` torch threads: ``generate()`` as one left-padded batch, the
scheduler (``batching.Scheduler``, the loop the Triton model runs) with every row admitted at once.
Prints tokens/s of each and their ratio: what the scheduler itself costs, apart from what Triton,
the gateway and their clients take from the same cores (``bench/generation.py`` measures that).

Usage: ``.venv/bin/python libs/models/bench/bench_causal_lm_scheduler.py [ROWS] [TOKENS] [THREADS]``
(default 16 96 1).
"""

from __future__ import annotations

import sys
import time

import torch

from llmops_models.kinds.causal_lm import serving
from llmops_models.kinds.causal_lm.batching import Limits, Scheduler
from llmops_models.kinds.causal_lm.network import (
    compute_dtype,
    load_base_model,
    load_tokenizer,
    prompt_messages,
    render,
)

PROMPT = [{"role": "user", "content": "Write a long story about a dragon who learns to fly."}]


def scheduler_tokens_per_second(scheduler: Scheduler, rows: int, tokens: int) -> float:
    for _ in range(rows):
        scheduler.submit(serving.GenerationParameters(messages=PROMPT, max_tokens=tokens), lambda chunk: None)
    scheduler.step()  # the prefill is not what is measured (nor is it in generate()'s rate below)
    start, steps = time.perf_counter(), 0
    while scheduler.step():
        steps += 1
    return steps * rows / (time.perf_counter() - start)


@torch.inference_mode()
def generate_tokens_per_second(model: torch.nn.Module, tokenizer: object, rows: int, tokens: int) -> float:
    text = render(tokenizer, prompt_messages(PROMPT), add_generation_prompt=True)
    encoded = tokenizer([text] * rows, return_tensors="pt", add_special_tokens=False)  # type: ignore[operator]
    model.generate(**encoded, max_new_tokens=4, min_new_tokens=4, do_sample=False)  # type: ignore[operator]
    start = time.perf_counter()
    model.generate(**encoded, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)  # type: ignore[operator]
    return rows * tokens / (time.perf_counter() - start)


def main() -> int:
    given = [int(argument) for argument in sys.argv[1:4]]
    rows, tokens, threads = given + [16, 96, 1][len(given) :]
    torch.set_num_threads(threads)
    base, folder = load_base_model("smollm2")
    tokenizer = load_tokenizer(folder)
    dtype = compute_dtype("auto", torch.device("cpu"))
    base.to(dtype=dtype).eval()
    plain = generate_tokens_per_second(base, tokenizer, rows, tokens)
    limits = Limits(max_running=rows, max_queued=rows, max_new_tokens=tokens)
    scheduled = scheduler_tokens_per_second(Scheduler(base, tokenizer, limits=limits, dtype=dtype), rows, tokens)
    print(f"{rows} rows, {threads} threads, {dtype}")
    print(f"generate(): {plain:.1f} tokens/s; scheduler: {scheduled:.1f} tokens/s")
    print(f"scheduler / generate(): {scheduled / plain:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
