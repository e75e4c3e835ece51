"""Plan rules: turning a caller's plan (decimal strings) into a PlanContent, and
the checks a draft must pass at create, update and publish. Every problem is
one field violation whose path starts with "plan." (e.g.
"plan.credit_entitlements[1].variable_amount.min")."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal

from catalog_service.domain.model import (
    Cadence,
    CreditEntitlement,
    FeatureEntitlement,
    FeatureType,
    PlanContent,
    VariableValue,
)
from credit_common.errors import Violations
from credit_common.fields import check_key, check_required, check_text, parse_amount

__all__ = ["check_key", "check_text", "parse_amount"]  # the catalog's field checks are credit_common's (fields.py)

PLAN_UPDATABLE_FIELDS = ("display_name", "description", "custom", "credit_entitlements", "feature_entitlements")


@dataclass(frozen=True)
class VariableSpec:
    """Caller's bounds and default: decimal strings, "" where absent."""

    min: str = ""
    max: str = ""
    default_value: str = ""


@dataclass(frozen=True)
class CreditEntitlementSpec:
    key: str
    currency_key: str
    cadence: Cadence | None
    fixed_amount: str | None = None
    variable: VariableSpec | None = None


@dataclass(frozen=True)
class FeatureEntitlementSpec:
    key: str
    feature_key: str
    access: bool | None = None
    fixed_limit: str | None = None
    variable: VariableSpec | None = None


@dataclass(frozen=True)
class PlanSpec:
    display_name: str = ""
    description: str = ""
    custom: bool = False
    credit_entitlements: tuple[CreditEntitlementSpec, ...] = ()
    feature_entitlements: tuple[FeatureEntitlementSpec, ...] = ()


# ------------------------------------------------------------------ parsing


def _parse_variable(spec: VariableSpec, path: str, violations: Violations, *, allow_zero: bool) -> VariableValue:
    def one(text: str, name: str) -> Decimal | None:
        return parse_amount(text, f"{path}.{name}", violations, allow_zero=allow_zero) if text else None

    return VariableValue(
        min=one(spec.min, "min"), max=one(spec.max, "max"), default=one(spec.default_value, "default_value")
    )


def _parse_credit(spec: CreditEntitlementSpec, path: str, violations: Violations) -> CreditEntitlement:
    check_key(spec.key, f"{path}.key", violations)
    check_required(spec.currency_key, f"{path}.currency_key", violations)
    if spec.cadence is None:
        violations.add(f"{path}.cadence", "must be CADENCE_MONTHLY or CADENCE_YEARLY")
    fixed = variable = None
    if spec.fixed_amount is not None:
        fixed = parse_amount(spec.fixed_amount, f"{path}.fixed_amount", violations, allow_zero=False)
    elif spec.variable is not None:
        variable = _parse_variable(spec.variable, f"{path}.variable_amount", violations, allow_zero=False)
    else:
        violations.add(f"{path}.amount", "exactly one of fixed_amount or variable_amount must be set")
    return CreditEntitlement(spec.key, spec.currency_key, spec.cadence, fixed, variable)


def _parse_feature(spec: FeatureEntitlementSpec, path: str, violations: Violations) -> FeatureEntitlement:
    check_key(spec.key, f"{path}.key", violations)
    check_required(spec.feature_key, f"{path}.feature_key", violations)
    access = limit = variable = None
    if spec.access is not None:
        access = spec.access
        if not access:
            violations.add(f"{path}.access", "must be true (leave the entitlement out to deny access)")
    elif spec.fixed_limit is not None:
        limit = parse_amount(spec.fixed_limit, f"{path}.fixed_limit", violations, allow_zero=True)
    elif spec.variable is not None:
        variable = _parse_variable(spec.variable, f"{path}.variable_limit", violations, allow_zero=True)
    else:
        violations.add(f"{path}.value", "exactly one of access, fixed_limit or variable_limit must be set")
    return FeatureEntitlement(spec.key, spec.feature_key, access, limit, variable)


def build_content(
    base: PlanContent, spec: PlanSpec, fields: Collection[str], violations: Violations, prefix: str = "plan"
) -> PlanContent:
    """`base` with the `fields` of `spec` parsed into it; problems go to `violations`."""
    changes: dict[str, object] = {}
    if "display_name" in fields:
        check_text(spec.display_name, f"{prefix}.display_name", violations, 200)
        changes["display_name"] = spec.display_name
    if "description" in fields:
        check_text(spec.description, f"{prefix}.description", violations, 4000)
        changes["description"] = spec.description
    if "custom" in fields:
        changes["custom"] = spec.custom
    if "credit_entitlements" in fields:
        changes["credit_entitlements"] = tuple(
            _parse_credit(e, f"{prefix}.credit_entitlements[{i}]", violations)
            for i, e in enumerate(spec.credit_entitlements)
        )
    if "feature_entitlements" in fields:
        changes["feature_entitlements"] = tuple(
            _parse_feature(e, f"{prefix}.feature_entitlements[{i}]", violations)
            for i, e in enumerate(spec.feature_entitlements)
        )
    return replace(base, **changes)


# -------------------------------------------------------------------- rules


def _check_bounds(value: VariableValue, path: str, violations: Violations) -> None:
    if value.min is not None and value.max is not None and value.min > value.max:
        violations.add(f"{path}.min", f"min {value.min} is greater than max {value.max}", "MIN_GREATER_THAN_MAX")
    if value.default is not None and not in_bounds(value.default, value):
        violations.add(f"{path}.default_value", f"default {value.default} is outside [min, max]", "OUT_OF_BOUNDS")


def in_bounds(amount: Decimal, bounds: VariableValue) -> bool:
    return (bounds.min is None or amount >= bounds.min) and (bounds.max is None or amount <= bounds.max)


def check_plan_rules(
    content: PlanContent,
    *,
    feature_types: Mapping[str, FeatureType],
    currency_keys: Collection[str],
    violations: Violations,
    prefix: str = "plan",
) -> None:
    """The rules across entitlements and against the catalog. `feature_types`
    and `currency_keys` hold (at least) every referenced feature and currency
    that exists."""
    seen_keys: set[str] = set()
    seen_schedules: set[tuple[str, Cadence]] = set()

    def unique_key(key: str, path: str) -> None:
        if key and key in seen_keys:
            violations.add(path, f"entitlement key {key!r} is used twice in the plan", "DUPLICATE_ENTITLEMENT_KEY")
        seen_keys.add(key)

    for i, e in enumerate(content.credit_entitlements):
        path = f"{prefix}.credit_entitlements[{i}]"
        unique_key(e.key, f"{path}.key")
        if e.currency_key and e.currency_key not in currency_keys:
            violations.add(f"{path}.currency_key", f"no credit currency {e.currency_key!r}", "CURRENCY_NOT_FOUND")
        if e.cadence is not None:
            schedule = (e.currency_key, e.cadence)
            if schedule in seen_schedules:
                violations.add(
                    path,
                    f"another credit entitlement already grants {e.currency_key!r} {e.cadence.value.lower()}",
                    "DUPLICATE_CREDIT_SCHEDULE",
                )
            seen_schedules.add(schedule)
        if e.variable is not None:
            if not content.custom:
                violations.add(
                    f"{path}.variable_amount",
                    "only custom plans may have variable entitlements",
                    "VARIABLE_ON_NON_CUSTOM_PLAN",
                )
            _check_bounds(e.variable, f"{path}.variable_amount", violations)

    for i, e in enumerate(content.feature_entitlements):
        path = f"{prefix}.feature_entitlements[{i}]"
        unique_key(e.key, f"{path}.key")
        feature_type = feature_types.get(e.feature_key)
        if e.feature_key and feature_type is None:
            violations.add(f"{path}.feature_key", f"no feature {e.feature_key!r}", "FEATURE_NOT_FOUND")
        if feature_type is FeatureType.BOOLEAN and e.access is None:
            field = "fixed_limit" if e.fixed_limit is not None else "variable_limit"
            if e.fixed_limit is not None or e.variable is not None:
                violations.add(
                    f"{path}.{field}",
                    f"feature {e.feature_key!r} is BOOLEAN: grant `access`, not a limit",
                    "LIMIT_ON_BOOLEAN_FEATURE",
                )
        if feature_type is FeatureType.METERED and e.access is not None:
            violations.add(
                f"{path}.access",
                f"feature {e.feature_key!r} is METERED: give a limit, not `access`",
                "ACCESS_ON_METERED_FEATURE",
            )
        if e.variable is not None:
            if not content.custom:
                violations.add(
                    f"{path}.variable_limit",
                    "only custom plans may have variable entitlements",
                    "VARIABLE_ON_NON_CUSTOM_PLAN",
                )
            _check_bounds(e.variable, f"{path}.variable_limit", violations)


def referenced_keys(content: PlanContent) -> tuple[set[str], set[str]]:
    """(feature keys, currency keys) the content refers to."""
    return (
        {e.feature_key for e in content.feature_entitlements if e.feature_key},
        {e.currency_key for e in content.credit_entitlements if e.currency_key},
    )


def entitlement_keys(content: PlanContent) -> Iterable[str]:
    yield from (e.key for e in content.credit_entitlements)
    yield from (e.key for e in content.feature_entitlements)
