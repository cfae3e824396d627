"""The in-process side of the generation benchmark (``bench/generation.py``): what the causal LM
does without the platform, measured in one process.

Reads the plan the benchmark wrote (``LLMOPS_BENCH_GENERATION_PLAN``, a JSON file) and

1. renders every prompt with the tokenizer's chat template exactly as the Triton model does
   (``batching.Scheduler.submit``) and writes the token ids beside the plan
   (``prompt_tokens.json``), so the llama.cpp reference decodes the very same tokens;
2. measures the machine's matrix-multiply rate on the model's own shapes: every linear layer's
   weight (the LM head included) times an activation of ``batch`` rows, in the serving dtype
   (bfloat16 where native), on the benchmark's threads, the fastest of many passes. That is the
   ceiling of decoding a batch of that size; FLOPs per generated token are 2 x the weights of
   those layers (attention over the context is left out: small at these lengths);
3. generates with plain transformers ``generate()`` (greedy, left-padded batches of ``batch``
   prompts, the same prompts and ``max_tokens`` as the gateway run; then one prompt at a time);
4. writes the LoRA adapters the plan names (PEFT's initialisation, the trainer's causal-lm
   configuration) for the Triton model to serve.

Prints progress on stderr and one JSON object on stdout (``bench.script.run_script``).
"""

from __future__ import annotations

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


def rendered_prompts(tokenizer: Any, prompts: list[str]) -> list[list[int]]:
    """Each prompt as one user turn, rendered and tokenized as the Triton model's scheduler does."""
    from llmops_models.kinds.causal_lm.network import prompt_messages, render

    tokens = []
    for prompt in prompts:
        text = render(tokenizer, prompt_messages([{"role": "user", "content": prompt}]), add_generation_prompt=True)
        tokens.append(list(tokenizer(text, add_special_tokens=False)["input_ids"]))
    return tokens


def completion_tokens(row: list[int], eos_id: int) -> int:
    """Tokens a generation produced: up to and including the first end-of-sequence token (the
    Triton model counts it too); the padding after it is not generated."""
    return row.index(eos_id) + 1 if eos_id in row else len(row)


def linear_weights(model: Any) -> list[Any]:
    import torch

    return [module.weight for module in model.modules() if isinstance(module, torch.nn.Linear)]


def gemm_rate(model: Any, *, rows: int, seconds: float) -> tuple[float, float]:
    """(FLOPs per generated token, FLOP/s of one decoding step's matrix products at ``rows`` rows):
    every linear layer of the model in its order, repeated for ``seconds``; the rate of the fastest
    pass, since a ceiling is what the machine can do, not what a busy neighbour left over."""
    import torch

    weights = [w.detach() for w in linear_weights(model)]
    flops_per_token = 2.0 * sum(w.shape[0] * w.shape[1] for w in weights)
    inputs = {w.shape[1]: torch.randn(rows, w.shape[1], dtype=w.dtype) for w in weights}

    def one_pass() -> float:
        started = time.perf_counter()
        for w in weights:
            torch.nn.functional.linear(inputs[w.shape[1]], w)
        return time.perf_counter() - started

    with torch.inference_mode():
        for _ in range(3):
            one_pass()
        times: list[float] = []
        started = time.perf_counter()
        while len(times) < 5 or time.perf_counter() - started < seconds:
            times.append(one_pass())
    return flops_per_token, rows * flops_per_token / min(times)


def generate_batch(model: Any, prompts: list[list[int]], *, max_tokens: int, pad_id: int, eos_id: int) -> int:
    """Greedy ``generate()`` of a left-padded batch; returns the tokens generated."""
    import torch

    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    with torch.inference_mode():
        output = model.generate(
            input_ids=input_ids,
            attention_mask=mask,
            max_new_tokens=max_tokens,
            do_sample=False,
            pad_token_id=pad_id,
            eos_token_id=eos_id,
        )
    return sum(completion_tokens(row.tolist(), eos_id) for row in output[:, width:])


def write_adapters(plan: dict[str, Any], folder: Path) -> float:
    """The plan's adapters under ``folder/<name>/``; returns one adapter's weights file in MiB."""
    import torch
    from peft import LoraConfig, get_peft_model

    from llmops_models.kinds.causal_lm.network import load_base_model

    size = 0.0
    for seed, name in enumerate(plan["adapters"]):
        torch.manual_seed(seed)
        base, _ = load_base_model(plan["base_model"])
        lora = plan["lora"]
        config = LoraConfig(
            r=lora["rank"],
            lora_alpha=lora["alpha"],
            lora_dropout=0.0,
            target_modules=lora["target_modules"],
            task_type="CAUSAL_LM",
        )
        get_peft_model(base, config).save_pretrained(str(folder / name))
        size = sum(f.stat().st_size for f in (folder / name).glob("*.safetensors")) / 2**20
    return size


def main() -> int:
    if PLAN_ENV not in os.environ:
        print(f"SKIP: {PLAN_ENV} is not set (this script is run by bench/generation.py)")
        return 0
    plan_path = Path(os.environ[PLAN_ENV])
    plan: dict[str, Any] = json.loads(plan_path.read_text())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from llmops_models.kinds.causal_lm.network import compute_dtype, load_base_model, load_tokenizer

    threads = int(plan["threads"])
    torch.set_num_threads(threads)
    batch, max_tokens = int(plan["batch"]), int(plan["max_tokens"])
    log(f"loading {plan['base_model']} ({threads} threads)")
    model, folder = load_base_model(plan["base_model"])
    tokenizer = load_tokenizer(folder)
    device = torch.device("cpu")
    dtype = compute_dtype(plan["precision"], device)
    model.to(device=device, dtype=dtype).eval()  # as the Triton model: weights in the compute dtype
    eos_id = int(tokenizer.eos_token_id)
    pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id)
    prompts = rendered_prompts(tokenizer, plan["prompts"])
    (plan_path.parent / PROMPT_TOKENS_FILE).write_text(json.dumps({"prompts": prompts, "eos_id": eos_id}))
    base_weights_mib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20

    log(f"matrix products of the model's shapes at {batch} rows, {dtype} ({plan['gemm_seconds']} s)")
    flops_per_token, gemm_flops = gemm_rate(model, rows=batch, seconds=float(plan["gemm_seconds"]))
    log(f"  {flops_per_token / 1e9:.3f} GFLOP per token, {gemm_flops / 1e9:.1f} GFLOP/s")

    generate_batch(model, prompts[:2], max_tokens=4, pad_id=pad_id, eos_id=eos_id)  # warm-up, untimed
    tokens, seconds = 0, 0.0
    for index in range(int(plan["reference_batches"])):
        group = [prompts[(index * batch + row) % len(prompts)] for row in range(batch)]
        started = time.perf_counter()
        tokens += generate_batch(model, group, max_tokens=max_tokens, pad_id=pad_id, eos_id=eos_id)
        seconds += time.perf_counter() - started
        log(f"  generate() batch {index + 1}: {tokens} tokens in {seconds:.1f} s")
    single_tokens, single_seconds = 0, 0.0
    for index in range(int(plan["single_requests"])):
        started = time.perf_counter()
        single_tokens += generate_batch(
            model, [prompts[index % len(prompts)]], max_tokens=max_tokens, pad_id=pad_id, eos_id=eos_id
        )
        single_seconds += time.perf_counter() - started
    log(f"  generate() one at a time: {single_tokens} tokens in {single_seconds:.1f} s")

    log(f"writing adapters {plan['adapters']}")
    adapter_mib = write_adapters(plan, plan_path.parent / "adapters")
    summary = {
        "threads": threads,
        "dtype": str(dtype).removeprefix("torch."),
        "batch": batch,
        "max_tokens": max_tokens,
        "prompt_tokens_mean": sum(len(p) for p in prompts) / len(prompts),
        "flops_per_token": flops_per_token,
        "gemm_flops_per_second": gemm_flops,
        "reference_batch_tokens": tokens,
        "reference_batch_seconds": seconds,
        "reference_batch_tokens_per_second": tokens / seconds if seconds else None,
        "reference_single_tokens_per_second": single_tokens / single_seconds if single_seconds else None,
        "base_weights_mib": base_weights_mib,
        "adapter_file_mib": adapter_mib,
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
