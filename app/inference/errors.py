from __future__ import annotations

from app.errors import NotFound, PayloadTooLarge, ServiceUnavailable, Unprocessable


class ModelNotFound(NotFound):
    type = "model_not_found"


class InvalidTensor(Unprocessable):
    type = "invalid_tensor"


class BatchTooLarge(PayloadTooLarge):
    type = "batch_too_large"


class ModelUnavailable(ServiceUnavailable):
    type = "model_unavailable"
