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


def check_items_in_handler(field_full_name: str) -> None:
    """Leave the items of a repeated message field (e.g. "pkg.BatchRequest.requests") to the
    handler, which calls `check_request` on each: a batch whose items are accepted or
    rejected one by one must not fail whole for one bad item."""
    _items_in_handler.add(field_full_name)
    _plans.clear()


def check_request(message: Message) -> None:
    """Raise InvalidArgument if `message` holds a value no service accepts (a request
    that is not a protobuf message, e.g. raw bytes of a generic handler, has nothing to check)."""
    descriptor = getattr(message, "DESCRIPTOR", None)
    if descriptor is None:
        return
    plan = _plans.get(descriptor)
    if plan is None:
        plan = _plan(descriptor)
    if not plan:
        return
    violations: list[FieldViolation] = []
    _walk(message, plan, None, violations)
    if violations:
        raise InvalidArgument("the request has invalid fields", violations=violations)


# ---------------------------------------------------------------------- the plan of each message type

# A plan lists the fields worth visiting: (name, kind, repeated, plan of the field's message type
# or, for a map, (check the keys, kind of the values, plan of the values)).
_STRING, _TIMESTAMP, _MESSAGE, _MAP = range(4)
_Plan = tuple[tuple[str, int, bool, Any], ...]
_plans: dict[Descriptor, _Plan] = {}
_items_in_handler: set[str] = set()

# Where a message sits in the request: None (the request itself) or (parent's place, field name,
# index or map key or None). Turned into "a.b[2].c" only for a violation.
_Place = tuple[Any, str, Any] | None


def _plan(descriptor: Descriptor, planning: frozenset[Descriptor] = frozenset()) -> _Plan:
    """The plan of `descriptor`, stored only once complete (RPC threads read `_plans` unlocked).
    A message type found again inside itself (`planning`) is not descended into."""
    plan = _plans.get(descriptor)
    if plan is not None:
        return plan
    if descriptor in planning:
        return ()
    planning = planning | {descriptor}
    steps = []
    for field in descriptor.fields:
        if field.full_name in _items_in_handler:
            continue
        step = _step(field, planning)
        if step is not None:
            steps.append((field.name, *step))
    plan = tuple(steps)
    _plans[descriptor] = plan
    return plan


def _step(field: FieldDescriptor, planning: frozenset[Descriptor]) -> tuple[int, bool, Any] | None:
    repeated = field.is_repeated
    if field.type == FieldDescriptor.TYPE_STRING:
        return _STRING, repeated, None
    if field.type != FieldDescriptor.TYPE_MESSAGE:
        return None
    sub = field.message_type
    if sub.GetOptions().map_entry:
        key_field, value_field = sub.fields_by_name["key"], sub.fields_by_name["value"]
        check_keys = key_field.type == FieldDescriptor.TYPE_STRING
        value_step = _step(value_field, planning)
        if not check_keys and value_step is None:
            return None
        value_kind, _, value_plan = value_step if value_step is not None else (None, False, None)
        return _MAP, False, (check_keys, value_kind, value_plan)
    if sub.full_name == TIMESTAMP_TYPE:
        return _TIMESTAMP, repeated, None
    sub_plan = _plan(sub, planning)
    if not sub_plan:
        return None
    return _MESSAGE, repeated, sub_plan


def _walk(message: Message, plan: _Plan, place: _Place, violations: list[FieldViolation]) -> None:
    for name, kind, repeated, sub in plan:
        if kind == _STRING:
            if repeated:
                for i, value in enumerate(getattr(message, name)):
                    if "\x00" in value:
                        violations.append(_nul((place, name, i)))
            elif "\x00" in getattr(message, name):
                violations.append(_nul((place, name, None)))
        elif kind == _TIMESTAMP:
            if repeated:
                for i, value in enumerate(getattr(message, name)):
                    _check_timestamp(value, (place, name, i), violations)
            elif message.HasField(name):
                _check_timestamp(getattr(message, name), (place, name, None), violations)
        elif kind == _MESSAGE:
            if repeated:
                for i, value in enumerate(getattr(message, name)):
                    _walk(value, sub, (place, name, i), violations)
            elif message.HasField(name):
                _walk(getattr(message, name), sub, (place, name, None), violations)
        else:
            _walk_map(getattr(message, name), sub, (place, name), violations)


def _walk_map(entries: Any, step: tuple[bool, Any, Any], place: tuple[Any, str], violations) -> None:
    check_keys, value_kind, value_plan = step
    parent, name = place
    for key in entries:
        entry_place = (parent, name, key)
        if check_keys and "\x00" in key:
            violations.append(_nul(entry_place, "the key "))
        if value_kind == _STRING:
            if "\x00" in entries[key]:
                violations.append(_nul(entry_place))
        elif value_kind == _TIMESTAMP:
            _check_timestamp(entries[key], entry_place, violations)
        elif value_kind == _MESSAGE:
            _walk(entries[key], value_plan, entry_place, violations)


def _check_timestamp(value: Any, place: _Place, violations: list[FieldViolation]) -> None:
    seconds, nanos = value.seconds, value.nanos
    if MIN_SECONDS <= seconds <= MAX_SECONDS and 0 <= nanos <= MAX_NANOS:
        return
    problem = timestamp_problem(seconds, nanos)
    assert problem is not None
    violations.append(FieldViolation(_path(place), problem, TIMESTAMP_OUT_OF_RANGE))


def _nul(place: _Place, what: str = "") -> FieldViolation:
    return FieldViolation(_path(place), what + _NUL_DESCRIPTION, NUL_CHARACTER)


def _path(place: _Place) -> str:
    """ "credit_schedules[0].amounts[1].effective_time" for the place of that field."""
    parts: list[str] = []
    while place is not None:
        parent, name, index = place
        if index is None:
            parts.append(name)
        elif isinstance(index, int):
            parts.append(f"{name}[{index}]")
        else:
            parts.append(f"{name}[{_printable(index)}]")
        place = parent
    return ".".join(reversed(parts))


def _printable(key: Any) -> str:
    """A map key as shown in a field path: NUL characters escaped, at most 64 characters."""
    text = str(key).replace("\x00", "\\0")
    return text if len(text) <= 64 else text[:61] + "..."
