"""The llama.cpp reference of the generation benchmark (``bench/generation.py``): the very same
GGUF file (SmolLM2-135M-Instruct, Q4_1) decoded by ``llama-cpp-python``, the engine a user would
pick instead for CPU serving.

Runs with the Python of a throw-away virtual environment holding ``llama-cpp-python``
(``make bench-setup``), never the platform's. Reads the benchmark's plan
(``LLMOPS_BENCH_GENERATION_PLAN``) and the prompt token ids the in-process reference wrote beside
it, so both engines decode the same tokens, and measures, greedy, at most ``max_tokens`` each:

* one stream: the prompts one after another;
* parallel sequences: ``batch`` prompts decoded together, one sequence id each in one context
  (llama.cpp's own ``batched`` example: every prompt prefilled in one ``llama_decode``, then one
  token of every live sequence per ``llama_decode``).

Tokens per second count the generated tokens (up to and including end-of-turn) over the wall time
from the first prefill to the last token. Prints one JSON object on stdout.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

PLAN_ENV = "LLMOPS_BENCH_GENERATION_PLAN"
PROMPT_TOKENS_FILE = "prompt_tokens.json"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Engine:
    """One llama.cpp context with room for ``sequences`` sequences of ``width`` tokens each."""

    def __init__(self, gguf: str, *, sequences: int, width: int, prefill: int, threads: int, eos_id: int) -> None:
        import llama_cpp
        from llama_cpp import _internals

        self.llama_cpp = llama_cpp
        # llama.cpp logs every tensor of its graphs to stderr, which the benchmark relays as status.
        self._quiet = llama_cpp.llama_log_callback(lambda level, text, user_data: None)
        llama_cpp.llama_log_set(self._quiet, ctypes.c_void_p(0))
        self.model = _internals.LlamaModel(
            path_model=gguf, params=llama_cpp.llama_model_default_params(), verbose=False
        )
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = sequences * width
        params.n_batch = max(prefill, sequences)
        params.n_ubatch = min(512, params.n_batch)
        params.n_seq_max = sequences
        params.n_threads = threads
        params.n_threads_batch = threads
        self.context = _internals.LlamaContext(model=self.model, params=params, verbose=False)
        self.batch = _internals.LlamaBatch(n_tokens=params.n_batch, embd=0, n_seq_max=sequences, verbose=False)
        self.vocabulary = self.model.n_vocab()
        self.end = {self.model.token_eos(), self.model.token_eot(), eos_id}
        """End of turn as llama.cpp and the platform's tokenizer see it (the same id, normally)."""

    def close(self) -> None:
        """Free llama.cpp's objects while the quiet log callback is alive (at interpreter exit it
        may be collected first, and llama.cpp would call freed memory)."""
        for resource in (self.batch, self.context, self.model):
            resource.close()

    def _logits(self, index: int) -> Any:
        import numpy as np

        return np.ctypeslib.as_array(self.context.get_logits_ith(index), shape=(self.vocabulary,))

    def generate(self, prompts: list[list[int]], *, max_tokens: int) -> int:
        """Greedy decoding of ``prompts`` together (one sequence id each); returns the tokens generated."""
        batch = self.batch.batch
        self.context.kv_cache_clear()
        count, last_of = 0, {}
        for sequence, prompt in enumerate(prompts):
            for position, token in enumerate(prompt):
                batch.token[count], batch.pos[count] = token, position
                batch.n_seq_id[count], batch.seq_id[count][0] = 1, sequence
                batch.logits[count] = position == len(prompt) - 1
                count += 1
            last_of[sequence] = count - 1
        batch.n_tokens = count
        self.context.decode(self.batch)
        generated: list[list[int]] = [[] for _ in prompts]
        live = list(range(len(prompts)))
        while live:
            still = []
            for sequence in live:
                token = int(self._logits(last_of[sequence]).argmax())
                generated[sequence].append(token)
                if token not in self.end and len(generated[sequence]) < max_tokens:
                    still.append(sequence)
            live = still
            for row, sequence in enumerate(live):
                batch.token[row] = generated[sequence][-1]
                batch.pos[row] = len(prompts[sequence]) + len(generated[sequence]) - 1
                batch.n_seq_id[row], batch.seq_id[row][0], batch.logits[row] = 1, sequence, True
                last_of[sequence] = row
            if live:
                batch.n_tokens = len(live)
                self.context.decode(self.batch)
        return sum(len(tokens) for tokens in generated)


def main() -> int:
    try:
        import llama_cpp
    except ImportError:
        print("SKIP: llama-cpp-python is not installed in this Python (make bench-setup)")
        return 0
    if PLAN_ENV not in os.environ:
        print(f"SKIP: {PLAN_ENV} is not set (this script is run by bench/generation.py)")
        return 0
    plan_path = Path(os.environ[PLAN_ENV])
    plan: dict[str, Any] = json.loads(plan_path.read_text())
    rendered = json.loads((plan_path.parent / PROMPT_TOKENS_FILE).read_text())
    prompts: list[list[int]] = rendered["prompts"]
    batch, max_tokens, threads = int(plan["batch"]), int(plan["max_tokens"]), int(plan["threads"])
    width = max(len(p) for p in prompts) + max_tokens + 8
    log(f"llama-cpp-python {llama_cpp.__version__}: {plan['gguf']} ({threads} threads)")
    engine = Engine(
        plan["gguf"],
        sequences=batch,
        width=width,
        prefill=batch * max(len(p) for p in prompts),
        threads=threads,
        eos_id=int(rendered["eos_id"]),
    )
    engine.generate(prompts[:2], max_tokens=4)  # warm-up, untimed

    tokens, seconds = 0, 0.0
    for index in range(int(plan["single_requests"])):
        started = time.perf_counter()
        tokens += engine.generate([prompts[index % len(prompts)]], max_tokens=max_tokens)
        seconds += time.perf_counter() - started
    log(f"  one stream: {tokens} tokens in {seconds:.1f} s")
    single = tokens / seconds if seconds else None

    tokens, seconds = 0, 0.0
    for index in range(int(plan["reference_batches"])):
        group = [prompts[(index * batch + row) % len(prompts)] for row in range(batch)]
        started = time.perf_counter()
        tokens += engine.generate(group, max_tokens=max_tokens)
        seconds += time.perf_counter() - started
        log(f"  {batch} parallel sequences, batch {index + 1}: {tokens} tokens in {seconds:.1f} s")
    engine.close()
    summary = {
        "llama_cpp_version": llama_cpp.__version__,
        "threads": threads,
        "llama_single_tokens_per_second": single,
        "llama_parallel_tokens_per_second": tokens / seconds if seconds else None,
        "llama_parallel_sequences": batch,
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
