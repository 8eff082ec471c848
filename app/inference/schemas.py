from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class PredictRequest(BaseModel):
    """``inputs`` is one item (e.g. a ``[3, 28, 28]`` image) or a list of items."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"inputs": [0.5, -1.0, 0.25, 0.0, 1.5, -0.5, 2.0, 0.75, -2.0, 1.0]}]
        }
    )

    inputs: list[Any] = Field(
        description="One item shaped like the model's input tensor, or a list of such items."
    )


class Usage(BaseModel):
    items: int
    compute_ms: float


class PredictResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "request_id": "019af3c2b1e40a7d5c9e2f13b8a6d04c",
                    "model": "cnn:int8",
                    "variant": "int8",
                    "version": "1",
                    "device": "cpu",
                    "outputs": [
                        {
                            "label": "7",
                            "logits": [-3.1, -1.2, 0.4, 1.0, -2.2, -0.7, -4.0, 9.8, -0.3, 1.5],
                        }
                    ],
                    "usage": {"items": 1, "compute_ms": 0.41},
                }
            ]
        }
    )

    request_id: str
    model: str = Field(
        description="The model served, as called: name, or name:variant (``cnn:int8``)"
    )
    variant: str | None = Field(
        description="The variant served (``int8``); null for the base (uncompressed) model"
    )
    version: str
    device: str
    outputs: list[dict[str, Any]] = Field(
        description="One object per input item: the output tensor by name, and for "
        "classifiers the predicted label."
    )
    usage: Usage


class TensorInfo(BaseModel):
    name: str
    shape: list[int]
    dtype: str


class ModelInfo(BaseModel):
    id: str = Field(description="What to call: name, or name:variant")
    name: str
    variant: str | None
    version: str
    versions: list[str]
    available: bool
    unavailable_reason: str | None
    task: str
    description: str
    device: str
    graph: str = Field(
        description="How the forward pass runs: script (optimized TorchScript, CPU), "
        "channels_last, eager, or none when not loaded"
    )
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    labels: list[str] | None
    metrics: dict[str, float]
    weights_sha256: str
    size_bytes: int
    measured: dict[str, float] = Field(
        default_factory=dict, description="Measured speed and size (see the manifest)"
    )


class ModelList(BaseModel):
    data: list[ModelInfo]
