"""SUM over a BIGINT column that is exact on both databases.

Postgres sums BIGINT into NUMERIC and never overflows; SQLite's SUM raises "integer
overflow" past 2^63. The high and low 32 bits are summed apart (each sum fits for 2^31
rows) and joined in Python, which gives the exact total on both.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import SQLColumnExpression, func, literal_column
from sqlalchemy.sql.elements import ColumnElement


def split_sum(column: SQLColumnExpression[int]) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
    """Two aggregate columns, the sums of ``column``'s high and low 32 bits; pass the pair
    to :func:`joined`. (Postgres shifts a BIGINT by an INTEGER only: the constants are
    literals, not BIGINT parameters.)"""
    high = func.sum(column.op(">>")(literal_column("32")))
    low = func.sum(column.op("&")(literal_column("4294967295")))
    return high, low


def joined(high: Any, low: Any) -> int:
    """The exact sum from :func:`split_sum`'s two results (0 for no rows)."""
    return (int(high or 0) << 32) + int(low or 0)
