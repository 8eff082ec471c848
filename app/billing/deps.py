"""What billing's endpoints read from the running app."""

from __future__ import annotations

from typing import Protocol

from starlette.requests import HTTPConnection

from app.billing.stripe_gateway import StripeGateway


class BillingResources(Protocol):
    """``app.resources.State`` provides it."""

    @property
    def stripe(self) -> StripeGateway | None: ...


def stripe_gateway(request: HTTPConnection) -> StripeGateway | None:
    """The running app's Stripe gateway; None when Stripe is not configured."""
    resources: BillingResources = request.app.resources
    return resources.stripe
