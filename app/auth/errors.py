from __future__ import annotations

from app.errors import Forbidden, Unauthorized


class MissingApiKey(Unauthorized):
    type = "missing_api_key"


class InvalidApiKey(Unauthorized):
    type = "invalid_api_key"


class KeyRevoked(Unauthorized):
    type = "key_revoked"


class KeyExpired(Unauthorized):
    type = "key_expired"


class InsufficientScope(Forbidden):
    type = "insufficient_scope"


class CustomerSuspended(Forbidden):
    type = "customer_suspended"


class ModelNotAllowed(Forbidden):
    type = "model_not_allowed"
