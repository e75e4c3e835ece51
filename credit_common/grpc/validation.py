"""The checks every request of every RPC passes before its handler runs.

Some values are wrong whatever the method: a string holding a NUL character
(PostgreSQL text cannot store it) and a google.protobuf.Timestamp outside
0001-01-01T00:00:00Z..9999-12-31T23:59:59.999999999Z or with nanos outside
[0, 1e9) (no datetime can hold it). `check_request` walks a request (nested
messages, repeated fields, maps) and raises one InvalidArgument with a field
violation per bad field, named by its path ("credit_schedules[0].amounts[1].effective_time").

The walk is planned once per message type: only the fields that are strings,
Timestamps, or messages holding some are visited, so a request with nothing to
check costs one dictionary lookup (docs/hostile-input.md has the measurements).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from credit_common.errors import FieldViolation, InvalidArgument

TIMESTAMP_TYPE = "google.protobuf.Timestamp"
MIN_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z
MAX_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
MAX_NANOS = 999_999_999

NUL_CHARACTER = "NUL_CHARACTER"
TIMESTAMP_OUT_OF_RANGE = "TIMESTAMP_OUT_OF_RANGE"

_NUL_DESCRIPTION = "must not contain the NUL character (U+0000)"


def timestamp_problem(seconds: int, nanos: int) -> str | None:
    """Why a Timestamp's (seconds, nanos) is not a valid instant, or None."""
    if not 0 <= nanos <= MAX_NANOS:
        return "nanos must be between 0 and 999999999"
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        return "must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999999Z"
    return None


def check_request(message: Message) -> None:
    """Raise InvalidArgument if `message` holds a value no service accepts."""
    plan = _plans.get(message.DESCRIPTOR)
    if plan is None:
        plan = _plan(message.DESCRIPTOR)
    if not plan:
        return
    violations: list[FieldViolation] = []
    _walk(message, plan, "", violations)
    if violations:
        raise InvalidArgument("the request has invalid fields", violations=violations)


# ---------------------------------------------------------------------- the plan of each message type

# A plan is a tuple of steps, one per field worth visiting: (field name, visitor).
_Visitor = Callable[[Any, str, list[FieldViolation]], None]
_Plan = tuple[tuple[str, "_Step"], ...]


class _Step:
    """How to check one field's value: `visit(value, path, violations)`."""

    __slots__ = ("presence", "repeated", "visit")

    def __init__(self, visit: _Visitor, *, repeated: bool, presence: bool) -> None:
        self.visit = visit
        self.repeated = repeated
        self.presence = presence  # a singular message field: visited only when set


_plans: dict[Descriptor, _Plan] = {}


def _plan(descriptor: Descriptor) -> _Plan:
    _plans[descriptor] = ()  # a recursive type sees itself as "nothing to check" while being planned
    steps: list[tuple[str, _Step]] = []
    for field in descriptor.fields:
        step = _step(field)
        if step is not None:
            steps.append((field.name, step))
    plan = tuple(steps)
    _plans[descriptor] = plan
    return plan


def _step(field: FieldDescriptor) -> _Step | None:
    repeated = field.is_repeated
    if field.type == FieldDescriptor.TYPE_STRING:
        return _Step(_check_string, repeated=repeated, presence=False)
    if field.type != FieldDescriptor.TYPE_MESSAGE:
        return None
    sub = field.message_type
    if sub.GetOptions().map_entry:
        key_field, value_field = sub.fields_by_name["key"], sub.fields_by_name["value"]
        check_key = key_field.type == FieldDescriptor.TYPE_STRING
        value_step = _step(value_field)
        if not check_key and value_step is None:
            return None
        return _Step(_map_visitor(check_key, value_step), repeated=False, presence=False)
    if sub.full_name == TIMESTAMP_TYPE:
        return _Step(_check_timestamp, repeated=repeated, presence=not repeated)
    sub_plan = _plans.get(sub)
    if sub_plan is None:
        sub_plan = _plan(sub)
    if not sub_plan:
        return None
    return _Step(_message_visitor(sub_plan), repeated=repeated, presence=not repeated)


def _walk(message: Message, plan: _Plan, prefix: str, violations: list[FieldViolation]) -> None:
    for name, step in plan:
        if step.presence and not message.HasField(name):
            continue
        value = getattr(message, name)
        path = prefix + name
        if step.repeated:
            for i, item in enumerate(value):
                step.visit(item, f"{path}[{i}]", violations)
        else:
            step.visit(value, path, violations)


def _check_string(value: str, path: str, violations: list[FieldViolation]) -> None:
    if "\x00" in value:
        violations.append(FieldViolation(path, _NUL_DESCRIPTION, NUL_CHARACTER))


def _check_timestamp(value: Message, path: str, violations: list[FieldViolation]) -> None:
    problem = timestamp_problem(value.seconds, value.nanos)  # type: ignore[attr-defined]
    if problem is not None:
        violations.append(FieldViolation(path, problem, TIMESTAMP_OUT_OF_RANGE))


def _message_visitor(plan: _Plan) -> _Visitor:
    def visit(value: Message, path: str, violations: list[FieldViolation]) -> None:
        _walk(value, plan, path + ".", violations)

    return visit


def _map_visitor(check_key: bool, value_step: _Step | None) -> _Visitor:
    def visit(value: Any, path: str, violations: list[FieldViolation]) -> None:
        for key in value:
            item_path = f"{path}[{_printable(key)}]"
            if check_key and "\x00" in key:
                violations.append(FieldViolation(item_path, "the key " + _NUL_DESCRIPTION, NUL_CHARACTER))
            if value_step is not None:
                value_step.visit(value[key], item_path, violations)

    return visit


def _printable(key: Any) -> str:
    """A map key as shown in a field path: NUL characters escaped, at most 64 characters."""
    text = str(key).replace("\x00", "\\0")
    return text if len(text) <= 64 else text[:61] + "..."
