"""The grant service's settings: the common ones (credit_common.config) and its own, typed, made
of the command line and the GRANT_<FLAG> variables in one place, `grant_settings`."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal, InvalidOperation

from credit_common.config import Env, ServiceFlags, ServiceSettings, env_flag, on_off, positive_int
from grant_service.domain.webhooks import DEFAULT_DISABLE_AFTER, UrlPolicy


@dataclass(frozen=True)
class WebhookSettings:
    """Webhook delivery in this process (docs/operations.md#webhooks)."""

    workers: int = 8  # lanes: endpoints delivered to at once by this process; 0: no delivery here
    timeout_s: float = 10.0  # an attempt's read/write timeout
    connect_timeout_s: float = 5.0
    batch_size: int = 50  # deliveries one lane claims
    lease_s: float = 60.0
    poll_interval_s: float = 0.2
    disable_after: timedelta = DEFAULT_DISABLE_AFTER
    policy: UrlPolicy = field(default_factory=UrlPolicy)

    def __post_init__(self) -> None:
        if self.workers < 0 or self.batch_size < 1:
            raise ValueError("--webhook-workers must be 0 or more and --webhook-batch-size at least 1")
        if not (self.timeout_s > 0 and self.connect_timeout_s > 0 and self.poll_interval_s > 0):
            raise ValueError("webhook timeouts and the poll interval must be positive")
        if self.lease_s < 3 * (self.timeout_s + self.connect_timeout_s):
            raise ValueError("--webhook-lease-s must be at least 3 times an attempt's timeouts")
        if self.disable_after <= timedelta(0):
            raise ValueError("--webhook-disable-after-hours must be positive")


@dataclass(frozen=True, kw_only=True)
class GrantSettings(ServiceSettings):
    catch_up_interval_s: float  # between two runs of the issuance/expiry catch-up; 0: no timer
    catch_up_batch_size: int  # schedules or grants per catch-up transaction
    batch_linger_s: float  # how long the leader of a batch of reads or debits may wait for more callers
    max_revision_step: int  # the most a revision may rise within a window, above the one held when it opened
    max_revision_step_window_s: float  # the length of that window
    max_applied_amount: Decimal | None  # the largest amount ApplySubscription(s) may schedule; None: no ceiling
    test_clocks_enabled: bool  # the test clock methods answer (else FAILED_PRECONDITION)
    events_heartbeat_s: float = 15.0  # WatchEvents: a heartbeat after this long without a message
    events_poll_s: float = 0.05  # WatchEvents: reads at least this often (other replicas' commits)
    events_enabled: bool = True  # write credit events (off: for the benchmark's comparison only)
    webhooks: WebhookSettings = field(default_factory=lambda: WebhookSettings())

    def __post_init__(self) -> None:
        if not (self.catch_up_interval_s >= 0 and math.isfinite(self.catch_up_interval_s)):
            raise ValueError("--catch-up-interval must be 0 (no timer) or a positive number of seconds")
        if self.catch_up_batch_size < 1:
            raise ValueError("--catch-up-batch-size must be at least 1")
        if not (self.batch_linger_s >= 0 and math.isfinite(self.batch_linger_s)):
            raise ValueError("--batch-linger-ms must be 0 or a positive number of milliseconds")
        if self.max_revision_step < 1:
            raise ValueError("--max-revision-step must be at least 1")
        if not (0 < self.events_heartbeat_s <= 3600):
            raise ValueError("--events-heartbeat-interval must be more than 0 and at most 3600 seconds")
        if not (0 < self.events_poll_s <= 60):
            raise ValueError("--events-poll-interval-ms must be more than 0 and at most 60000")
        if not (self.max_revision_step_window_s > 0 and math.isfinite(self.max_revision_step_window_s)):
            raise ValueError("--max-revision-step-window-s must be a positive number of seconds")
        if self.max_applied_amount is not None and not self.max_applied_amount > 0:
            raise ValueError("--max-applied-amount must be a decimal above 0")


def add_arguments(parser: argparse.ArgumentParser, env: Env) -> None:
    """The grant service's own flags (each also GRANT_<FLAG> in the environment)."""
    parser.add_argument(
        "--catch-up-interval",
        type=float,
        default=float(env("CATCH_UP_INTERVAL", "1.0")),
        help="seconds between two runs of the issuance/expiry catch-up (default 1.0; 0 disables the timer)",
    )
    parser.add_argument(
        "--catch-up-batch-size",
        type=int,
        default=int(env("CATCH_UP_BATCH_SIZE", "500")),
        help="schedules or grants handled per catch-up transaction (default 500)",
    )
    parser.add_argument(
        "--batch-linger-ms",
        type=float,
        default=float(env("BATCH_LINGER_MS", "8")),
        help="how long the leader of a batch of concurrent reads (GetBalance) or debits (ReportUsage) may "
        "wait for as many callers as the previous batch had (default 8; 0: never waits). See README",
    )
    parser.add_argument(
        "--max-revision-step",
        type=positive_int,
        default=env("MAX_REVISION_STEP", "1000"),
        help="the most a subscription's or currency's revision may rise within a window (below), above the "
        "revision held when the window opened (of none: 0), however split across items and calls; further is "
        "INVALID_ARGUMENT REVISION_TOO_FAR_AHEAD (default 1000; see docs/security.md)",
    )
    parser.add_argument(
        "--max-revision-step-window-s",
        type=float,
        default=float(env("MAX_REVISION_STEP_WINDOW_S", "86400")),
        help="the window of --max-revision-step, in seconds (default 86400: a day)",
    )
    parser.add_argument(
        "--max-applied-amount",
        type=decimal_amount,
        default=env("MAX_APPLIED_AMOUNT", None),
        help="the largest credit amount per period that ApplySubscription(s) may schedule (default: no ceiling); "
        "more is INVALID_ARGUMENT AMOUNT_ABOVE_CEILING. Limits what a leaked sync key can mint",
    )
    parser.add_argument(
        "--events-heartbeat-interval",
        type=float,
        default=float(env("EVENTS_HEARTBEAT_INTERVAL", "15")),
        help="seconds without a message after which WatchEvents sends a heartbeat (default 15)",
    )
    parser.add_argument(
        "--events-poll-interval-ms",
        type=float,
        default=float(env("EVENTS_POLL_INTERVAL_MS", "50")),
        help="how often a WatchEvents stream reads the log when no commit of this process woke it, for the "
        "events other replicas (and other server processes) write (default 50)",
    )
    parser.add_argument(
        "--events",
        type=on_off,
        default=env("EVENTS", "on"),
        metavar="on|off",
        help="write credit events (default on); off writes none (ListEvents, WatchEvents and webhooks then "
        "see nothing new): only for measuring what the event log costs (make bench)",
    )
    parser.add_argument(
        "--enable-test-clocks",
        action="store_true",
        default=env_flag(env("ENABLE_TEST_CLOCKS", "false")),
        help="enable the test clock methods (default false)",
    )


def add_webhook_arguments(parser: argparse.ArgumentParser, env: Env) -> None:
    group = parser.add_argument_group("webhooks (docs/operations.md#webhooks)")
    group.add_argument(
        "--webhook-workers",
        type=int,
        default=int(env("WEBHOOK_WORKERS", "8")),
        help="endpoints this process delivers to at once, each on its own thread (default 8; 0: none here)",
    )
    group.add_argument(
        "--webhook-timeout-ms",
        type=float,
        default=float(env("WEBHOOK_TIMEOUT_MS", "10000")),
        help="an attempt's read/write timeout (default 10000)",
    )
    group.add_argument(
        "--webhook-connect-timeout-ms",
        type=float,
        default=float(env("WEBHOOK_CONNECT_TIMEOUT_MS", "5000")),
        help="an attempt's connect timeout (default 5000)",
    )
    group.add_argument(
        "--webhook-batch-size",
        type=int,
        default=int(env("WEBHOOK_BATCH_SIZE", "50")),
        help="deliveries of one endpoint claimed at once (default 50)",
    )
    group.add_argument(
        "--webhook-lease-s",
        type=float,
        default=float(env("WEBHOOK_LEASE_S", "60")),
        help="lease of claimed deliveries, renewed while sending (default 60; >= 3x the timeouts)",
    )
    group.add_argument(
        "--webhook-poll-interval-ms",
        type=float,
        default=float(env("WEBHOOK_POLL_INTERVAL_MS", "200")),
        help="how often the dispatcher looks for new events and due retries (default 200)",
    )
    group.add_argument(
        "--webhook-disable-after-hours",
        type=float,
        default=float(env("WEBHOOK_DISABLE_AFTER_HOURS", "120")),
        help="disable an endpoint whose attempts have all failed for this long (default 120: 5 days)",
    )
    group.add_argument(
        "--webhook-allow-http",
        action="store_true",
        default=env_flag(env("WEBHOOK_ALLOW_HTTP", "false")),
        help="accept http:// endpoint URLs (default: https only)",
    )
    group.add_argument(
        "--webhook-allow-private",
        action="store_true",
        default=env_flag(env("WEBHOOK_ALLOW_PRIVATE", "false")),
        help="allow endpoints on loopback, private and link-local addresses (default: refused)",
    )
    group.add_argument(
        "--webhook-allowed-hosts",
        default=env("WEBHOOK_ALLOWED_HOSTS", ""),
        help="comma-separated host patterns endpoints must match, e.g. '*.example.com,hooks.partner.io' "
        "(default: any public host)",
    )


def webhook_settings(args: argparse.Namespace) -> WebhookSettings:
    hosts = tuple(h.strip() for h in args.webhook_allowed_hosts.split(",") if h.strip())
    return WebhookSettings(
        workers=args.webhook_workers,
        timeout_s=args.webhook_timeout_ms / 1000,
        connect_timeout_s=args.webhook_connect_timeout_ms / 1000,
        batch_size=args.webhook_batch_size,
        lease_s=args.webhook_lease_s,
        poll_interval_s=args.webhook_poll_interval_ms / 1000,
        disable_after=timedelta(hours=args.webhook_disable_after_hours),
        policy=UrlPolicy(
            allow_http=args.webhook_allow_http, allowed_hosts=hosts, allow_private=args.webhook_allow_private
        ),
    )


def grant_settings(common: ServiceSettings, args: argparse.Namespace) -> GrantSettings:
    """The grant service's settings of the common ones and its parsed flags (ValueError: refused)."""
    return common.extended(
        GrantSettings,
        catch_up_interval_s=args.catch_up_interval,
        catch_up_batch_size=args.catch_up_batch_size,
        batch_linger_s=args.batch_linger_ms / 1000,
        max_revision_step=args.max_revision_step,
        max_revision_step_window_s=args.max_revision_step_window_s,
        max_applied_amount=args.max_applied_amount,
        test_clocks_enabled=args.enable_test_clocks,
        events_heartbeat_s=args.events_heartbeat_interval,
        events_poll_s=args.events_poll_interval_ms / 1000,
        events_enabled=args.events,
        webhooks=webhook_settings(args),
    )


def decimal_amount(text: str | None) -> Decimal | None:
    if text is None or text == "":
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a decimal amount: {text!r}") from None
    if not value.is_finite():
        raise argparse.ArgumentTypeError(f"not a decimal amount: {text!r}")
    return value


def add_all_arguments(parser: argparse.ArgumentParser, env: Env) -> None:
    add_arguments(parser, env)
    add_webhook_arguments(parser, env)


FLAGS = ServiceFlags(add=add_all_arguments, settings=grant_settings)
