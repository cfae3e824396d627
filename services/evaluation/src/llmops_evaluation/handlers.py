"""The evaluation service's handlers: a finished training run in, a decision event out."""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from llmops_evaluation.adapters.datasets import load_test_set
from llmops_evaluation.adapters.instructions import load_instruction_test_set, load_preference_pairs
from llmops_evaluation.adapters.metrics import EvaluationMetrics
from llmops_evaluation.adapters.models import GeneratorModel, kind_of_version, load_generator, load_scorer
from llmops_evaluation.adapters.probes import load_probes
from llmops_evaluation.adapters.report import write_report
from llmops_evaluation.adapters.text_report import write_generative_report
from llmops_evaluation.adapters.toxicity import load_callable
from llmops_evaluation.domain.evaluation import evaluate
from llmops_evaluation.domain.generative_evaluation import GenerationSettings, evaluate_generative
from llmops_evaluation.domain.policy import Policy, policy_for
from llmops_evaluation.errors import EvaluationRejected, ModelUnavailable
from llmops_evaluation.settings import EvaluationSettings
from llmops_events import Envelope, derived_id
from llmops_events.v1 import (
    Decision,
    EvaluationCompleted,
    RuleFailure,
    TrainingCompleted,
)
from llmops_messaging import EventPublisher
from llmops_messaging.tracing import annotate, job_span
from llmops_models import model_path
from llmops_models.kinds.causal_lm import CAUSAL_LM
from llmops_serving import Champions
from llmops_storage import ArtifactStore
from llmops_storage.evidently_workspace import ReportWorkspace

logger = logging.getLogger(__name__)


class EvaluationService:
    """Scores each candidate against the champion and publishes the policy's decision."""

    def __init__(
        self,
        *,
        settings: EvaluationSettings,
        store: ArtifactStore,
        publisher: EventPublisher,
        champions: Champions,
        metrics: EvaluationMetrics,
        workspace: ReportWorkspace | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._workspace = workspace
        self._publisher = publisher
        self._champions = champions
        self._metrics = metrics
        # One evaluation at a time: two would halve each other's latency figures.
        self._lock = asyncio.Lock()
        # Generative models: the probes and the user's toxicity scorer are read now, so a broken
        # file or name stops the service at start-up instead of rejecting every candidate.
        self._probes = load_probes(settings.injection_probes_file)
        self._toxicity = load_callable(settings.toxicity_scorer) if settings.toxicity_scorer else None
        self._redactor: Any = None

    async def on_training_completed(self, envelope: Envelope[Any]) -> None:
        event: TrainingCompleted = envelope.data
        # Every deployments event published before this one was handled is folded in first.
        await self._champions.sync(timeout=self._settings.champion_sync_timeout_s)
        dataset_id = str(event.lineage.get("dataset_id", ""))
        attributes: dict[str, str | int | float | bool] = {
            "llmops.model.name": event.model_name,
            "llmops.model.version": event.model_version,
            "llmops.dataset.id": dataset_id,
        }
        # One span per evaluation in the training's trace; the decision is published inside it,
        # so the deployment continues that trace.
        with job_span("evaluation", attributes=attributes):
            async with self._lock:
                completed = await asyncio.to_thread(
                    self.evaluate_version,
                    event.model_name,
                    event.model_version,
                    dataset_id=dataset_id,
                    artifact_uri=event.artifact_uri,
                )
            annotate({"llmops.evaluation.decision": completed.decision.value})
            # The id derives from the input's: a re-run (a crash before the offset was committed)
            # publishes the same event again, and deployment skips the copy.
            await self._publisher.publish(
                completed,
                correlationid=envelope.correlationid,
                id=derived_id(envelope.id, EvaluationCompleted.event_type),
            )

    def evaluate_version(
        self, model_name: str, version: int, *, dataset_id: str, artifact_uri: str | None = None
    ) -> EvaluationCompleted:
        """Evaluate one candidate version (also what ``make evaluate`` calls); never raises on bad artifacts."""
        started = time.monotonic()
        settings = self._settings
        champion_version = self._champions.champion(model_name)
        if champion_version == version:
            champion_version = None  # re-evaluating the champion: judge it on absolute rules
        policy = policy_for(model_name, settings.policy_dir)
        workdir = Path(tempfile.mkdtemp(prefix="evaluation-"))
        base = dict(
            model_name=model_name,
            model_version=version,
            candidate_artifact_uri=artifact_uri or self._store.uri(model_path(model_name, version)),
            champion_version=champion_version,
        )
        try:
            if kind_of_version(self._store, model_name, version) is CAUSAL_LM:
                completed = self._evaluate_generative(
                    model_name, version, dataset_id=dataset_id, policy=policy, base=base, workdir=workdir
                )
                self._record(completed, started)
                return completed
            golden = settings.golden_set_dir / f"{model_name}.csv" if settings.golden_set_dir else None
            test_set = load_test_set(
                self._store, dataset_id, max_examples=settings.max_test_examples, seed=settings.seed, golden_csv=golden
            )
            candidate = load_scorer(self._store, model_name, version, workdir)
            champion = None
            if champion_version is not None:
                try:
                    champion = load_scorer(self._store, model_name, champion_version, workdir)
                except ModelUnavailable as error:
                    logger.warning(
                        "champion unavailable; judging the candidate on absolute rules",
                        extra={"model": model_name, "champion": champion_version, "reason": error.reason},
                    )
                    base["champion_version"] = None
            verdict = evaluate(
                candidate=candidate,
                champion=champion,
                test_set=test_set,
                policy=policy,
                latency_examples=settings.latency_examples,
                seed=settings.seed,
                optimized=candidate.optimized,
            )
        except EvaluationRejected as error:
            completed = EvaluationCompleted(
                **base, decision=Decision.REJECTED, reasons=[RuleFailure(rule=error.reason, message=error.detail)]
            )
            self._record(completed, started)
            return completed
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

        completed = EvaluationCompleted(
            **base,
            decision=verdict.decision,
            reasons=verdict.reasons,
            candidate_metrics=verdict.candidate.summary() | verdict.optimized_summary() | {"test_set": test_set.origin},
            champion_metrics=(
                verdict.champion.summary()
                | {"comparison": verdict.comparison.model_dump(mode="json") if verdict.comparison else None}
                if verdict.champion
                else {}
            ),
        )
        html_uri, _ = write_report(
            self._store,
            model_name=model_name,
            version=version,
            test_set=test_set,
            verdict=verdict,
            decision_record={"policy": policy.model_dump(), **completed.model_dump(mode="json")},
            workspace=self._workspace,
        )
        completed = completed.model_copy(update={"report_uri": html_uri})
        self._record(completed, started)
        return completed

    def _evaluate_generative(
        self, model_name: str, version: int, *, dataset_id: str, policy: Policy, base: dict[str, Any], workdir: Path
    ) -> EvaluationCompleted:
        """A ``causal_lm`` candidate (and its champion, if it is one on the same base model): both
        answer the same test conversations and probes; the policy's ``causal_lm`` rules decide."""
        import torch

        settings = self._settings
        rules = policy.generative()
        test_set = load_instruction_test_set(
            self._store, dataset_id, max_examples=settings.generation_max_examples, seed=settings.seed
        )
        if not test_set.examples:
            raise EvaluationRejected(
                "min_examples",
                f"the {test_set.origin} has no readable conversation ({test_set.invalid_rows} unreadable row(s))",
            )
        pairs, invalid_pairs = load_preference_pairs(
            self._store, dataset_id, max_pairs=settings.preference_max_pairs, seed=settings.seed
        )
        if settings.generation_threads:
            torch.set_num_threads(settings.generation_threads)
        candidate = load_generator(self._store, model_name, version, workdir)
        champion: GeneratorModel | None = None
        champion_version = base["champion_version"]
        if champion_version is not None:
            try:
                if kind_of_version(self._store, model_name, champion_version) is not CAUSAL_LM:
                    raise ModelUnavailable(
                        "kind_mismatch", f"champion version {champion_version} is not a causal_lm model"
                    )
                champion = load_generator(self._store, model_name, champion_version, workdir)
            except ModelUnavailable as error:
                logger.warning(
                    "champion unavailable; judging the candidate on absolute rules",
                    extra={"model": model_name, "champion": champion_version, "reason": error.reason},
                )
                base["champion_version"] = None
        verdict = evaluate_generative(
            candidate=candidate,
            champion=champion,
            test_set=test_set,
            policy=rules,
            settings=GenerationSettings(
                max_new_tokens=settings.generation_max_new_tokens,
                batch_size=settings.generation_batch_size,
                seed=settings.seed,
            ),
            probes=self._probes,
            find_pii=self._find_pii,
            toxicity=self._toxicity,
            pairs=pairs,
        )
        preferences = verdict.preferences
        context = {
            "test_set": test_set.origin,
            "invalid_rows": test_set.invalid_rows,
            "invalid_output_formats": test_set.invalid_formats,
            "preference_pairs": len(pairs),
            "invalid_preference_pairs": invalid_pairs,
        }
        if preferences is not None:
            context.update(
                win_rate=preferences.win_rate,
                wins=preferences.wins,
                ties=preferences.ties,
                losses=preferences.losses,
                preference_accuracy=preferences.candidate_preference_accuracy,
                rouge_l_to_chosen=preferences.candidate_rouge_l_to_chosen,
            )
        completed = EvaluationCompleted(
            **base,
            decision=verdict.decision,
            reasons=verdict.reasons,
            candidate_metrics=verdict.candidate.metrics.summary() | context,
            champion_metrics=(
                verdict.champion.metrics.summary()
                | {
                    "exact_match_comparison": verdict.exact_match_comparison.model_dump(mode="json")
                    if verdict.exact_match_comparison
                    else None,
                    "rouge_l_comparison": verdict.rouge_l_comparison.model_dump(mode="json")
                    if verdict.rouge_l_comparison
                    else None,
                    "preference_accuracy": preferences.champion_preference_accuracy if preferences else None,
                    "rouge_l_to_chosen": preferences.champion_rouge_l_to_chosen if preferences else None,
                }
                if verdict.champion
                else {}
            ),
        )
        html_uri, _ = write_generative_report(
            self._store,
            model_name=model_name,
            version=version,
            test_set=test_set,
            verdict=verdict,
            decision_record={"policy": rules.model_dump(), **completed.model_dump(mode="json")},
            workspace=self._workspace,
        )
        return completed.model_copy(update={"report_uri": html_uri})

    def _find_pii(self, text: str) -> list[tuple[str, str]]:
        """The PII in ``text`` as (kind, matched text), with the platform's redactor (built on first use).
        The redactor finds PII in the Unicode-normalised text, so the matches are cut from that."""
        from llmops_privacy import Redactor, normalize_text

        if self._redactor is None:
            self._redactor = Redactor()
        text = normalize_text(text)
        return [(finding.kind.value, text[finding.start : finding.end]) for finding in self._redactor.find(text)]

    def _record(self, completed: EvaluationCompleted, started: float) -> None:
        rule = completed.reasons[0].rule if completed.reasons else "none"
        self._metrics.decisions.labels(completed.decision.value, rule).inc()
        self._metrics.duration.observe(time.monotonic() - started)
        logger.info(
            "evaluation decided",
            extra={
                "model": completed.model_name,
                "version": completed.model_version,
                "decision": completed.decision.value,
                "reasons": [r.rule for r in completed.reasons],
                "seconds": round(time.monotonic() - started, 1),
            },
        )
