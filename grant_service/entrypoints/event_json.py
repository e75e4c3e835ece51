"""A stored event as the CreditEvent message and its canonical proto JSON (the webhook body), and
the opaque event cursor.

Interim: the events branch owns the CreditEvent conversion and the cursor format used by
ListEvents/WatchEvents; when both are merged, this module's two functions should call those
(one schema, one cursor format)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from google.protobuf import json_format

from credit_common.decimals import format_decimal
from credit_common.errors import FieldViolation, InvalidArgument
from credit_common.grpc.timestamps import to_timestamp
from grant_service.domain.events import PAYLOAD_OF, EventPosition, StoredEvent
from grant_service.domain.model import REAL_TIME
from grant_service.v1 import grant_service_pb2 as pb


def cursor_of(log_id: str, position: EventPosition) -> str:
    raw = f"{log_id}.{position.txid}.{position.seq}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def position_of(cursor: str, log_id: str, field: str = "after_cursor") -> EventPosition | None:
    """The position a cursor names (None for ""); INVALID_ARGUMENT INVALID_CURSOR for another log's
    or a malformed one."""
    if not cursor:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        owner, txid, seq = text.rsplit(".", 2)
        position = EventPosition(int(txid), int(seq))
        if owner != log_id or position.txid < 0 or position.seq < 0:
            raise ValueError
        return position
    except ValueError:
        raise InvalidArgument(
            "the cursor is not one this event log issued",
            reason="INVALID_CURSOR",
            violations=[FieldViolation(field, "is not a cursor of this event log", "INVALID_CURSOR")],
        ) from None


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, Decimal):
        return format_decimal(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def credit_event_pb(stored: StoredEvent, log_id: str) -> pb.CreditEvent:
    event = stored.event
    message = pb.CreditEvent(
        event_id=event.event_id,
        cursor=cursor_of(log_id, stored.position),
        type=pb.CreditEventType.Value(f"CREDIT_EVENT_TYPE_{event.type.value}"),
        occurred_time=to_timestamp(event.occurred_time),
        recorded_time=to_timestamp(stored.recorded_time),
        customer_key=event.customer_key,
        currency_key=event.currency_key,
        test_clock_id="" if event.clock_key == REAL_TIME else event.clock_key,
    )
    payload = getattr(message, PAYLOAD_OF[event.type])
    json_format.ParseDict(_plain(dict(event.payload)), payload, ignore_unknown_fields=True)
    return message


def event_body(stored: StoredEvent, log_id: str) -> bytes:
    """The webhook body: the CreditEvent's canonical proto JSON, compact, keys in field order."""
    as_dict = json_format.MessageToDict(credit_event_pb(stored, log_id), preserving_proto_field_name=False)
    return json.dumps(as_dict, separators=(",", ":"), ensure_ascii=False).encode()
