"""What a mixed-adapter batch costs the causal-LM scheduler, in-process (no Triton, no gateway).

The continuous-batching scheduler (``batching.Scheduler``) on the packaged SmolLM2 in the serving
dtype decodes ``ROWS`` greedy sequences of ``TOKENS`` tokens three ways: all on the base, all on
one LoRA adapter, half on each of two adapters (PEFT's ``adapter_names`` path, which loops over
the adapters in every LoRA module). Adapters: the trainer's causal-lm shape (rank 16 on every
projection), random B so the branch is not skipped. Prints tokens/s per case and the ratios.

Usage: ``.venv/bin/python libs/models/bench/bench_causal_lm_mixed_adapters.py [ROWS] [TOKENS] [THREADS]``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model

from llmops_models.kinds.causal_lm import serving
from llmops_models.kinds.causal_lm.batching import Limits, Scheduler
from llmops_models.kinds.causal_lm.network import compute_dtype, load_base_model, load_tokenizer

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PROMPT = [{"role": "user", "content": "Write a long story about a dragon who learns to fly."}]


def write_adapters(folder: Path) -> list[str]:
    names = []
    for seed, name in enumerate(("alpha", "beta")):
        torch.manual_seed(seed)
        base, _ = load_base_model("smollm2")
        config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS, init_lora_weights=False)
        get_peft_model(base, config).save_pretrained(str(folder / name))
        names.append(name)
    return names


def tokens_per_second(scheduler: Scheduler, adapters: list[str], rows: int, tokens: int) -> float:
    for row in range(rows):
        adapter = adapters[row % len(adapters)] if adapters else ""
        parameters = serving.GenerationParameters(messages=PROMPT, adapter=adapter, max_tokens=tokens)
        scheduler.submit(parameters, lambda chunk: None)
    scheduler.step()  # the prefill (and any adapter load) is not what is measured
    start, steps = time.perf_counter(), 0
    while scheduler.step():
        steps += 1
    return steps * rows / (time.perf_counter() - start)


def main() -> int:
    given = [int(argument) for argument in sys.argv[1:4]]
    rows, tokens, threads = given + [16, 64, 1][len(given) :]
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as scratch:
        names = write_adapters(Path(scratch))
        base, folder = load_base_model("smollm2")
        dtype = compute_dtype("auto", torch.device("cpu"))
        base.to(dtype=dtype).eval()
        limits = Limits(max_running=rows, max_queued=rows, max_new_tokens=tokens)
        scheduler = Scheduler(base, load_tokenizer(folder), adapters_dir=Path(scratch), limits=limits, dtype=dtype)
        tokens_per_second(scheduler, names, rows, 4)  # loads both adapters (PEFT from here on)
        results = {}
        for case, adapters in (("base", []), ("one adapter", names[:1]), ("two adapters", names)):
            results[case] = tokens_per_second(scheduler, adapters, rows, tokens)
            print(f"{case}: {results[case]:.1f} tokens/s ({rows} rows, {threads} threads, {dtype})", flush=True)
    print(f"two adapters / one adapter: {results['two adapters'] / results['one adapter']:.2f}")
    print(f"one adapter / base: {results['one adapter'] / results['base']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
