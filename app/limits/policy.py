"""What the request path asks of the limiter: per-key limits in, HTTP headers out."""

from __future__ import annotations

import math
from typing import Any

from app.auth.principal import Principal
from app.errors import AppError, PayloadTooLarge
from app.limits.ratelimit import Decision, Limit, LimitState, max_limit
from app.validation import MAX_PER_MINUTE

PERIOD_S = 60.0
# The largest per-minute limit the limiter can keep exactly: the API refuses more (the bound
# lives in app.validation, below every domain); a larger value stored before it did is served
# as this.
if max_limit(PERIOD_S) != MAX_PER_MINUTE:  # pragma: no cover - a change to the GCRA scaling
    raise RuntimeError(f"MAX_PER_MINUTE must be {max_limit(PERIOD_S)}")


class RateLimited(AppError):
    status_code = 429
    type = "rate_limit_exceeded"


class BatchExceedsRateLimit(PayloadTooLarge):
    type = "batch_exceeds_rate_limit"


def limits_for(principal: Principal, items: int) -> list[tuple[str, Limit]]:
    """(header suffix, limit) pairs: requests and items per minute, when set."""
    if principal.items_per_minute and items > principal.items_per_minute:
        raise BatchExceedsRateLimit(
            f"{items} items can never fit this key's limit of "
            f"{principal.items_per_minute} items per minute; send smaller batches"
        )
    out = []
    if principal.requests_per_minute:
        out.append(
            (
                "requests",
                Limit(
                    f"k:{principal.key_id}:requests",
                    min(principal.requests_per_minute, MAX_PER_MINUTE),
                    1,
                    PERIOD_S,
                ),
            )
        )
    if principal.items_per_minute:
        out.append(
            (
                "items",
                Limit(
                    f"k:{principal.key_id}:items",
                    min(principal.items_per_minute, MAX_PER_MINUTE),
                    items,
                    PERIOD_S,
                ),
            )
        )
    return out


def _header(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string"}}


# The OpenAPI ``headers`` of a metered response (success or 429): each pair is sent when the
# key has that limit.
RATELIMIT_HEADERS: dict[str, dict[str, Any]] = {
    f"x-ratelimit-{part}-{name}": _header(text.format(name))
    for name in ("requests", "items")
    for part, text in (
        ("limit", "The key's {} per minute (sent when the key has this limit)"),
        ("remaining", "{} left in the current window"),
        ("reset", "Seconds until the {} window is full again, e.g. 0.250s"),
    )
}
RETRY_AFTER_HEADER: dict[str, dict[str, Any]] = {
    "Retry-After": _header("Whole seconds to wait before retrying")
}


def _seconds(value: float) -> str:
    return f"{max(0.0, value):.3f}s"


def ratelimit_headers(names: list[str], decision: Decision) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, state in zip(names, decision.states, strict=True):
        headers[f"x-ratelimit-limit-{name}"] = str(state.limit)
        headers[f"x-ratelimit-remaining-{name}"] = str(state.remaining)
        headers[f"x-ratelimit-reset-{name}"] = _seconds(state.reset_s)
    return headers


def retry_after(states: tuple[LimitState, ...]) -> str:
    wait = max(s.retry_after_s for s in states)
    return str(max(1, math.ceil(wait))) if math.isfinite(wait) else "60"
