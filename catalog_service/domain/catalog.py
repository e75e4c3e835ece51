"""Rules of features and credit currencies."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from catalog_service.domain.model import CreditRate, FeatureType
from credit_common.errors import Violations
from credit_common.fields import check_required, check_text, parse_amount

CURRENCY_UPDATABLE_FIELDS = ("display_name", "unit_name", "rates")


def check_feature(type_: FeatureType | None, unit_name: str, violations: Violations, prefix: str = "feature") -> None:
    if type_ is None:
        violations.add(f"{prefix}.type", "must be FEATURE_TYPE_METERED or FEATURE_TYPE_BOOLEAN")
    if type_ is FeatureType.BOOLEAN and unit_name:
        violations.add(f"{prefix}.unit_name", "must be empty for a BOOLEAN feature")
    check_text(unit_name, f"{prefix}.unit_name", violations, 200)


def parse_rates(
    rates: Sequence[tuple[str, str]],
    feature_types: Mapping[str, FeatureType],
    violations: Violations,
    prefix: str = "credit_currency.rates",
) -> tuple[CreditRate, ...]:
    """Rates from (feature key, credits per unit) pairs: each feature an
    existing METERED one, listed once, each rate a decimal > 0."""
    parsed: list[CreditRate] = []
    seen: set[str] = set()
    for i, (feature_key, text) in enumerate(rates):
        path = f"{prefix}[{i}]"
        feature_type = feature_types.get(feature_key)
        if check_required(feature_key, f"{path}.feature_key", violations):
            if feature_type is None:
                violations.add(f"{path}.feature_key", f"no feature {feature_key!r}", "FEATURE_NOT_FOUND")
            elif feature_type is not FeatureType.METERED:
                violations.add(
                    f"{path}.feature_key",
                    f"feature {feature_key!r} is not METERED: it cannot burn credits",
                    "NOT_METERED",
                )
        if feature_key and feature_key in seen:
            violations.add(f"{path}.feature_key", f"feature {feature_key!r} has two rates", "DUPLICATE_RATE")
        seen.add(feature_key)
        amount = parse_amount(text, f"{path}.credits_per_unit", violations, allow_zero=False)
        if amount is not None:
            parsed.append(CreditRate(feature_key, amount))
    return tuple(sorted(parsed, key=lambda r: r.feature_key))
