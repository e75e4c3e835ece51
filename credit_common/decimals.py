"""Exact decimal amounts: parsing caller input and formatting output.

Amounts travel as decimal strings, live as `decimal.Decimal` in code and as
NUMERIC (PostgreSQL) or canonical text (SQLite) in the database. A value from
a caller has at most INPUT_INTEGER_DIGITS digits before the point and
INPUT_SCALE after it; products of two such values (credits = quantity * rate)
fit STORAGE_SCALE exactly, so nothing is ever rounded.
"""

from __future__ import annotations

import re
from decimal import Decimal

INPUT_INTEGER_DIGITS = 18
INPUT_SCALE = 6
STORAGE_SCALE = 2 * INPUT_SCALE
STORAGE_PRECISION = 38

_DECIMAL_RE = re.compile(r"-?([0-9]+)(?:\.([0-9]+))?", re.ASCII)


class DecimalFormatError(ValueError):
    """A string that is not an acceptable decimal; the message says why."""


def parse_decimal(
    text: str,
    *,
    allow_negative: bool = False,
    allow_zero: bool = True,
    max_scale: int = INPUT_SCALE,
) -> Decimal:
    """Parse a caller's decimal string strictly ("12", "0.5", "-3.25").

    Rejects exponents, spaces, "NaN"/"Infinity", a leading "+", more than
    INPUT_INTEGER_DIGITS integer digits or `max_scale` fractional digits.
    """
    if not isinstance(text, str) or not text:
        raise DecimalFormatError('must be a decimal string such as "100" or "2.5"')
    match = _DECIMAL_RE.fullmatch(text)  # not match(): "$" would accept a trailing newline
    if not match:
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise DecimalFormatError(f'{shown!r} is not a decimal string such as "100" or "2.5"')
    integer_digits, fraction_digits = match.group(1), match.group(2) or ""
    if len(integer_digits.lstrip("0")) > INPUT_INTEGER_DIGITS:
        raise DecimalFormatError(f"has more than {INPUT_INTEGER_DIGITS} digits before the decimal point")
    if len(fraction_digits) > max_scale:
        raise DecimalFormatError(f"has more than {max_scale} digits after the decimal point")
    value = Decimal(text)
    if value < 0 and not allow_negative:
        raise DecimalFormatError("must not be negative")
    if value == 0 and not allow_zero:
        raise DecimalFormatError("must be greater than 0")
    return value


def format_decimal(value: Decimal) -> str:
    """Canonical text of an exact decimal: no exponent, no trailing zeros ("50000", "2.5", "0")."""
    if not value.is_finite():
        raise ValueError(f"not a finite decimal: {value}")
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    return text
