"""Plan rules without a database."""

from __future__ import annotations

from decimal import Decimal

from catalog_service.domain.model import Cadence, FeatureType, PlanContent
from catalog_service.domain.plans import (
    PLAN_UPDATABLE_FIELDS,
    CreditEntitlementSpec,
    FeatureEntitlementSpec,
    PlanSpec,
    VariableSpec,
    build_content,
    check_plan_rules,
)
from credit_common.errors import Violations

FEATURES = {"calls": FeatureType.METERED, "sso": FeatureType.BOOLEAN}
CURRENCIES = {"ai"}


def validate(spec: PlanSpec) -> tuple[PlanContent, dict[str, str]]:
    violations = Violations()
    content = build_content(PlanContent(), spec, PLAN_UPDATABLE_FIELDS, violations)
    check_plan_rules(content, feature_types=FEATURES, currency_keys=CURRENCIES, violations=violations)
    return content, {v.field: v.description for v in violations}


def credit(key="m", cadence=Cadence.MONTHLY, fixed=None, variable=None, currency="ai"):
    return CreditEntitlementSpec(key, currency, cadence, fixed, variable)


def test_valid_custom_plan_parses_exact_decimals():
    content, problems = validate(
        PlanSpec(
            custom=True,
            credit_entitlements=(credit(variable=VariableSpec(min="0.000001", max="999999999999999999.999999")),),
            feature_entitlements=(
                FeatureEntitlementSpec("sso", "sso", access=True),
                FeatureEntitlementSpec("calls", "calls", fixed_limit="0"),
            ),
        )
    )
    assert problems == {}
    assert content.credit_entitlements[0].variable.max == Decimal("999999999999999999.999999")
    assert content.feature_entitlements[1].fixed_limit == Decimal(0)


def test_variable_on_a_non_custom_plan():
    _, problems = validate(PlanSpec(credit_entitlements=(credit(variable=VariableSpec(default_value="5")),)))
    assert set(problems) == {"plan.credit_entitlements[0].variable_amount"}


def test_min_greater_than_max_and_default_outside():
    _, problems = validate(
        PlanSpec(
            custom=True,
            credit_entitlements=(credit(variable=VariableSpec(min="5", max="4")),),
            feature_entitlements=(
                FeatureEntitlementSpec("calls", "calls", variable=VariableSpec(min="1", default_value="0.5")),
            ),
        )
    )
    assert set(problems) == {
        "plan.credit_entitlements[0].variable_amount.min",
        "plan.feature_entitlements[0].variable_limit.default_value",
    }


def test_same_currency_and_cadence_twice_but_other_cadence_is_fine():
    _, problems = validate(
        PlanSpec(
            credit_entitlements=(
                credit("a", fixed="1"),
                credit("b", Cadence.YEARLY, fixed="1"),
                credit("c", fixed="2"),
            )
        )
    )
    assert set(problems) == {"plan.credit_entitlements[2]"}


def test_duplicate_keys_across_credit_and_feature_entitlements():
    _, problems = validate(
        PlanSpec(
            credit_entitlements=(credit("x", fixed="1"),),
            feature_entitlements=(FeatureEntitlementSpec("x", "sso", access=True),),
        )
    )
    assert set(problems) == {"plan.feature_entitlements[0].key"}


def test_feature_type_mismatches_unknown_references_and_missing_oneofs():
    _, problems = validate(
        PlanSpec(
            credit_entitlements=(credit(currency="nope", fixed="1"), credit("n", Cadence.YEARLY)),
            feature_entitlements=(
                FeatureEntitlementSpec("a", "sso", fixed_limit="1"),
                FeatureEntitlementSpec("b", "calls", access=True),
                FeatureEntitlementSpec("c", "ghost", fixed_limit="1"),
                FeatureEntitlementSpec("d", "sso", access=False),
                FeatureEntitlementSpec("e", "calls"),
            ),
        )
    )
    assert set(problems) == {
        "plan.credit_entitlements[0].currency_key",
        "plan.credit_entitlements[1].amount",
        "plan.feature_entitlements[0].fixed_limit",
        "plan.feature_entitlements[1].access",
        "plan.feature_entitlements[2].feature_key",
        "plan.feature_entitlements[3].access",
        "plan.feature_entitlements[4].value",
    }


def test_bad_decimals_and_keys():
    _, problems = validate(
        PlanSpec(
            custom=True,
            credit_entitlements=(
                credit("Bad", fixed="0"),
                credit("ok", Cadence.YEARLY, variable=VariableSpec(min="1.0000001", max="NaN", default_value="-2")),
                credit("", None, fixed="1"),
            ),
        )
    )
    assert set(problems) == {
        "plan.credit_entitlements[0].key",
        "plan.credit_entitlements[0].fixed_amount",
        "plan.credit_entitlements[1].variable_amount.min",
        "plan.credit_entitlements[1].variable_amount.max",
        "plan.credit_entitlements[1].variable_amount.default_value",
        "plan.credit_entitlements[2].key",
        "plan.credit_entitlements[2].cadence",
    }


def test_update_merges_only_masked_fields():
    base, _ = validate(PlanSpec(display_name="A", description="d", credit_entitlements=(credit(fixed="1"),)))
    violations = Violations()
    merged = build_content(base, PlanSpec(display_name="B"), ["display_name"], violations)
    assert not violations
    assert (merged.display_name, merged.description, merged.credit_entitlements) == (
        "B",
        "d",
        base.credit_entitlements,
    )
