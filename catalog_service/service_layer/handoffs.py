"""The outbox as operators see it: list the deliveries to the grant service, requeue parked ones.
(Sending them is the dispatcher's: dispatcher.py.)"""

from __future__ import annotations

from catalog_service.domain.outbox import OutboxEntry
from catalog_service.service_layer.context import SERVICE, CatalogContext
from catalog_service.service_layer.idempotency import Replayed, RequestKey, run_once
from catalog_service.service_layer.unit_of_work import CatalogUnitOfWork
from credit_common.errors import Violations
from credit_common.pagination import page_request


def list_handoffs(
    ctx: CatalogContext, status: str | None, kind: str | None, key: str, page_size: int, page_token: str
) -> tuple[list[OutboxEntry], str]:
    """The outbox's deliveries, oldest first; `status`/`kind` None and `key` '' for all."""
    filters = [status or "", kind or "", key]
    page = page_request(page_size, page_token, filters, method=SERVICE + "ListHandoffs", key=(int,))
    items = ctx.transactions.read(
        lambda uow: uow.outbox.list(
            status=status,
            kind=kind,
            aggregate_key=key or None,
            after_id=page.after[0] if page.after else None,
            limit=page.size + 1,
        )
    )
    return page.cut(items, lambda e: (e.id,))


def requeue_handoffs(
    ctx: CatalogContext, kind: str | None, key: str, all_parked: bool, request: RequestKey | None
) -> int | Replayed:
    """Put parked deliveries back in the queue, due now: those of one aggregate (`kind` and
    `key`), or every parked one (`all_parked`). Returns how many were parked."""
    violations = Violations()
    if all_parked:
        if kind is not None:
            violations.add("kind", "must be unset with all_parked")
        if key:
            violations.add("key", "must be empty with all_parked")
    else:
        if kind is None:
            violations.add("kind", "is required (SUBSCRIPTION or CREDIT_CURRENCY) unless all_parked is set")
        if not key:
            violations.add("key", "is required (a subscription_id or currency key) unless all_parked is set")
    violations.raise_if_any()

    def effect(uow: CatalogUnitOfWork) -> int:
        if all_parked:
            return uow.outbox.requeue_failed(None, None, ctx.clock.now())
        return uow.outbox.requeue_failed(kind, key, ctx.clock.now())

    return ctx.queued(run_once(ctx.transactions, ctx.clock, request, effect))
