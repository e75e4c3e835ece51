"""credit_common.fields: one message and one violation reason per rule, and both services giving the
same violation for the same rule (the catalog's plan rules, the grant service's converters)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from catalog_service.domain.catalog import parse_rates
from catalog_service.domain.model import FeatureType, PlanContent
from catalog_service.domain.plans import CreditEntitlementSpec, PlanSpec, build_content
from credit_common.errors import FieldViolation, InvalidArgument, Violations
from credit_common.fields import (
    Fields,
    check_id,
    check_items,
    check_key,
    check_optional_key,
    check_request_id,
    check_required,
    check_text,
    parse_amount,
)
from credit_common.idempotency import check_request_id as idempotency_check_request_id
from credit_common.ids import KEY_RULE
from credit_common.periods import Cadence
from grant_service.entrypoints import converters
from grant_service.entrypoints import webhook_converters as webhooks
from grant_service.v1 import grant_service_pb2 as pb
from grant_service.v1 import webhooks_pb2 as wpb


def _violations(check) -> list[FieldViolation]:
    violations = Violations()
    check(violations)
    return list(violations)


def _raised(call) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as raised:
        call()
    return raised.value


@pytest.mark.parametrize(
    "check, expected",
    [
        (lambda v: check_required("", "a", v), [FieldViolation("a", "is required", "REQUIRED")]),
        (lambda v: check_required("x", "a", v), []),
        (lambda v: check_key("", "k", v), [FieldViolation("k", "is required", "REQUIRED")]),
        (lambda v: check_key("Bad Key", "k", v), [FieldViolation("k", f"{KEY_RULE} (got 'Bad Key')", "INVALID_KEY")]),
        (lambda v: check_key("good-key_1", "k", v), []),
        (lambda v: check_optional_key("", "k", v), []),
        (lambda v: check_optional_key("9", "k", v), [FieldViolation("k", f"{KEY_RULE} (got '9')", "INVALID_KEY")]),
        (
            lambda v: check_text("x" * 11, "t", v, 10),
            [FieldViolation("t", "must be at most 10 characters", "TOO_LONG")],
        ),
        (lambda v: check_text("", "t", v, 10), []),
        (lambda v: check_id("", "i", v, 4), [FieldViolation("i", "is required", "REQUIRED")]),
        (lambda v: check_id("12345", "i", v, 4), [FieldViolation("i", "must be at most 4 characters", "TOO_LONG")]),
        (
            lambda v: check_request_id("r" * 129, "request_id", v),
            [FieldViolation("request_id", "must be at most 128 characters", "TOO_LONG")],
        ),
        (lambda v: check_request_id("", "request_id", v), []),
        (
            lambda v: check_request_id("", "request_id", v, required=True),
            [FieldViolation("request_id", "is required", "REQUIRED")],
        ),
        (
            lambda v: check_items([], "l", v, at_most=2),
            [FieldViolation("l", "must have at least one item", "REQUIRED")],
        ),
        (lambda v: check_items([], "l", v, at_most=2, required=False), []),
        (
            lambda v: check_items([1, 2, 3], "l", v, at_most=2),
            [FieldViolation("l", "must have at most 2 items", "TOO_MANY")],
        ),
        (lambda v: check_items([1, 2, 3], "l", v, at_most=None), []),
    ],
)
def test_each_rule_has_one_message_and_one_reason(check, expected):
    assert _violations(check) == expected


def test_a_long_bad_key_is_shown_clipped():
    (violation,) = _violations(lambda v: check_key("K" * 500, "k", v))
    assert violation.description == f"{KEY_RULE} (got '{'K' * 37}...')"


@pytest.mark.parametrize(
    "text, allow_zero, allow_negative, expected",
    [("2.5", False, False, Decimal("2.5")), ("0", True, False, Decimal(0)), ("-1", True, True, Decimal(-1))],
)
def test_a_decimal_is_parsed(text, allow_zero, allow_negative, expected):
    violations = Violations()
    assert parse_amount(text, "a", violations, allow_zero=allow_zero, allow_negative=allow_negative) == expected
    assert not violations


@pytest.mark.parametrize(
    "text, allow_zero, description",
    [
        ("0", False, "must be greater than 0"),
        ("-1", True, "must not be negative"),
        ("1e3", True, '\'1e3\' is not a decimal string such as "100" or "2.5"'),
        ("", True, 'must be a decimal string such as "100" or "2.5"'),
    ],
)
def test_a_bad_decimal_is_invalid_decimal_with_what_the_parser_says(text, allow_zero, description):
    violations = Violations()
    assert parse_amount(text, "a", violations, allow_zero=allow_zero) is None
    assert list(violations) == [FieldViolation("a", description, "INVALID_DECIMAL")]


def test_fields_collects_every_problem_then_fails_with_invalid_argument():
    fields = Fields()
    assert fields.key("k", "Bad") == "Bad"
    fields.required("id", "", 40)
    fields.request_id("request_id", "r" * 200)
    assert fields.positive("amount", "0") == Decimal(1)
    fields.text("reason", "x" * 3, 2)
    error = _raised(fields.done)
    assert error.reason == "INVALID_ARGUMENT"
    assert [(v.field, v.reason) for v in error.violations] == [
        ("k", "INVALID_KEY"),
        ("id", "REQUIRED"),
        ("request_id", "TOO_LONG"),
        ("amount", "INVALID_DECIMAL"),
        ("reason", "TOO_LONG"),
    ]
    Fields().done()  # nothing wrong: no error


def test_the_idempotency_check_of_a_request_id_is_the_same_rule():
    error = _raised(lambda: idempotency_check_request_id("r" * 129))
    assert error.reason == "INVALID_ARGUMENT"
    assert error.violations == (FieldViolation("request_id", "must be at most 128 characters", "TOO_LONG"),)


# ------------------------------------------------------------- the same rule in both services


def _catalog_plan(spec: PlanSpec) -> list[FieldViolation]:
    violations = Violations()
    build_content(PlanContent(), spec, ("credit_entitlements",), violations)
    return list(violations)


def test_a_bad_key_is_the_same_violation_in_both_services():
    catalog = _catalog_plan(
        PlanSpec(credit_entitlements=(CreditEntitlementSpec("Bad Key", "ai", Cadence.MONTHLY, fixed_amount="1"),))
    )
    grant = _raised(lambda: converters.check_balance(pb.GetBalanceRequest(customer_key="Bad Key", currency_key="ai")))
    assert [(v.description, v.reason) for v in catalog] == [(v.description, v.reason) for v in grant.violations]
    assert grant.violations[0].reason == "INVALID_KEY"


def test_a_missing_key_is_the_same_violation_in_both_services():
    catalog = _catalog_plan(PlanSpec(credit_entitlements=(CreditEntitlementSpec("", "", Cadence.MONTHLY, "1"),)))
    grant = _raised(lambda: converters.check_balance(pb.GetBalanceRequest()))
    assert {(v.description, v.reason) for v in catalog} == {("is required", "REQUIRED")}
    assert {(v.description, v.reason) for v in grant.violations} == {("is required", "REQUIRED")}


def test_a_bad_amount_is_the_same_violation_in_both_services():
    catalog = Violations()
    parse_rates([("gpt", "0")], {"gpt": FeatureType.METERED}, catalog)
    grant = _raised(
        lambda: converters.credit_currency_args(
            pb.ApplyCreditCurrencyRequest(
                currency_key="ai", revision=1, rates=[pb.CreditRate(feature_key="gpt", credits_per_unit="0")]
            )
        )
    )
    assert [(v.description, v.reason) for v in catalog] == [(v.description, v.reason) for v in grant.violations]
    assert grant.violations[0].reason == "INVALID_DECIMAL"


def test_field_problems_of_the_webhook_methods_are_invalid_argument_as_everywhere():
    error = _raised(lambda: webhooks.check_resend(wpb.ResendWebhookEventRequest(request_id="r" * 129)))
    assert error.reason == "INVALID_ARGUMENT"
    assert [(v.field, v.reason) for v in error.violations] == [
        ("endpoint_id", "REQUIRED"),
        ("event_id", "REQUIRED"),
        ("request_id", "TOO_LONG"),
    ]
    too_long = _raised(lambda: converters.check_void_grant(pb.VoidGrantRequest(grant_id="g", request_id="r" * 129)))
    assert [(v.description, v.reason) for v in too_long.violations] == [
        (v.description, v.reason) for v in error.violations if v.field == "request_id"
    ]
