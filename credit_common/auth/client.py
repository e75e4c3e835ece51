"""The client side: a channel that sends an API key with every call."""

from __future__ import annotations

import grpc


class _ApiKeyMetadata(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, api_key: str) -> None:
        self._metadata = (("authorization", f"Bearer {api_key}"),)

    def _with_key(self, details):
        return details._replace(metadata=(*(details.metadata or ()), *self._metadata))

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._with_key(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._with_key(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._with_key(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._with_key(client_call_details), request_iterator)


def with_api_key(channel: grpc.Channel, api_key: str | None) -> grpc.Channel:
    """`channel`, sending `authorization: Bearer <api_key>` with every call, unary or streaming (the
    channel itself when `api_key` is None or empty). Works on insecure and TLS channels alike;
    closing the returned channel closes `channel`."""
    if not api_key:
        return channel
    return grpc.intercept_channel(channel, _ApiKeyMetadata(api_key))
