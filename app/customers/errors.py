from __future__ import annotations

from app.errors import NotFound


class CustomerNotFound(NotFound):
    type = "customer_not_found"
