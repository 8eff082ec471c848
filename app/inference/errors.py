from __future__ import annotations

from app.catalog.errors import ModelNotFound
from app.errors import PayloadTooLarge, ServiceUnavailable, Unprocessable

__all__ = ["BatchTooLarge", "InvalidTensor", "ModelNotFound", "ModelUnavailable"]


class InvalidTensor(Unprocessable):
    type = "invalid_tensor"


class BatchTooLarge(PayloadTooLarge):
    type = "batch_too_large"


class ModelUnavailable(ServiceUnavailable):
    type = "model_unavailable"
