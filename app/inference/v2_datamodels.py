"""Open Inference Protocol V2: the request and response bodies, as pydantic models.

For the OpenAPI document only: bodies are decoded and encoded by hand in
:mod:`app.inference.infer_type` (a tensor is a buffer, not a list of Python floats).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class V2Error(BaseModel):
    error: str


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 is the batch dimension")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ModelReady(BaseModel):
    name: str
    ready: bool


class InferInput(BaseModel):
    name: str
    shape: list[int] = Field(description="[n, *item_shape], or item_shape for one item")
    datatype: str = Field(description="FP16/FP32/FP64, INT8-64 or UINT8-64")
    parameters: dict[str, Any] | None = Field(
        default=None, description="binary_data_size: this input's bytes in the binary part"
    )
    data: list[Any] | None = Field(default=None, description="Flat or nested, row-major")


class RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = Field(
        default=None, description="binary_data: return this output as raw bytes"
    )


class InferRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "my-request-1",
                    "inputs": [
                        {
                            "name": "features",
                            "shape": [1, 10],
                            "datatype": "FP32",
                            "data": [0.5, -1.0, 0.25, 0.0, 1.5, -0.5, 2.0, 0.75, -2.0, 1.0],
                        }
                    ],
                }
            ]
        }
    )

    id: str | None = None
    parameters: dict[str, Any] | None = Field(
        default=None, description="binary_data_output: every output as raw bytes"
    )
    inputs: list[InferInput]
    outputs: list[RequestedOutput] | None = None


class InferOutput(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferResponse(BaseModel):
    model_name: str = Field(description="The model as called: name, or name:variant")
    model_version: str
    id: str | None = None
    parameters: dict[str, Any] | None = Field(
        default=None,
        description="variant: the variant served (int8, pruned, ...); absent for the base model",
    )
    outputs: list[InferOutput]
