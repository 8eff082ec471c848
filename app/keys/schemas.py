from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.auth.principal import PlanSnapshot, Principal, Scope
from app.auth.secrets import KEY_PREFIX, PREFIX_LEN
from app.validation import INT64_MAX, MAX_MODEL_NAME, DbId, PerMinute, Text, Timestamp

__all__ = [
    "CreatedKey",
    "KeyCreate",
    "KeyExpire",
    "KeyOptions",
    "KeyRef",
    "PlanSnapshot",
    "Principal",
    "Rotate",
    "Scope",
    "parse_key_ref",
]


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A freshly created key; ``secret`` exists only here and is shown once."""

    key_id: int
    customer_id: int
    prefix: str
    secret: str
    scopes: tuple[str, ...]
    expires_at: datetime | None


# A key is named by its id or by its public prefix (``tg_`` + 8 characters), in the API's
# paths and in the CLI alike.
_PREFIX_SHAPE = re.compile(re.escape(KEY_PREFIX) + f"[A-Za-z0-9]{{{PREFIX_LEN - len(KEY_PREFIX)}}}")
_ID_SHAPE = re.compile(r"[1-9][0-9]{0,18}")


def parse_key_ref(value: str) -> int | str:
    """A key reference as an id (int) or a prefix (str); ValueError for anything else."""
    if _ID_SHAPE.fullmatch(value) and int(value) <= INT64_MAX:
        return int(value)
    if _PREFIX_SHAPE.fullmatch(value):
        return value
    raise ValueError(
        f"must be a key id (1 to {INT64_MAX}) or a key prefix ({KEY_PREFIX} + "
        f"{PREFIX_LEN - len(KEY_PREFIX)} letters or digits)"
    )


def _key_ref(value: str) -> str:
    parse_key_ref(value)
    return value


KeyRef = Annotated[str, AfterValidator(_key_ref)]
"""A key's id or public prefix; anything else is a 422."""


class KeyOptions(BaseModel):
    """What a new key is allowed to do, whoever it is for."""

    scopes: list[Scope] = Field(min_length=1)
    name: Text | None = Field(default=None, max_length=200)
    expires_at: Timestamp | None = Field(
        default=None, description="ISO 8601; without a time zone, UTC"
    )
    allowed_models: list[Annotated[Text, Field(min_length=1, max_length=MAX_MODEL_NAME)]] | None = (
        Field(default=None, max_length=100)
    )
    requests_per_minute: PerMinute | None = None
    items_per_minute: PerMinute | None = None


class KeyCreate(KeyOptions):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "customer_id": 1,
                    "scopes": ["predict"],
                    "name": "production",
                    "allowed_models": ["cnn"],
                    "requests_per_minute": 600,
                    "items_per_minute": 6000,
                }
            ]
        }
    )

    customer_id: DbId


class Rotate(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"grace_seconds": 3600}]})

    grace_seconds: int = Field(
        default=0,
        strict=True,
        ge=0,
        le=30 * 86400,
        description="How long the old secret keeps working (0: it stops now)",
    )


class KeyExpire(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"expires_at": "2031-01-01T00:00:00Z"}]}
    )

    expires_at: Timestamp | None = Field(
        default=None,
        description="When the key stops working (ISO 8601; without a time zone, UTC). Default: now",
    )
