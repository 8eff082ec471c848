"""The catalog as the serving side reads it: one :class:`ModelCard` per variant, and the
:class:`CatalogSnapshot` a replica reconciles to.

A card is everything a replica needs to serve a variant and describe it: the version's
contract (inputs, outputs, labels, task), the variant's archive (where, which format, its
sha256), what it measured, and its published and desired-loaded state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output: the item shape (no batch dimension), dtype and value range."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    range: tuple[float, float] | None = None

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> TensorSpec:
        rng = raw.get("range")
        return cls(
            name=str(raw["name"]),
            shape=tuple(int(d) for d in raw["shape"]),
            dtype=str(raw.get("dtype", "float32")),
            range=(float(rng[0]), float(rng[1])) if rng is not None else None,
        )


@dataclass(frozen=True, slots=True)
class ModelCard:
    name: str
    version: str
    variant: str | None  # None: the base model of the version
    task: str
    description: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    labels: tuple[str, ...] | None
    preprocessing: str
    license: str
    archive_format: str
    archive_uri: str
    sha256: str
    size_bytes: int
    dtype: str
    requires_device: str | None
    published: bool
    unpublished_reason: str | None
    loaded: bool  # the desired state: replicas load it
    metrics: dict[str, float] = field(default_factory=dict)
    measured: dict[str, float] = field(default_factory=dict)
    compression: dict[str, Any] | None = None
    version_created_at: datetime | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.variant}" if self.variant else self.name

    @property
    def key(self) -> tuple[str, str, str | None]:
        return (self.name, self.version, self.variant)


def card_from(
    manifest: Mapping[str, Any],
    *,
    version: str,
    variant: str | None,
    archive_format: str,
    archive_uri: str,
    sha256: str,
    size_bytes: int,
    dtype: str,
    requires_device: str | None,
    published: bool,
    unpublished_reason: str | None,
    loaded: bool,
    metrics: Mapping[str, Any],
    measured: Mapping[str, Any],
    compression: Mapping[str, Any] | None,
    version_created_at: datetime | None = None,
) -> ModelCard:
    """A card from a version's (validated) archive manifest and one variant's row."""
    labels = manifest.get("labels")
    description = str(manifest["description"])
    if compression and isinstance(compression.get("description"), str):
        description = compression["description"]
    return ModelCard(
        name=str(manifest["name"]),
        version=version,
        variant=variant,
        task=str(manifest["task"]),
        description=description,
        inputs=tuple(TensorSpec.parse(t) for t in manifest["inputs"]),
        outputs=tuple(TensorSpec.parse(t) for t in manifest["outputs"]),
        labels=tuple(str(x) for x in labels) if labels is not None else None,
        preprocessing=str(manifest.get("preprocessing", "")),
        license=str(manifest.get("license", "")),
        archive_format=archive_format,
        archive_uri=archive_uri,
        sha256=sha256,
        size_bytes=size_bytes,
        dtype=dtype,
        requires_device=requires_device,
        published=published,
        unpublished_reason=unpublished_reason,
        loaded=loaded,
        metrics={k: float(v) for k, v in metrics.items() if _number(v)},
        measured={k: float(v) for k, v in measured.items() if _number(v)},
        compression=dict(compression) if compression is not None else None,
        version_created_at=version_created_at,
    )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def version_key(version: str) -> tuple[int, str]:
    """Numeric versions sort by number, after any non-numeric one."""
    return (int(version), "") if version.isdigit() else (-1, version)


@dataclass(frozen=True, slots=True)
class CatalogSnapshot:
    """The whole catalog at one revision."""

    revision: int
    defaults: dict[str, str | None]  # model -> the admin's default version (None: newest)
    cards: tuple[ModelCard, ...]

    def default_version(self, name: str) -> str | None:
        versions = {c.version for c in self.cards if c.name == name}
        if not versions:
            return None
        chosen = self.defaults.get(name)
        return chosen if chosen in versions else max(versions, key=version_key)

    def wanted(self) -> list[ModelCard]:
        """The variants a replica should hold loaded: published and desired loaded."""
        return [c for c in self.cards if c.published and c.loaded]
