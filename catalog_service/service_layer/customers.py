"""Customers: create (on real time or a test clock of the grant service), get, list."""

from __future__ import annotations

from catalog_service.domain.model import Customer
from catalog_service.domain.plans import check_key, check_text
from catalog_service.service_layer.context import SERVICE, CatalogContext
from catalog_service.service_layer.idempotency import Replayed, RequestKey, run_once
from catalog_service.service_layer.unit_of_work import CatalogUnitOfWork
from credit_common.errors import AlreadyExists, Violations, not_found
from credit_common.pagination import page_request


def create_customer(
    ctx: CatalogContext, key: str, display_name: str, test_clock_id: str, request: RequestKey | None
) -> Customer | Replayed:
    violations = Violations()
    check_key(key, "customer.key", violations)
    check_text(display_name, "customer.display_name", violations, 200)
    check_text(test_clock_id, "customer.test_clock_id", violations, 128)
    violations.raise_if_any()
    if test_clock_id:
        ctx.test_clocks.now_of(test_clock_id, "customer.test_clock_id")  # NotFound for an unknown clock

    def effect(uow: CatalogUnitOfWork) -> Customer:
        if uow.customers.get(key) is not None:
            raise AlreadyExists(f"customer {key!r} already exists", reason="KEY_ALREADY_EXISTS", metadata={"key": key})
        customer = Customer(key, display_name, test_clock_id or None, ctx.clock.now())
        uow.customers.add(customer)
        return customer

    return run_once(ctx.transactions, ctx.clock, request, effect)


def get_customer(ctx: CatalogContext, key: str) -> Customer:
    customer = ctx.transactions.read(lambda uow: uow.customers.get(key))
    if customer is None:
        raise not_found("customer", key, "CUSTOMER_NOT_FOUND")
    return customer


def list_customers(ctx: CatalogContext, page_size: int, page_token: str) -> tuple[list[Customer], str]:
    page = page_request(page_size, page_token, method=SERVICE + "ListCustomers", key=(str,))
    items = ctx.transactions.read(lambda uow: uow.customers.list(page.after, page.size + 1))
    return page.cut(items, lambda c: (c.key,))
