"""Webhook rules without I/O: secrets, Standard Webhooks signatures (checked by the
`standardwebhooks` package), the target URL policy, the disable rule."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook

from grant_service.domain.webhooks import (
    DisabledReason,
    UrlPolicy,
    WebhookEndpoint,
    new_secret,
    should_disable,
    signature_header,
)

T0 = datetime(2026, 6, 1, tzinfo=UTC)


def test_signatures_verify_with_standardwebhooks_for_each_secret():
    first, second = new_secret(), new_secret()
    now = int(datetime.now(UTC).timestamp())
    body = b'{"eventId":"evt_1"}'
    header = signature_header([first, second], "evt_1", now, body)
    headers = {"webhook-id": "evt_1", "webhook-timestamp": str(now), "webhook-signature": header}
    for secret in (first, second):
        assert Webhook(secret).verify(body, headers) == {"eventId": "evt_1"}


def _endpoint(**changes) -> WebhookEndpoint:
    fields = dict(
        endpoint_id="whe_1",
        url="https://example.com",
        event_types=(),
        description="",
        disabled_reason=DisabledReason.NONE,
        secret="whsec_new",
        previous_secret="whsec_old",
        previous_secret_expire_time=T0 + timedelta(hours=1),
        create_time=T0,
        update_time=T0,
    )
    return WebhookEndpoint(**{**fields, **changes})


def test_the_previous_secret_signs_until_it_expires():
    endpoint = _endpoint()
    assert endpoint.signing_secrets(T0) == ["whsec_new", "whsec_old"]
    assert endpoint.signing_secrets(T0 + timedelta(hours=1)) == ["whsec_new"]


@pytest.mark.parametrize(
    "url, policy, reasons",
    [
        ("https://hooks.example.com/x?a=1", UrlPolicy(), []),
        ("http://hooks.example.com/x", UrlPolicy(), ["HTTPS_REQUIRED"]),
        ("http://hooks.example.com/x", UrlPolicy(allow_http=True), []),
        ("https://10.0.0.7/x", UrlPolicy(), ["PRIVATE_ADDRESS_NOT_ALLOWED"]),
        ("https://[::1]/x", UrlPolicy(), ["PRIVATE_ADDRESS_NOT_ALLOWED"]),
        ("https://[::ffff:127.0.0.1]/x", UrlPolicy(), ["PRIVATE_ADDRESS_NOT_ALLOWED"]),
        ("https://169.254.169.254/latest", UrlPolicy(), ["PRIVATE_ADDRESS_NOT_ALLOWED"]),
        ("https://localhost/x", UrlPolicy(), ["PRIVATE_ADDRESS_NOT_ALLOWED"]),
        ("https://127.0.0.1/x", UrlPolicy(allow_private=True), []),
        ("https://a.example.com/x", UrlPolicy(allowed_hosts=("*.example.com",)), []),
        ("https://example.org/x", UrlPolicy(allowed_hosts=("*.example.com",)), ["HOST_NOT_ALLOWED"]),
        ("https://u:p@example.com/x", UrlPolicy(), ["INVALID_URL"]),
        ("https://example.com/x#frag", UrlPolicy(), ["INVALID_URL"]),
        ("https://example.com:99999/x", UrlPolicy(), ["INVALID_URL"]),
        ("javascript:alert(1)", UrlPolicy(), ["INVALID_URL"]),
        ("/relative", UrlPolicy(), ["INVALID_URL"]),
        ("", UrlPolicy(), ["REQUIRED"]),
    ],
)
def test_url_policy(url, policy, reasons):
    assert [p.reason for p in policy.problems(url)] == reasons


def test_resolved_addresses_are_checked_too():
    policy = UrlPolicy()
    assert policy.addresses_problem(["93.184.216.34"]) is None
    assert policy.addresses_problem(["93.184.216.34", "192.168.1.1"]).reason == "PRIVATE_ADDRESS_NOT_ALLOWED"
    assert policy.address_problem(ipaddress.ip_address("fe80::1")) is not None


def test_disabled_once_failing_for_the_limit():
    limit = timedelta(days=5)
    assert not should_disable(None, T0, limit)
    assert not should_disable(T0, T0 + limit - timedelta(seconds=1), limit)
    assert should_disable(T0, T0 + limit, limit)
