"""Resolving a plan version's entitlements with the values negotiated for one
subscription: every amount concrete, or one field violation per problem at
"entitlement_values[<key>]"."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from catalog_service.domain.model import (
    PlanContent,
    ResolvedCreditEntitlement,
    ResolvedFeatureEntitlement,
    VariableValue,
)
from catalog_service.domain.plans import in_bounds
from credit_common.errors import Violations
from credit_common.fields import REQUIRED, parse_amount


@dataclass
class Resolution:
    credit_entitlements: list[ResolvedCreditEntitlement] = field(default_factory=list)
    feature_entitlements: list[ResolvedFeatureEntitlement] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # keys of variable entitlements without a value


def _bounds_text(bounds: VariableValue) -> str:
    low = "" if bounds.min is None else str(bounds.min)
    high = "" if bounds.max is None else str(bounds.max)
    return f"[{low or '-inf'}, {high or '+inf'}]"


def _negotiated(
    key: str, bounds: VariableValue, values: Mapping[str, str], violations: Violations, res: Resolution, *, zero: bool
) -> Decimal | None:
    path = f"entitlement_values[{key}]"
    text = values.get(key)
    if text is None:
        if bounds.default is None:
            res.missing.append(key)
            violations.add(path, f"entitlement {key!r} is variable and has no default: a value is required", "MISSING")
        return bounds.default
    amount = parse_amount(text, path, violations, allow_zero=zero)
    if amount is not None and not in_bounds(amount, bounds):
        violations.add(path, f"{text} is outside the bounds {_bounds_text(bounds)} of {key!r}", "OUT_OF_BOUNDS")
        return None
    return amount


def resolve_entitlements(content: PlanContent, values: Mapping[str, str], violations: Violations) -> Resolution:
    """Resolve `content`'s entitlements with `values` (entitlement key -> decimal
    string). Credit amounts must be > 0, feature limits >= 0."""
    res = Resolution()
    for e in content.credit_entitlements:
        assert e.cadence is not None
        if e.variable is None:
            if e.key in values:
                violations.add(f"entitlement_values[{e.key}]", f"entitlement {e.key!r} is not variable", "NOT_VARIABLE")
            amount = e.fixed_amount
        else:
            amount = _negotiated(e.key, e.variable, values, violations, res, zero=False)
        if amount is not None:
            res.credit_entitlements.append(
                ResolvedCreditEntitlement(e.key, e.currency_key, e.cadence, amount, negotiated=e.variable is not None)
            )
    for e in content.feature_entitlements:
        if e.variable is None:
            if e.key in values:
                violations.add(f"entitlement_values[{e.key}]", f"entitlement {e.key!r} is not variable", "NOT_VARIABLE")
            res.feature_entitlements.append(
                ResolvedFeatureEntitlement(e.key, e.feature_key, e.access, e.fixed_limit, negotiated=False)
            )
            continue
        limit = _negotiated(e.key, e.variable, values, violations, res, zero=True)
        if limit is not None:
            res.feature_entitlements.append(ResolvedFeatureEntitlement(e.key, e.feature_key, None, limit, True))
    known = {e.key for e in content.credit_entitlements} | {e.key for e in content.feature_entitlements}
    for key in sorted(set(values) - known):
        violations.add(f"entitlement_values[{key}]", f"the plan version has no entitlement {key!r}", "UNKNOWN")
    return res


def amendment_amounts(content: PlanContent, values: Mapping[str, str], violations: Violations) -> dict[str, Decimal]:
    """The new amounts of an amendment (entitlement key -> decimal string),
    checked with the provisioning rules and paths against the subscription's
    plan version: only variable credit entitlements, within their bounds, > 0.
    One violation per problem; the valid amounts are returned."""
    if not values:
        violations.add("entitlement_values", "is required: at least one entitlement key and its new amount", REQUIRED)
    amounts: dict[str, Decimal] = {}
    credit = {e.key: e for e in content.credit_entitlements}
    feature = {e.key for e in content.feature_entitlements}
    unused = Resolution()
    for key in sorted(values):
        path = f"entitlement_values[{key}]"
        e = credit.get(key)
        if e is None:
            if key in feature:
                violations.add(
                    path, f"{key!r} is a feature entitlement: only credit amounts can be amended", "NOT_AMENDABLE"
                )
            else:
                violations.add(path, f"the plan version has no entitlement {key!r}", "UNKNOWN")
        elif e.variable is None:
            violations.add(path, f"entitlement {key!r} is not variable", "NOT_VARIABLE")
        else:
            amount = _negotiated(key, e.variable, values, violations, unused, zero=False)
            if amount is not None:
                amounts[key] = amount
    return amounts
