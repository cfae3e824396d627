"""The feedback flywheel benchmark (``make bench``, benchmark ``flywheel``; issue 16), stage 4 of 4:
did the loop learn? Judged with the evaluation service's own code.

The three versions stages 1 and 3 published are loaded from the artifact store as the gate loads a
candidate (``adapters.models.load_generator``: hashes verified, base-model hash checked):
version 1 *before* (known intents only), version 2 *after SFT* on the corrections, version 3
*after SFT + DPO* on the corrections and preference pairs. On the retraining snapshot's test split
(``adapters.instructions.load_instruction_test_set``: every held-out prompt, known and shifted, with
its true intent; never trained on) each answers greedily, and ``domain.generation`` scores the
answers (exact match after the kind's normalisation, ROUGE-L), sliced into shifted and known
intents (``aggregate``'s slices); ``domain.statistics.compare`` gives McNemar's p-value of the
shifted prompts' exact match, after SFT against before. On the held-out preference pairs
(``load_preference_pairs``: pairs built by ingestion's code from feedback on held-out prompts)
``domain.preferences.compare_on_pairs`` gives the win rate of version 3 against version 2 (the
answer closer to the chosen one, by ROUGE-L, wins; ties count half) and both models' preference
accuracy (log p(chosen) > log p(rejected)); version 1's preference accuracy comes from the same
log-probabilities (``answer_logprobs``) and ``preference_accuracy``.

Reads ``plan.json`` and the store from ``LLMOPS_BENCH_FLYWHEEL_DIR`` (default var/bench/flywheel);
``LLMOPS_BENCH_THREADS`` (2). Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[3]
DIR_ENV = "LLMOPS_BENCH_FLYWHEEL_DIR"
DATASET = "flywheel-after-dpo"  # the retraining snapshot with its pairs (rows as flywheel-after-sft)
BATCH = 32
SEED = 13  # the evaluation service's default; nothing is sampled below the caps
MAX_EXAMPLES = 100_000
GROUP = "intents"  # the slice: held-out prompts of known or of shifted intents
SHOWN_ANSWERS = 4


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def work_dir() -> Path:
    return Path(os.environ.get(DIR_ENV, REPO_ROOT / "var" / "bench" / "flywheel")).resolve()


def run() -> dict[str, Any] | None:
    work = work_dir()
    stage3 = work / "after.json"
    if not (work / "plan.json").exists() or not stage3.exists():
        print(f"SKIP: {work} lacks plan.json or after.json (stages 1 and 3 of the flywheel benchmark write them)")
        return None

    import numpy as np
    import torch

    from llmops_evaluation.adapters.instructions import load_instruction_test_set, load_preference_pairs
    from llmops_evaluation.adapters.models import load_generator
    from llmops_evaluation.domain.generation import aggregate, corpus_chrf, score_examples
    from llmops_evaluation.domain.preferences import compare_on_pairs, preference_accuracy
    from llmops_evaluation.domain.statistics import compare
    from llmops_storage import ArtifactStore

    began = time.monotonic()
    torch.set_num_threads(int(os.environ.get("LLMOPS_BENCH_THREADS", "2")))
    plan = json.loads((work / "plan.json").read_text())
    versions = json.loads(stage3.read_text())
    model_name, max_new_tokens = plan["model_name"], int(plan["max_new_tokens"])
    store = ArtifactStore(str(work / "store"))
    test_set = load_instruction_test_set(store, DATASET, max_examples=MAX_EXAMPLES, seed=SEED)
    shifted_ids = {f"bench/{row['id']}" for row in plan["shifted_test"]}
    groups = ["shifted" if e.record_id in shifted_ids else "known" for e in test_set.examples]
    pairs, invalid_pairs = load_preference_pairs(store, DATASET, max_pairs=MAX_EXAMPLES, seed=SEED)
    log(f"{len(test_set.examples)} held-out prompts ({groups.count('shifted')} shifted), {len(pairs)} held-out pairs")

    summary: dict[str, Any] = {
        "stage": "evaluate",
        "held_out_pairs": len(pairs),
        "invalid_held_out_pairs": invalid_pairs,
    }
    correct: dict[str, np.ndarray] = {}
    models: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="flywheel-evaluate-") as scratch:
        for label in ("before", "sft", "dpo"):
            version = int(versions[f"{label}_version"])
            model = load_generator(store, model_name, version, Path(scratch))
            started = time.monotonic()
            answers = model.generate(
                [e.messages for e in test_set.examples], max_new_tokens=max_new_tokens, batch_size=BATCH
            )
            seconds = time.monotonic() - started
            scores = score_examples(test_set.examples, answers, find_pii=lambda _: [], banned_phrases=[])
            metrics = aggregate(
                scores,
                answers,
                probes=[],
                generation_seconds=seconds,
                chrf_corpus=corpus_chrf([a.text for a in answers], [e.reference for e in test_set.examples]),
                slices={GROUP: groups},
            )
            by_group = metrics.slice_exact_match.get(GROUP, {})
            rouge = {
                group: float(np.mean([s.rouge_l for s, g in zip(scores, groups, strict=True) if g == group]))
                for group in ("shifted", "known")
                if group in groups
            }
            correct[label] = np.asarray([s.exact_match for s in scores], dtype=bool)
            log(f"version {version} ({label}): exact match {by_group} in {seconds:.0f}s")
            summary |= {
                f"{label}_version": version,
                f"shifted_exact_match_{label}": by_group.get("shifted"),
                f"known_exact_match_{label}": by_group.get("known"),
                f"shifted_rouge_l_{label}": rouge.get("shifted"),
                f"known_rouge_l_{label}": rouge.get("known"),
                f"{label}_generation_tokens_per_second": round(metrics.throughput_tokens_per_s, 1),
                f"shifted_answers_{label}": [
                    {"prompt": e.last_user_turn, "expected": e.reference, "answer": a.text}
                    for e, a, g in zip(test_set.examples, answers, groups, strict=True)
                    if g == "shifted"
                ][:SHOWN_ANSWERS],
            }
            if pairs and label == "before":
                prompts = [pair.prompt for pair in pairs]
                chosen = model.answer_logprobs(prompts, [p.chosen for p in pairs], batch_size=BATCH)
                rejected = model.answer_logprobs(prompts, [p.rejected for p in pairs], batch_size=BATCH)
                summary["preference_accuracy_before"] = preference_accuracy(chosen, rejected)
            if label == "before":
                del model  # two models at a time at most: SFT and SFT + DPO for the pairs
            else:
                models[label] = model
        shifted = np.asarray([g == "shifted" for g in groups])
        if shifted.any():
            significance = compare(correct["sft"][shifted], correct["before"][shifted], seed=SEED)
            summary["shifted_sft_vs_before_mcnemar_p"] = significance.mcnemar_p_value
        if pairs:
            started = time.monotonic()
            comparison = compare_on_pairs(
                models["dpo"], models["sft"], pairs, max_new_tokens=max_new_tokens, batch_size=BATCH
            )
            log(f"SFT + DPO against SFT on {len(pairs)} held-out pairs in {time.monotonic() - started:.0f}s")
            summary |= {
                "win_rate_dpo_vs_sft": comparison.win_rate,
                "wins": comparison.wins,
                "ties": comparison.ties,
                "losses": comparison.losses,
                "preference_accuracy_sft": comparison.champion_preference_accuracy,
                "preference_accuracy_dpo": comparison.candidate_preference_accuracy,
                "rouge_l_to_chosen_sft": comparison.champion_rouge_l_to_chosen,
                "rouge_l_to_chosen_dpo": comparison.candidate_rouge_l_to_chosen,
            }
        else:
            reason = "no held-out preference pairs (every held-out shifted prompt was answered right before feedback)"
            summary["unmeasured"] = {key: reason for key in ("win_rate_dpo_vs_sft", "preference_accuracy_dpo")}
    for label in ("sft", "dpo"):
        before, after = summary.get("shifted_exact_match_before"), summary.get(f"shifted_exact_match_{label}")
        if before is not None and after is not None:
            summary[f"shifted_exact_match_uplift_{label}"] = after - before
    summary["evaluate_stage_seconds"] = round(time.monotonic() - began, 1)
    return summary


if __name__ == "__main__":
    result = run()
    if result is not None:
        print(json.dumps(result, indent=2))
