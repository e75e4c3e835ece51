"""The client side: a channel that sends an API key with every call."""

from __future__ import annotations

import grpc


class _ApiKeyMetadata(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    def __init__(self, api_key: str) -> None:
        self._metadata = (("authorization", f"Bearer {api_key}"),)

    def intercept_unary_unary(self, continuation, client_call_details, request):
        metadata = (*(client_call_details.metadata or ()), *self._metadata)
        return continuation(client_call_details._replace(metadata=metadata), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        metadata = (*(client_call_details.metadata or ()), *self._metadata)
        return continuation(client_call_details._replace(metadata=metadata), request)


def with_api_key(channel: grpc.Channel, api_key: str | None) -> grpc.Channel:
    """`channel`, sending `authorization: Bearer <api_key>` with every unary or server-streaming call (the channel
    itself when `api_key` is None or empty). Works on insecure and TLS channels alike; closing
    the returned channel closes `channel`."""
    if not api_key:
        return channel
    return grpc.intercept_channel(channel, _ApiKeyMetadata(api_key))
