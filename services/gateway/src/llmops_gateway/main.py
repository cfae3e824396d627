"""Composition root of the gateway; nothing connects or loads at import.

Not a FastStream app: the gateway consumes no topic with a group. It runs a ``grpc.aio`` server,
a ``DeploymentFeed`` for routing, an ``EventPublisher`` fed by the inference-log buffer (and by
``SubmitFeedback``), and a Prometheus endpoint that opens once the gateway serves (``make up``
uses it as readiness).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import cast

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from llmops.inference.v1 import inference_pb2_grpc
from llmops_config import configure_logging
from llmops_config.tls import add_server_port
from llmops_gateway.adapters.audit import DenialAudit, keys_change
from llmops_gateway.adapters.grpc_api import SERVICE_NAME, Deadlines, Guardrails, InferenceServicer
from llmops_gateway.adapters.inference_log import InferenceLogBuffer, TextRedactor
from llmops_gateway.adapters.metrics import GatewayMetrics
from llmops_gateway.adapters.triton import TritonGenerator, TritonPredictor
from llmops_gateway.domain.admission import Admission
from llmops_gateway.domain.auth import KeyRing, keys_from_list
from llmops_gateway.domain.feedback import FeedbackLimits
from llmops_gateway.domain.generation import GenerationLimits
from llmops_gateway.domain.guardrails import SpanFinder, load_policy
from llmops_gateway.domain.routing import CAUSAL_LM, CLASSIFIER
from llmops_gateway.domain.validation import FieldBounds, Limits
from llmops_gateway.handlers import GenerationCore, InferenceCore
from llmops_gateway.settings import GatewaySettings
from llmops_messaging import EventPublisher
from llmops_serving import DeploymentFeed
from llmops_serving.triton_pool import gateway_target

SERVICE = "gateway"
logger = logging.getLogger(__name__)


class GatewayRuntime:
    """The gateway's resources for one run. ``start`` opens everything and begins serving on
    ``port`` (0 picks a free one, then ``port`` holds it); ``stop`` shuts down gracefully."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        redactor: TextRedactor | None = None,
        metrics: GatewayMetrics | None = None,
        port: int | None = None,
        serve_metrics: bool = True,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or GatewayMetrics()
        self.port = settings.port if port is None else port
        self._redactor = redactor
        self._serve_metrics = serve_metrics
        self.feed = DeploymentFeed(settings.platform, client_id=SERVICE)
        self.publisher = EventPublisher(settings.platform, service=SERVICE)
        # One Triton, or a pool of them balanced by the channel (llmops_serving.triton_pool).
        triton_target, channel_options = gateway_target(settings.platform)
        self.triton_target = triton_target
        self._pool_follower: asyncio.Task[None] | None = None
        self.predictor = TritonPredictor(
            triton_target,
            metrics=self.metrics,
            coalesce=settings.triton_coalesce,
            max_calls_per_model=settings.triton_max_calls_per_model,
            channel_options=channel_options,
        )
        self.generator = TritonGenerator(
            triton_target, triton_model=settings.causal_lm_model, metrics=self.metrics, channel_options=channel_options
        )
        self.health = HealthServicer()
        self.log: InferenceLogBuffer | None = None
        self.audit: DenialAudit | None = None
        self.keys: KeyRing | None = None
        self.server: grpc.aio.Server | None = None

    async def start(self) -> None:
        settings = self.settings
        # Read before anything opens: a malformed keys file or policy stops the start with its reason.
        self.keys = KeyRing(
            path=settings.api_keys_file,
            extra=keys_from_list(settings.api_keys),
            reload_interval_s=settings.keys_reload_interval_s,
            cache_size=settings.keys_cache_size,
            cache_ttl_s=settings.keys_cache_ttl_s,
        )
        if not len(self.keys):
            logger.warning(
                "no API keys configured (LLMOPS_GATEWAY_API_KEYS, LLMOPS_GATEWAY_API_KEYS_FILE): every call is refused"
            )
        policy = load_policy(settings.guardrails_file)
        redactor = self._redactor or await self._build_redactor()
        await self.publisher.start()
        await self.feed.start(timeout=settings.feed_timeout_s)
        await self.predictor.start()
        await self.generator.start()
        self.log = InferenceLogBuffer(
            self.publisher,
            redactor,
            metrics=self.metrics,
            max_size=settings.log_queue_size,
            batch_size=settings.log_publish_batch,
            linger_s=settings.log_linger_s,
        )
        self.log.start()
        self.audit = DenialAudit(self.publisher, metrics=self.metrics)
        self.audit.start()
        audit = self.audit
        self.keys.on_change = lambda change: audit.record(keys_change(change))
        bounds = FieldBounds(
            max_tenant_chars=settings.max_tenant_chars,
            max_request_id_chars=settings.max_request_id_chars,
            max_model_chars=settings.max_model_chars,
        )
        core = InferenceCore(
            predictor=self.predictor,
            log=self.log,
            lookup=self.feed.get,
            known_models=lambda: self._models_of(CLASSIFIER),
            default_model=settings.default_model,
            metrics=self.metrics,
        )
        generation = GenerationCore(
            generator=self.generator,
            log=self.log,
            lookup=self.feed.get,
            known_models=lambda: self._models_of(CAUSAL_LM),
            default_model=settings.default_generate_model,
            base_model_alias=settings.base_model_alias,
            metrics=self.metrics,
        )
        servicer = InferenceServicer(
            core=core,
            keys=self.keys,
            limits=Limits(
                max_text_chars=settings.max_text_chars, max_batch_items=settings.max_batch_items, bounds=bounds
            ),
            admission=Admission(
                max_in_flight=settings.max_in_flight,
                default_deadline_s=settings.default_deadline_s,
                max_deadline_s=settings.max_deadline_s,
            ),
            metrics=self.metrics,
            generation=generation,
            generation_limits=GenerationLimits(
                max_messages=settings.generate_max_messages,
                max_chars=settings.generate_max_chars,
                max_tokens=settings.generate_max_tokens,
                default_max_tokens=settings.generate_default_max_tokens,
                max_temperature=settings.generate_max_temperature,
                max_stop=settings.generate_max_stop,
                max_stop_chars=settings.generate_max_stop_chars,
                bounds=bounds,
            ),
            generation_deadlines=Deadlines(
                default_s=settings.generate_default_deadline_s, max_s=settings.generate_max_deadline_s
            ),
            feedback=self.publisher,
            feedback_limits=FeedbackLimits(
                max_answer_chars=settings.feedback_max_answer_chars,
                max_comment_chars=settings.feedback_max_comment_chars,
                max_request_id_chars=settings.max_request_id_chars,
            ),
            guardrails=Guardrails(policy=policy, finder=_span_finder(redactor)),
            audit=self.audit,
        )
        self.server = grpc.aio.server()
        inference_pb2_grpc.add_InferenceServiceServicer_to_server(servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self.server,
        )
        self.port = add_server_port(
            self.server,
            f"{settings.host}:{self.port}",
            settings.platform,
            require_client_cert=settings.require_client_cert,
            name="the gateway",
        )
        await self.server.start()
        if settings.platform.triton_pool_dns:
            self._pool_follower = asyncio.get_running_loop().create_task(self._follow_triton_pool())
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.metrics.up.set(1)
        if self._serve_metrics:
            self.metrics.serve(settings.metrics_port, host=settings.platform.metrics_host)
        logger.info("gateway serving", extra={"port": self.port, "models": len(self.feed.book.models())})

    async def retarget_triton(self, target: str) -> None:
        """Send new Triton calls and streams to ``target`` (the pool's members changed); those in
        flight finish where they are (a unary call given the longest deadline, a stream to its end)."""
        if target == self.triton_target:
            return
        logger.info("the Triton pool changed", extra={"before": self.triton_target, "after": target})
        self.triton_target = target
        await self.predictor.retarget(target, grace_s=self.settings.max_deadline_s)
        await self.generator.retarget(target)

    async def _follow_triton_pool(self) -> None:
        """Look the DNS pool's members up every ``triton_pool_refresh_s`` (a replica added, a pod
        restarted on a new address) and move to them."""
        platform = self.settings.platform
        while True:
            await asyncio.sleep(platform.triton_pool_refresh_s)
            try:
                target, _ = await asyncio.to_thread(gateway_target, platform)
                await self.retarget_triton(target)
            except Exception:
                logger.exception("looking the Triton pool up failed; tried again at the next refresh")

    def _models_of(self, kind: str) -> list[str]:
        """Deployed models of one kind: a request naming no model goes to the only one, if one."""
        return [m.model_name for m in self.feed.book.models() if m.kind == kind]

    async def _build_redactor(self) -> TextRedactor:
        from llmops_privacy import Redactor

        # Built once at start: it loads Presidio's recognizers (seconds).
        redactor: TextRedactor = await asyncio.to_thread(Redactor)
        self._redactor = redactor
        return redactor

    async def stop(self) -> None:
        """Stop accepting calls, let in-flight ones finish, publish buffered logs (bounded), close."""
        self.metrics.up.set(0)
        with contextlib.suppress(Exception):
            await self.health.enter_graceful_shutdown()
        if self.server is not None:
            await self.server.stop(self.settings.shutdown_grace_s)
            self.server = None
        if self.log is not None:
            await self.log.stop(timeout=self.settings.log_drain_timeout_s)
            self.log = None
        if self.audit is not None:
            await self.audit.stop(timeout=self.settings.log_drain_timeout_s)
            self.audit = None
        if self._pool_follower is not None:
            self._pool_follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pool_follower
        await self.feed.stop()
        await self.predictor.close()
        await self.generator.close()
        await self.publisher.stop()

    async def __aenter__(self) -> GatewayRuntime:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


def _span_finder(redactor: TextRedactor) -> SpanFinder | None:
    """The redactor, if it can also say where PII is (streams need the spans); None otherwise."""
    return cast(SpanFinder, redactor) if callable(getattr(redactor, "find", None)) else None


async def serve(settings: GatewaySettings | None = None) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    settings = settings or GatewaySettings()
    platform = settings.platform
    configure_logging(service=SERVICE, level=platform.log_level, log_format=platform.log_format)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    async with GatewayRuntime(settings):
        await stopping.wait()
        logger.info("shutting down")


def main() -> None:
    asyncio.run(serve())
