from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import APIRouter, Request

from app.billing.stripe_gateway import StripeGateway, WebhookInvalid
from app.billing.sync import apply_webhook
from app.db.session import SessionDep
from app.errors import BadRequest, ServiceUnavailable, error_schema

router = APIRouter(tags=["webhooks"])
log = logging.getLogger("tollgate.billing.webhooks")


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
async def stripe_webhook(request: Request, session: SessionDep) -> dict[str, Any]:
    """Stripe events: signature verified (300 s tolerance), deduplicated by event id.
    ``invoice.paid``, ``invoice.payment_failed``, ``invoice.voided`` and
    ``invoice.marked_uncollectible`` update the local invoice; other types are ignored."""
    gateway: StripeGateway | None = request.app.state.stripe
    if gateway is None or not request.app.state.settings.stripe_webhook_secret:
        raise StripeNotConfigured("Stripe webhooks are not configured on this server")
    payload = await request.body()
    try:
        gateway.verify_webhook(payload, request.headers.get("stripe-signature", ""))
    except WebhookInvalid as exc:
        raise InvalidSignature(f"webhook rejected: {exc}") from None
    # Verified: keep the event exactly as sent (plain JSON types) for the dedupe record.
    event = orjson.loads(payload)
    if not isinstance(event, dict):
        raise InvalidSignature("webhook rejected: the body is not an event object")
    outcome = await apply_webhook(session, event)
    log.info("stripe event", extra={"event_id": event.get("id"), "outcome": outcome})
    return {"received": True, "outcome": outcome}
