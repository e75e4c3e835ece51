"""Seeding a grant database directly, for tests that need thousands of due subscriptions at once
(the process and replica tests): one monthly "ai-credits" schedule per subscription, nothing issued."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Engine, insert

from grant_service.adapters.orm import CustomerRow, ScheduleRow, SubscriptionRow


def insert_due_subscriptions(engine: Engine, anchors: Sequence[datetime], now: datetime, amount: str = "1000") -> None:
    """Subscription i (`sub_{i}`, customer `c{i}`, schedule `sch_{i}`) is anchored at `anchors[i]`."""
    customers, subscriptions, schedules = [], [], []
    for i, anchor in enumerate(anchors):
        customers.append({"customer_key": f"c{i}", "clock_key": ""})
        subscriptions.append(
            {
                "subscription_id": f"sub_{i}",
                "customer_key": f"c{i}",
                "revision": 1,
                "start_time": anchor,
                "end_time": None,
                "clock_key": "",
                "update_time": now,
            }
        )
        schedules.append(
            {
                "schedule_id": f"sch_{i}",
                "subscription_id": f"sub_{i}",
                "customer_key": f"c{i}",
                "clock_key": "",
                "entitlement_key": "credits",
                "currency_key": "ai-credits",
                "cadence": "MONTHLY",
                "anchor_time": anchor,
                "end_time": None,
                "amounts": json.dumps([[amount, anchor.isoformat()]]),
                "position": 0,
                "removed": False,
                "next_period_index": 0,
                "next_period_start": anchor,
            }
        )
    with engine.begin() as connection:
        connection.execute(insert(CustomerRow), customers)
        connection.execute(insert(SubscriptionRow), subscriptions)
        connection.execute(insert(ScheduleRow), schedules)
