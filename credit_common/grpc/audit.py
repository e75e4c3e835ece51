"""What an audit record names as the resource of a call: the ids and keys of the request and the response.

Read generically from the messages, so a new method is audited without a line of its own: the
singular string fields whose name is `id`, `key` or ends in `_id` or `_key` (customer_key,
subscription_id, grant_id, currency_key ...), of the message and of the messages it holds one level
down (`grant.grant_id` of a CreateGrantResponse), and for a repeated message field its count and
the ids of its first items. `request_id` is recorded on its own; no other field is read, so an
amount, a URL or a secret never reaches the log.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

MAX_ITEMS = 20  # ids of the first items of a repeated field (a batch of 500 is counted, not listed)
_STRING = FieldDescriptor.TYPE_STRING
_MESSAGE = FieldDescriptor.TYPE_MESSAGE
_plans: dict[Descriptor, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {}


def _is_resource(name: str) -> bool:
    return name in ("id", "key") or (name.endswith(("_id", "_key")) and name != "request_id")


def _plan(descriptor: Descriptor) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(resource string fields, singular message fields, repeated message fields) of a message type."""
    plan = _plans.get(descriptor)
    if plan is None:
        strings, messages, lists = [], [], []
        for field in descriptor.fields:
            if field.type == _STRING and not field.is_repeated and _is_resource(field.name):
                strings.append(field.name)
            elif field.type == _MESSAGE and not field.message_type.GetOptions().map_entry:
                if field.message_type.full_name.startswith("google.protobuf."):
                    continue
                (lists if field.is_repeated else messages).append(field.name)
        plan = _plans[descriptor] = (tuple(strings), tuple(messages), tuple(lists))
    return plan


def resource_of(message: Any, *, depth: int = 1) -> dict[str, Any]:
    """The ids and keys `message` holds (see the module's docstring); {} for what is no message."""
    if not isinstance(message, Message):
        return {}
    strings, messages, lists = _plan(message.DESCRIPTOR)
    found: dict[str, Any] = {name: value for name in strings if (value := getattr(message, name))}
    if depth <= 0:
        return found
    for name in messages:
        if message.HasField(name):
            for inner, value in resource_of(getattr(message, name), depth=0).items():
                found[f"{name}.{inner}"] = value
    for name in lists:
        items = getattr(message, name)
        if items:
            found[f"{name}.count"] = len(items)
            listed = [resource for item in items[:MAX_ITEMS] if (resource := resource_of(item, depth=0))]
            if listed:
                found[name] = listed
    return found
