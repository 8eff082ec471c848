"""What the inference endpoints read from the running app, as typed getters and
dependencies."""

from __future__ import annotations

from typing import Annotated, Protocol

from fastapi import Depends
from starlette.requests import HTTPConnection

from app.inference.registry import ModelRegistry
from app.inference.service import InferenceService


class InferenceResources(Protocol):
    """``app.resources.State`` provides it."""

    @property
    def registry(self) -> ModelRegistry: ...

    @property
    def inference(self) -> InferenceService: ...


def registry(request: HTTPConnection) -> ModelRegistry:
    """The running app's model registry."""
    resources: InferenceResources = request.app.resources
    return resources.registry


def inference_service(request: HTTPConnection) -> InferenceService:
    """The running app's metered inference service (read directly on the hot routes)."""
    resources: InferenceResources = request.app.resources
    return resources.inference


Registry = Annotated[ModelRegistry, Depends(registry)]
Service = Annotated[InferenceService, Depends(inference_service)]
