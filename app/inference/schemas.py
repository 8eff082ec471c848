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
    range: list[float] | None = Field(
        default=None,
        description="The declared value range [low, high]; inputs outside it are refused",
    )


class VariantCard(BaseModel):
    """One variant of the same version, as its model card sums it up."""

    id: str
    variant: str | None
    published: bool
    unpublished_reason: str | None
    state: str
    dtype: str
    requires_device: str | None
    size_bytes: int
    metrics: dict[str, float]
    measured: dict[str, float]
    compression: dict[str, Any] | None


class ModelInfo(BaseModel):
    """A variant's model card: its contract, what it measured, and its state."""

    id: str = Field(description="What to call: name, or name:variant")
    name: str
    variant: str | None
    version: str
    versions: list[str]
    default_version: str | None = Field(description="The version served when none is named")
    available: bool = Field(description="Whether this replica can serve it now")
    unavailable_reason: str | None
    state: str = Field(
        description="On this replica: loaded, loading, failed, unavailable (needs hardware "
        "this replica lacks), unloaded (an admin unloaded it) or unpublished"
    )
    published: bool = Field(description="Whether callers may use it")
    unpublished_reason: str | None
    task: str
    description: str
    preprocessing: str
    license: str
    device: str
    graph: str = Field(
        description="How the forward pass runs: script (optimized TorchScript, CPU), "
        "channels_last, eager, or none when not loaded"
    )
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    labels: list[str] | None
    archive_format: str = Field(description="torchscript or torch_export")
    archive_sha256: str
    dtype: str = Field(description="float32, float16 or qint8 (weights)")
    requires_device: str | None
    size_bytes: int
    metrics: dict[str, float] = Field(
        description="Quality on held-out data: accuracy (classification) or r2 and mae"
    )
    measured: dict[str, float] = Field(
        default_factory=dict,
        description="Measured size and speed: size_bytes, cpu_items_per_s_batch1, "
        "cpu_items_per_s_batch32 and, where measured on a GPU, gpu_items_per_s_batch32",
    )
    compression: dict[str, Any] | None = Field(
        default=None, description="How a variant was built from the base (method, notes)"
    )
    variants: list[VariantCard] = Field(
        default_factory=list,
        description="Every variant of this version (the base included), published or not, "
        "with what each measured: compare before calling",
    )


class ModelList(BaseModel):
    data: list[ModelInfo]
