from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.validation import Text

_EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


class CustomerCreate(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "Acme Corp", "email": "billing@acme.example"}]}
    )

    name: Text = Field(min_length=1, max_length=200)
    email: Text | None = Field(default=None, max_length=320, pattern=_EMAIL)


class CustomerUpdate(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"email": "accounts@acme.example"}]})

    name: Text | None = Field(default=None, min_length=1, max_length=200)
    email: Text | None = Field(default=None, max_length=320, pattern=_EMAIL)


class CustomerOut(BaseModel):
    id: int
    name: str
    email: str | None
    status: str
    stripe_customer_id: str | None
    created_at: datetime
    is_operator: bool = Field(
        description="The operator account: its keys (and only its) may hold admin and finance"
    )


class CustomerList(BaseModel):
    data: list[CustomerOut]
