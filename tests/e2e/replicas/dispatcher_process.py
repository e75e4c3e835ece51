"""One catalog outbox dispatcher as its own process, for the replica tests:
`python -m tests.e2e.replicas.dispatcher_process DATABASE_URL GRANT_TARGET`.

It runs `catalog_service.service_layer.dispatcher.Dispatcher` over the catalog's outbox table
(`catalog_service.adapters.outbox_sql`), exactly as a catalog replica does, until SIGTERM; then it
stops the dispatcher and prints its totals as one JSON line on stdout. Logs: JSON lines on stderr."""

from __future__ import annotations

import json
import signal
import sys
import threading
from dataclasses import asdict
from datetime import timedelta

from catalog_service.adapters.grant_delivery import GrantDelivery
from catalog_service.adapters.orm import OutboxDeliveryRow
from catalog_service.adapters.outbox_sql import SqlOutboxRepository
from catalog_service.service_layer.dispatcher import Dispatcher
from credit_common.clock import SystemClock
from credit_common.db.engine import DatabaseSettings, create_db_engine, session_factories
from credit_common.logging import configure_logging

# A batch of 4 sent 4 at a time with a 1 s deadline: the lease must be at least 2 s.
BATCH_SIZE = 4
DEADLINE = timedelta(seconds=1)
LEASE = timedelta(seconds=2)


def main(database_url: str, grant_target: str) -> int:
    configure_logging("catalog_service", "INFO")
    engine = create_db_engine(DatabaseSettings(url=database_url, pool_size=2, max_overflow=2))
    delivery = GrantDelivery(grant_target, deadline=DEADLINE)
    dispatcher = Dispatcher(
        SqlOutboxRepository(session_factories(engine), OutboxDeliveryRow.__table__),
        delivery,
        clock=SystemClock(),
        batch_size=BATCH_SIZE,
        send_concurrency=4,
        lease=LEASE,
        poll_interval=timedelta(milliseconds=50),
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    dispatcher.start()
    stop.wait()
    dispatcher.stop()
    delivery.close()
    engine.dispose()
    print(json.dumps(asdict(dispatcher.totals)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
