from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from credit_common.decimals import DecimalFormatError, format_decimal, parse_decimal


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", Decimal(0)),
        ("50000", Decimal(50000)),
        ("2.5", Decimal("2.5")),
        ("0.000001", Decimal("0.000001")),
        ("007", Decimal(7)),
        ("999999999999999999.999999", Decimal("999999999999999999.999999")),
    ],
)
def test_parses_exactly(text, expected):
    assert parse_decimal(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        " 1",
        "1 ",
        "+1",
        "1e3",
        "1E3",
        "NaN",
        "Infinity",
        "-Infinity",
        "1.",
        ".5",
        "1,5",
        "0x10",
        "1.0000001",
        "1000000000000000000",
        "--1",
        "1.2.3",
        "١٢",
        "1\n",
        "1\x00",
        "1" + "0" * 400,
        "1e999999",
    ],
)
def test_rejects_malformed(text):
    with pytest.raises(DecimalFormatError):
        parse_decimal(text)


def test_sign_and_zero_rules():
    with pytest.raises(DecimalFormatError, match="negative"):
        parse_decimal("-1")
    assert parse_decimal("-1", allow_negative=True) == Decimal(-1)
    with pytest.raises(DecimalFormatError, match="greater than 0"):
        parse_decimal("0.000", allow_zero=False)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("50000.000000000000"), "50000"),
        (Decimal("2.50"), "2.5"),
        (Decimal("-0.0"), "0"),
        (Decimal("1E+3"), "1000"),
        (Decimal("1E-12"), "0.000000000001"),
        (Decimal("-12.340"), "-12.34"),
    ],
)
def test_formats_canonically(value, text):
    assert format_decimal(value) == text


@given(
    st.decimals(
        min_value=Decimal("-999999999999999999.999999"),
        max_value=Decimal("999999999999999999.999999"),
        places=6,
        allow_nan=False,
        allow_infinity=False,
    )
)
def test_format_then_parse_round_trips_exactly(value):
    assert parse_decimal(format_decimal(value), allow_negative=True) == value
