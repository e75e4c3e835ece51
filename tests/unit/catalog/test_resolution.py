"""Resolving variable values at provisioning, without a database."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from catalog_service.domain.model import Cadence, CreditEntitlement, FeatureEntitlement, PlanContent, VariableValue
from catalog_service.domain.provisioning import resolve_entitlements
from credit_common.decimals import format_decimal
from credit_common.errors import Violations

CONTENT = PlanContent(
    custom=True,
    credit_entitlements=(
        CreditEntitlement("monthly", "ai", Cadence.MONTHLY, variable=VariableValue(Decimal(100), Decimal(1000))),
        CreditEntitlement("yearly", "ai", Cadence.YEARLY, fixed_amount=Decimal(7)),
        CreditEntitlement("bonus", "gb", Cadence.MONTHLY, variable=VariableValue(default=Decimal("2.5"))),
    ),
    feature_entitlements=(
        FeatureEntitlement("sso", "sso", access=True),
        FeatureEntitlement("seats", "seats", variable=VariableValue(max=Decimal(50))),
    ),
)


def resolve(values):
    violations = Violations()
    res = resolve_entitlements(CONTENT, values, violations)
    return res, {v.field: v.description for v in violations}


def test_all_values_resolved_with_defaults_and_fixed_amounts():
    res, problems = resolve({"monthly": "500", "seats": "0"})
    assert problems == {}
    assert [(e.key, e.amount, e.negotiated) for e in res.credit_entitlements] == [
        ("monthly", Decimal(500), True),
        ("yearly", Decimal(7), False),
        ("bonus", Decimal("2.5"), True),
    ]
    assert [(e.key, e.access, e.limit) for e in res.feature_entitlements] == [
        ("sso", True, None),
        ("seats", None, Decimal(0)),
    ]


def test_one_violation_per_problem_and_missing_keys():
    res, problems = resolve({"yearly": "7", "bonus": "0", "nope": "1", "sso": "1"})
    assert res.missing == ["monthly", "seats"]
    assert set(problems) == {
        "entitlement_values[monthly]",
        "entitlement_values[seats]",
        "entitlement_values[yearly]",
        "entitlement_values[bonus]",
        "entitlement_values[nope]",
        "entitlement_values[sso]",
    }
    assert "monthly" in problems["entitlement_values[monthly]"]


@given(st.decimals(min_value=Decimal(-2000), max_value=Decimal(2000), places=6, allow_nan=False))
def test_bounds_are_inclusive_and_exact(amount):
    res, problems = resolve({"monthly": format_decimal(amount), "seats": "1"})
    if Decimal(100) <= amount <= Decimal(1000):
        assert problems == {}
        assert res.credit_entitlements[0].amount == amount
    else:
        assert set(problems) == {"entitlement_values[monthly]"}


@given(st.decimals(min_value=Decimal(0), max_value=Decimal(100), places=7, allow_nan=False))
def test_more_than_six_fraction_digits_is_rejected(amount):
    text = format_decimal(amount)
    _, problems = resolve({"monthly": "100", "seats": text})
    fraction = text.partition(".")[2]
    if len(fraction) > 6 or amount > 50:
        assert set(problems) == {"entitlement_values[seats]"}
    else:
        assert problems == {}
