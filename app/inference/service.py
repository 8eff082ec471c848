"""The metered inference path.

Every authenticated inference request ends in exactly one usage row. A prediction is
returned only after its (billable) row is committed; if the ledger cannot take it, the
caller gets 503 and no prediction. Failed requests are recorded as non-billable rows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import Counter, Histogram

from app.auth.authenticator import require
from app.auth.errors import ModelNotAllowed
from app.auth.principal import Principal, Scope
from app.clock import Clock, SystemClock
from app.errors import AppError, ClientClosedRequest, InvalidJSON
from app.inference.errors import InvalidTensor
from app.inference.predictor import Array, Prediction
from app.inference.registry import ModelRegistry, ServedModel
from app.limits.policy import RateLimited, limits_for, ratelimit_headers, retry_after
from app.limits.quota import QuotaExceeded, SpendTracker, spend_headers
from app.limits.ratelimit import RateLimiter
from app.metering.writer import LedgerUnavailable, MeterWriter, UsageRow
from app.observability.metrics import Metrics, metric_variant

log = logging.getLogger("tollgate.inference")

_MAX_NAME = 128


@dataclass(frozen=True, slots=True)
class _Series:
    inference_duration: Histogram
    requests_ok: Counter
    request_duration: Histogram
    items: Counter


class InferenceService:
    def __init__(
        self,
        registry: ModelRegistry,
        meter: MeterWriter,
        metrics: Metrics,
        limiter: RateLimiter,
        spend: SpendTracker,
        clock: Clock | None = None,
    ) -> None:
        self.registry = registry
        self.clock = clock or SystemClock()
        self.meter = meter
        self.metrics = metrics
        self.limiter = limiter
        self.spend = spend
        self._series_cache: dict[tuple[str, str, str, str], _Series] = {}

    async def predict(
        self,
        principal: Principal,
        *,
        request_id: str,
        started_ns: int,
        model: str,
        version: str | None,
        read_body: Callable[[], Awaitable[bytes]],
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """``POST /v1/models/{model}/predict``: returns the response body and its headers."""

        async def decode(served: ServedModel) -> Array:
            assert served.predictor is not None
            inputs, numbers_only = _parse_inputs(await read_body())
            return served.predictor.decode(inputs, numbers_only=numbers_only)

        served, prediction, headers = await self.run(
            principal,
            request_id=request_id,
            started_ns=started_ns,
            model=model,
            version=version,
            endpoint="v1.predict",
            decode=decode,
        )
        body = {
            "request_id": request_id,
            # the ref served (``cnn:int8``), so a caller sees which variant answered
            "model": served.ref,
            "variant": served.variant,
            "version": served.version,
            "device": served.device,
            "outputs": prediction.outputs,
            "usage": {"items": prediction.items, "compute_ms": prediction.compute_us / 1000},
        }
        return body, headers

    async def run(
        self,
        principal: Principal,
        *,
        request_id: str,
        started_ns: int,
        model: str,
        version: str | None,
        endpoint: str,
        decode: Callable[[ServedModel], Awaitable[Array]],
    ) -> tuple[ServedModel, Prediction, dict[str, str]]:
        """The metered path shared by every protocol: scope, model, ``decode`` (the
        protocol's own input format), limits and quota, the batcher, then the ledger.
        Returns the model, its prediction (``raw`` holds the output array) and the
        rate-limit/spend headers. Every outcome after authentication writes one row."""
        served: ServedModel | None = None
        headers: dict[str, str] = {}
        reserved = 0
        try:
            require(principal, Scope.predict)
            served = self.registry.get(model, version)
            if principal.allowed_models is not None and not (
                {model, served.name} & principal.allowed_models
            ):
                raise ModelNotAllowed(f"this API key may not call model '{model}'")
            assert served.predictor is not None and served.batcher is not None  # get(): available
            batch = await decode(served)
            items = int(batch.shape[0])
            headers = await self._admit(principal, served.name, served.variant, items)
            reserved = items if self._capped(principal) else 0
            prediction = await served.batcher.submit(batch)
        except Exception as exc:
            if reserved and served is not None:
                self.spend.release(principal.customer_id, served.name, served.variant, reserved)
            if isinstance(exc, ClientClosedRequest):
                # The request never arrived whole (the client left, or its body timed out
                # in the server, app/server.py): nothing was served, nothing is metered.
                raise
            status = exc.status_code if isinstance(exc, AppError) else 500
            await self._record_failure(
                principal, request_id, started_ns, model, served, status, endpoint
            )
            raise

        series = self._series(served)
        series.inference_duration.observe(prediction.compute_us / 1e6)
        try:
            await self.meter.record(
                self._row(
                    principal,
                    request_id,
                    started_ns,
                    model,
                    served,
                    200,
                    endpoint,
                    billable=True,
                    items=prediction.items,
                    compute_us=prediction.compute_us,
                )
            )
        except LedgerUnavailable:
            if reserved:
                self.spend.release(principal.customer_id, served.name, served.variant, reserved)
            raise
        if reserved:
            self.spend.add_compute(
                principal.customer_id, served.name, served.variant, prediction.compute_us
            )
        series.requests_ok.inc()
        series.request_duration.observe((time.perf_counter_ns() - started_ns) / 1e9)
        series.items.inc(prediction.items)
        return served, prediction, headers

    def _series(self, served: ServedModel) -> _Series:
        """The labelled metric children of a successful request (``labels()`` costs more
        than the update itself; looked up once per model variant, version and device)."""
        variant = metric_variant(served.variant)
        key = (served.name, variant, served.version, served.device)
        series = self._series_cache.get(key)
        if series is None:
            m = self.metrics
            series = _Series(
                inference_duration=m.inference_duration.labels(*key),
                requests_ok=m.requests_total.labels(served.name, variant, served.version, "200"),
                request_duration=m.request_duration.labels(served.name, variant),
                items=m.items_total.labels(served.name, variant, served.version),
            )
            self._series_cache[key] = series
        return series

    @staticmethod
    def _capped(principal: Principal) -> bool:
        return principal.plan is not None and principal.plan.spend_cap is not None

    async def _admit(
        self, principal: Principal, model: str, variant: str | None, items: int
    ) -> dict[str, str]:
        """Rate limits (429) and the spend cap (402). Returns the headers to send."""
        headers: dict[str, str] = {}
        named = limits_for(principal, items)
        if named:
            decision = await self.limiter.hit([limit for _, limit in named])
            headers = ratelimit_headers([name for name, _ in named], decision)
            if not decision.allowed:
                self.metrics.ratelimited_total.inc()
                raise RateLimited(
                    "rate limit exceeded: "
                    + ", ".join(
                        f"{name} {state.limit}/min"
                        for (name, _), state in zip(named, decision.states, strict=True)
                        if state.retry_after_s > 0
                    ),
                    headers={**headers, "Retry-After": retry_after(decision.states)},
                )
        if principal.plan is not None and principal.plan.spend_cap is not None:
            try:
                spent, _cap = await self.spend.check(
                    principal.customer_id, principal.plan, model, variant, items
                )
            except QuotaExceeded:
                self.metrics.quota_exceeded_total.inc()
                raise
            headers.update(spend_headers(spent, principal.plan))
        return headers

    async def _record_failure(
        self,
        principal: Principal,
        request_id: str,
        started_ns: int,
        model: str,
        served: ServedModel | None,
        status: int,
        endpoint: str,
    ) -> None:
        name = served.name if served else "unknown"
        variant = metric_variant(served.variant) if served else ""
        version = served.version if served else ""
        self._count(name, variant, version, status, started_ns)
        try:
            await self.meter.record(
                self._row(
                    principal,
                    request_id,
                    started_ns,
                    model,
                    served,
                    status,
                    endpoint,
                    billable=False,
                )
            )
        except LedgerUnavailable:
            # The request already failed; its own error is the more useful answer.
            log.warning(
                "usage row for a failed request was not recorded",
                extra={"request_id": request_id, "status": status},
            )

    def _count(self, model: str, variant: str, version: str, status: int, started_ns: int) -> None:
        self.metrics.requests_total.labels(model, variant, version, str(status)).inc()
        self.metrics.request_duration.labels(model, variant).observe(
            (time.perf_counter_ns() - started_ns) / 1e9
        )

    def _row(
        self,
        principal: Principal,
        request_id: str,
        started_ns: int,
        model: str,
        served: ServedModel | None,
        status: int,
        endpoint: str,
        *,
        billable: bool,
        items: int = 0,
        compute_us: int = 0,
    ) -> UsageRow:
        return UsageRow(
            request_id=request_id,
            api_key_id=principal.key_id,
            customer_id=principal.customer_id,
            endpoint=endpoint,
            # the name as asked for (from the path): NUL is the one character Postgres text
            # cannot hold
            model=served.name if served else model[:_MAX_NAME].replace("\x00", "\ufffd"),
            version=served.version if served else None,
            variant=served.variant if served else None,
            device=served.device if served else None,
            items=items,
            compute_us=compute_us,
            latency_us=(time.perf_counter_ns() - started_ns) // 1000,
            status_code=status,
            billable=billable,
            created_at=self.clock.now(),
        )


def _parse_inputs(body: bytes) -> tuple[Any, bool]:
    """The body's ``inputs``, and whether they can hold only numbers (no string, boolean
    or null anywhere in the body), which lets the decoder read them straight to float32."""
    if not body:
        raise InvalidJSON('the request body is empty; send {"inputs": ...}')
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSON(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise InvalidTensor("the request body must be a JSON object with an 'inputs' field")
    inputs = payload["inputs"]
    # numpy reads true as 1: refuse booleans among numbers. Scanned only when the body can
    # hold one: every ``true`` has an ``r`` and every ``false`` an ``l``, and a body of numbers
    # under ``{"inputs": ...}`` has neither. One-byte searches run at memchr speed; searching
    # for ``b"true"`` itself cost 95 us on a 35 KB image body (digits defeat CPython's
    # substring skip table), a third of the request's decoding (docs/benchmarks.md, issue 17).
    # Every ``null`` has an ``l`` too; the only quotes in a body of numbers are the key's.
    letters = b"r" in body or b"l" in body
    if letters and _holds_bool(inputs):
        raise InvalidTensor("inputs must be numbers (got a boolean)")
    return inputs, not letters and body.count(b'"') == 2


def _holds_bool(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, bool):
            return True
        if isinstance(item, list):
            stack.extend(item)
    return False
