"""The manifest an operator ships with an uploaded model archive.

It is the contract the rest of Tollgate relies on: the input the server will accept (shape,
dtype, value range), the output it will return, and the labels a classifier's output means.
Validation of the archive (app/catalog/pipeline.py) checks the model against it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = ["ArchiveManifest", "ManifestInvalid", "TensorSpec", "parse_manifest"]


class ManifestInvalid(Exception):
    """The manifest is not valid; ``reason`` (also ``str(exc)``) says what to fix."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TensorSpec(BaseModel):
    """One input or output tensor; ``shape`` is the shape of one item, without the batch."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", min_length=1, max_length=64)
    # Float16 variants still take and return float32 at the API: the server casts.
    dtype: Literal["float32"]
    shape: list[int] = Field(min_length=1, max_length=8)
    range: tuple[float, float] | None = None

    @field_validator("shape")
    @classmethod
    def _dims_in_bounds(cls, shape: list[int]) -> list[int]:
        for dim in shape:
            if not 1 <= dim <= 65536:
                raise ValueError(f"every dimension must be between 1 and 65536 (got {dim})")
        return shape

    @field_validator("range")
    @classmethod
    def _range_ordered(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is None:
            return None
        low, high = value
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError("range bounds must be finite numbers")
        if low > high:
            raise ValueError(f"range low {low} is above high {high}")
        return value


class ArchiveManifest(BaseModel):
    """What an uploaded model is and how to call it.

    Unknown keys are kept (shipped manifests carry training notes and the like); the keys
    below are validated."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    version: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
    description: str = Field(min_length=1, max_length=2000)
    task: Literal["classification", "regression"]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    labels: list[str] | None = None
    preprocessing: str = Field(default="", max_length=4000)
    license: str = Field(min_length=1, max_length=200)

    @field_validator("inputs")
    @classmethod
    def _one_input(cls, inputs: list[TensorSpec]) -> list[TensorSpec]:
        if len(inputs) != 1:
            raise ValueError(f"exactly one input tensor is supported for now (got {len(inputs)})")
        return inputs

    @field_validator("outputs")
    @classmethod
    def _one_output(cls, outputs: list[TensorSpec]) -> list[TensorSpec]:
        if len(outputs) != 1:
            raise ValueError(f"exactly one output tensor is supported for now (got {len(outputs)})")
        return outputs

    @field_validator("labels")
    @classmethod
    def _labels_distinct(cls, labels: list[str] | None) -> list[str] | None:
        if labels is None:
            return None
        for label in labels:
            if not 1 <= len(label) <= 200:
                raise ValueError("every label must be 1 to 200 characters long")
        if len(set(labels)) != len(labels):
            raise ValueError("labels must be distinct")
        return labels

    @model_validator(mode="after")
    def _labels_match_task(self) -> ArchiveManifest:
        if self.task == "regression":
            if self.labels is not None:
                raise ValueError("a regression model has no labels: leave `labels` out")
            return self
        if self.labels is None:
            raise ValueError("a classification model needs `labels`, one per output class")
        classes = self.outputs[0].shape[-1]
        if len(self.labels) != classes:
            raise ValueError(
                f"{len(self.labels)} labels for an output of {classes} classes "
                f"(outputs[0].shape[-1]): give exactly one label per class"
            )
        return self


def parse_manifest(data: bytes | str | Mapping[str, Any]) -> ArchiveManifest:
    """Parse and validate a manifest given as JSON (bytes or text) or as a mapping.

    Raises :class:`ManifestInvalid` with the first problem found and where it is, e.g.
    ``"inputs.0.shape: every dimension must be between 1 and 65536 (got 0)"``."""
    if isinstance(data, bytes | str):
        try:
            loaded = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ManifestInvalid(f"the manifest is not valid JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise ManifestInvalid("the manifest must be a JSON object")
        data = loaded
    try:
        return ArchiveManifest.model_validate(dict(data))
    except ValidationError as exc:
        raise ManifestInvalid(_first_error(exc)) from None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "missing":
        message = "this field is required"
    return f"{where}: {message}" if where else message
