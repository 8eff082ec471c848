"""All ORM models, imported here so Alembic and the app see one complete metadata."""

from app.orm.audit import AuditEntry
from app.orm.base import Base
from app.orm.billing import (
    CreditNote,
    CreditNoteLine,
    CreditNoteSequence,
    Invoice,
    InvoiceLine,
    InvoiceSequence,
    StripeEvent,
)
from app.orm.catalog import (
    CatalogModel,
    CatalogRevision,
    ModelReplica,
    ModelVariant,
    ModelVersion,
)
from app.orm.console import ConsoleSession
from app.orm.customers import Customer
from app.orm.keys import ApiKey
from app.orm.plans import CustomerPlan, Plan, PlanVersion
from app.orm.usage import UsageEvent, UsageHourly

__all__ = [
    "ApiKey",
    "AuditEntry",
    "Base",
    "CatalogModel",
    "CatalogRevision",
    "ConsoleSession",
    "CreditNote",
    "CreditNoteLine",
    "CreditNoteSequence",
    "Customer",
    "CustomerPlan",
    "Invoice",
    "InvoiceLine",
    "InvoiceSequence",
    "ModelReplica",
    "ModelVariant",
    "ModelVersion",
    "Plan",
    "PlanVersion",
    "StripeEvent",
    "UsageEvent",
    "UsageHourly",
]
