from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from fastapi import APIRouter, Request

from app.auth.deps import ProtectedRoute
from app.billing.deps import stripe_gateway
from app.billing.errors import MalformedEvent
from app.billing.stripe_gateway import StripeGateway, WebhookInvalid
from app.billing.sync import apply_webhook
from app.clock.deps import ClockDep
from app.config import request_settings
from app.db.session import SessionDep
from app.errors import BadRequest, ServiceUnavailable, error_schema

router = APIRouter(tags=["webhooks"], route_class=ProtectedRoute)
log = logging.getLogger("tollgate.billing.webhooks")

# Accepted clock difference with Stripe, both ways (the SDK itself only rejects old events).
TOLERANCE_S = 300
# Stripe events nest about ten levels deep. Far deeper bodies are not events, and the SDK
# turns them into objects recursively, which can exhaust the stack.
MAX_DEPTH = 64


class InvalidSignature(BadRequest):
    type = "invalid_signature"


class StripeNotConfigured(ServiceUnavailable):
    type = "stripe_not_configured"


@router.post(
    "/webhooks/stripe",
    responses={
        400: error_schema("Forged, stale or malformed event, or an unknown invoice"),
        503: error_schema("Stripe is not configured on this server"),
    },
)
async def stripe_webhook(request: Request, session: SessionDep, clock: ClockDep) -> dict[str, Any]:
    """Stripe events: signature verified (300 s tolerance), deduplicated by event id.
    ``invoice.paid``, ``invoice.payment_failed``, ``invoice.voided`` and
    ``invoice.marked_uncollectible`` update the local invoice; other types are ignored."""
    gateway = stripe_gateway(request)
    if gateway is None or not request_settings(request).stripe_webhook_secret:
        raise StripeNotConfigured("Stripe webhooks are not configured on this server")
    payload = await request.body()
    # Parsed before the signature is checked only to know whether the SDK may choke on it;
    # what is wrong with the body is told only to a sender who signed it.
    event, problem = _parse_event(payload)
    _verify_signature(
        gateway, payload, request.headers.get("stripe-signature", ""), problem is not None
    )
    if event is None:
        raise MalformedEvent(f"webhook rejected: {problem}")
    outcome = await apply_webhook(session, event, now=clock.now())
    log.info("stripe event", extra={"event_id": event.get("id"), "outcome": outcome})
    return {"received": True, "outcome": outcome}


def _parse_event(payload: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """The body as plain JSON types (kept exactly as sent for the dedupe record), or why
    it is not an event object. orjson is strict: NaN/Infinity, numbers out of range, lone
    surrogates and invalid UTF-8 are errors, not values."""
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return None, f"the body is not valid JSON ({exc})"
    if not isinstance(event, dict):
        return None, "the body is not a JSON object"
    if _deeper_than(event, MAX_DEPTH):
        return None, f"the body is nested more than {MAX_DEPTH} levels deep"
    return event, None


def _deeper_than(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            node = list(node.values())
        if isinstance(node, list):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in node)
    return False


def _verify_signature(
    gateway: StripeGateway, payload: bytes, header: str, body_malformed: bool
) -> None:
    # Stripe sends only ASCII here; the SDK's constant-time compare raises TypeError on
    # anything else (Starlette decodes header bytes as latin-1).
    if not header.isascii():
        raise InvalidSignature("webhook rejected: the Stripe-Signature header is not ASCII")
    try:
        gateway.verify_webhook(payload, header, tolerance_s=TOLERANCE_S)
    except WebhookInvalid as exc:
        raise InvalidSignature(f"webhook rejected: {exc}") from None
    except Exception:
        # The SDK checks the signature before it parses the body, so on a body already
        # known to be malformed anything else it raises comes from its own parser (lists,
        # null, deep nesting). The caller rejects that body; nothing is applied either way.
        if not body_malformed:
            raise
    # The real time, not the app's clock: the SDK checks the tolerance against time.time().
    if _signed_at(header) > time.time() + TOLERANCE_S:
        # A signature made for later is a clock problem or one prepared for replay.
        raise InvalidSignature("webhook rejected: the signature timestamp is in the future")


def _signed_at(header: str) -> int:
    """The header's ``t=`` value, read as the SDK reads it (first ``t``; already verified)."""
    for item in header.split(","):
        parts = item.split("=", 2)
        if parts[0] == "t" and len(parts) > 1:
            try:
                return int(parts[1])
            except ValueError:
                break
    raise InvalidSignature("webhook rejected: the Stripe-Signature header has no valid timestamp")
