"""What the inference endpoints read from the running app, as typed getters and
dependencies."""

from __future__ import annotations

from typing import Annotated, Protocol

from fastapi import Depends
from starlette.requests import HTTPConnection

from app.catalog.store import ModelStore
from app.inference.registry import ModelRegistry
from app.inference.service import InferenceService
from app.inference.sync import CatalogSync


class InferenceResources(Protocol):
    """``app.resources.State`` provides it."""

    @property
    def registry(self) -> ModelRegistry: ...

    @property
    def inference(self) -> InferenceService: ...

    @property
    def store(self) -> ModelStore: ...

    @property
    def catalog_sync(self) -> CatalogSync: ...


def registry(request: HTTPConnection) -> ModelRegistry:
    """The running app's model registry."""
    resources: InferenceResources = request.app.resources
    return resources.registry


def inference_service(request: HTTPConnection) -> InferenceService:
    """The running app's metered inference service (read directly on the hot routes)."""
    resources: InferenceResources = request.app.resources
    return resources.inference


def catalog_sync(request: HTTPConnection) -> CatalogSync:
    """This replica's catalog reconciler (admin writes apply locally through it at once)."""
    resources: InferenceResources = request.app.resources
    return resources.catalog_sync


def model_store(request: HTTPConnection) -> ModelStore:
    resources: InferenceResources = request.app.resources
    return resources.store


Registry = Annotated[ModelRegistry, Depends(registry)]
Service = Annotated[InferenceService, Depends(inference_service)]
