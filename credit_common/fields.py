"""Field checks of a request, the same in both services: one message and one violation reason per
rule. Pure (no gRPC): each check adds a FieldViolation to a `Violations` (credit_common.errors), so a
request reports every problem at once; `Violations.raise_if_any` makes them one INVALID_ARGUMENT
(ErrorInfo reason INVALID_ARGUMENT), which credit_common.grpc.errors sends as a google.rpc.BadRequest.

A check takes the value, the field's path as the caller sees it ("plan.key",
"credit_schedules[0].amounts[1].amount") and the violations, and returns whether the value passed
(a parse returns the value, or None).

| rule | description | reason |
|---|---|---|
| a required field is empty | "is required" | REQUIRED |
| a key is not a key | KEY_RULE and the value | INVALID_KEY |
| a text is too long | "must be at most N characters" | TOO_LONG |
| a repeated field has no item | "must have at least one item" | REQUIRED |
| a repeated field has too many items | "must have at most N items" | TOO_MANY |
| a decimal is malformed, out of range, negative or zero | what credit_common.decimals says | INVALID_DECIMAL |
"""

from __future__ import annotations

from collections.abc import Sized
from decimal import Decimal

from credit_common.decimals import DecimalFormatError, parse_decimal
from credit_common.errors import Violations
from credit_common.ids import KEY_RULE, REQUEST_ID_MAX_LENGTH, is_valid_key

REQUIRED = "REQUIRED"
INVALID_KEY = "INVALID_KEY"
TOO_LONG = "TOO_LONG"
TOO_MANY = "TOO_MANY"
INVALID_DECIMAL = "INVALID_DECIMAL"

_SHOWN = 40  # characters of a bad value shown in its violation


def _shown(value: str) -> str:
    return repr(value if len(value) <= _SHOWN else value[: _SHOWN - 3] + "...")


def check_required(value: str, path: str, violations: Violations) -> bool:
    if not value:
        violations.add(path, "is required", REQUIRED)
        return False
    return True


def check_length(value: str, path: str, violations: Violations, limit: int) -> bool:
    if len(value) > limit:
        violations.add(path, f"must be at most {limit} characters", TOO_LONG)
        return False
    return True


def check_text(value: str, path: str, violations: Violations, limit: int = 1000) -> bool:
    """Free text (a name, a description, a reason): may be empty, at most `limit` characters."""
    return check_length(value, path, violations, limit)


def check_key(value: str, path: str, violations: Violations) -> bool:
    """A caller-chosen key (credit_common.ids.KEY_PATTERN), required."""
    if not check_required(value, path, violations):
        return False
    if not is_valid_key(value):
        violations.add(path, f"{KEY_RULE} (got {_shown(value)})", INVALID_KEY)
        return False
    return True


def check_optional_key(value: str, path: str, violations: Violations) -> bool:
    """A key that may be left empty (a filter, a default for every customer)."""
    return not value or check_key(value, path, violations)


def check_id(value: str, path: str, violations: Violations, max_length: int) -> bool:
    """A server-assigned id (or a caller's id of another system), required, at most `max_length` characters."""
    return check_required(value, path, violations) and check_length(value, path, violations, max_length)


def check_request_id(value: str, path: str, violations: Violations, *, required: bool = False) -> bool:
    """A `request_id` (credit_common.idempotency): at most REQUEST_ID_MAX_LENGTH characters."""
    if required and not check_required(value, path, violations):
        return False
    return check_length(value, path, violations, REQUEST_ID_MAX_LENGTH)


def check_items(items: Sized, path: str, violations: Violations, *, at_most: int | None, required: bool = True) -> bool:
    """A repeated field: at least one item (if `required`), at most `at_most` (None: no limit)."""
    if required and not len(items):
        violations.add(path, "must have at least one item", REQUIRED)
        return False
    if at_most is not None and len(items) > at_most:
        violations.add(path, f"must have at most {at_most} items", TOO_MANY)
        return False
    return True


def parse_amount(
    text: str, path: str, violations: Violations, *, allow_zero: bool, allow_negative: bool = False
) -> Decimal | None:
    """A caller's decimal string (credit_common.decimals.parse_decimal): > 0 (amounts, rates,
    quantities), >= 0 with `allow_zero` (limits), any sign with `allow_negative`; None and a
    violation if it is not one."""
    try:
        return parse_decimal(text, allow_zero=allow_zero, allow_negative=allow_negative)
    except DecimalFormatError as error:
        violations.add(path, str(error), INVALID_DECIMAL)
        return None


class Fields:
    """The checks above over one request's violations, for a converter that checks field after
    field and then fails with every problem at once (`done`)."""

    def __init__(self) -> None:
        self.violations = Violations()

    def key(self, path: str, value: str) -> str:
        check_key(value, path, self.violations)
        return value

    def optional_key(self, path: str, value: str) -> str:
        check_optional_key(value, path, self.violations)
        return value

    def required(self, path: str, value: str, max_length: int = 128) -> str:
        check_id(value, path, self.violations, max_length)
        return value

    def text(self, path: str, value: str, limit: int) -> str:
        check_text(value, path, self.violations, limit)
        return value

    def request_id(self, path: str, value: str, *, required: bool = False) -> str:
        check_request_id(value, path, self.violations, required=required)
        return value

    def items(self, path: str, items: Sized, *, at_most: int | None, required: bool = True) -> None:
        check_items(items, path, self.violations, at_most=at_most, required=required)

    def positive(self, path: str, value: str) -> Decimal:
        """A decimal > 0; 1 in its place when it is not one (the request fails at `done`)."""
        parsed = parse_amount(value, path, self.violations, allow_zero=False)
        return Decimal(1) if parsed is None else parsed

    def done(self) -> None:
        self.violations.raise_if_any()
