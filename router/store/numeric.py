"""Amounts read from PostgreSQL `numeric` columns, as the APIs show them.

asyncpg reads a numeric whose last base-10000 digit groups are zeros with
no decimals (1000000, 20000) as Decimal('1.00E+6'), Decimal('2.00E+4'):
equal amounts, which str() — and so every JSON answer and audit row —
writes in scientific notation. CONTRACT §3: money is a decimal string.
"""

from __future__ import annotations

from decimal import Decimal


def plain(value: Decimal) -> Decimal:
    """The same amount, written without an exponent."""
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent > 0:
        return Decimal(format(value, "f"))
    return value
