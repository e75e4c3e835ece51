"""An event as a webhook body: the canonical proto JSON (google.protobuf.json_format) of the same
CreditEvent message ListEvents and WatchEvents send, cursor included: one schema for every channel."""

from __future__ import annotations

import json

from google.protobuf import json_format

from grant_service.domain.events import StoredEvent
from grant_service.entrypoints.converters import event_pb
from grant_service.service_layer.events import EventWithCursor, encode_cursor


def event_body(stored: StoredEvent, log_id: str) -> bytes:
    """The webhook body of `stored`, compact JSON in the proto's field order."""
    message = event_pb(EventWithCursor(stored, encode_cursor(log_id, stored.position)))
    return json.dumps(json_format.MessageToDict(message), separators=(",", ":"), ensure_ascii=False).encode()
