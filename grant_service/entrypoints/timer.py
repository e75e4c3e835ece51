"""The catch-up timer: one APScheduler interval job per process (UTC, coalesced,
never overlapping, no persistent job store). It only triggers the idempotent
catch-up of real-time subscriptions; the database decides what is due."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler

from credit_common.db.engine import log_failure
from grant_service.domain.clocks import REAL_TIME
from grant_service.service_layer.context import GrantContext
from grant_service.service_layer.issuance import catch_up

log = logging.getLogger("credit_grants.grant.timer")


def start_catch_up_timer(ctx: GrantContext, interval_s: float) -> Callable[[], None]:
    """Start the timer; returns the function that stops it (waiting for a running catch-up)."""

    def run() -> None:
        try:
            catch_up(ctx.transactions, clock_key=REAL_TIME, now=ctx.clock.now(), batch_size=ctx.batch_size)
        except Exception:
            log_failure(log, "catch-up failed; the next run retries", {})

    scheduler = BackgroundScheduler(timezone="UTC")
    scheduler.add_job(
        run,
        "interval",
        seconds=interval_s,
        id="catch-up",
        coalesce=True,
        max_instances=1,
        misfire_grace_time=None,
        next_run_time=datetime.now(UTC),  # first run at once: a restarted process catches up immediately
    )
    scheduler.start()

    def stop() -> None:
        scheduler.shutdown(wait=True)

    return stop
