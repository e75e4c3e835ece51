"""Credit currencies: create and update (each revision queued for the grant service in the
transaction of the change), get, list."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from catalog_service.domain.catalog import CURRENCY_UPDATABLE_FIELDS, parse_rates
from catalog_service.domain.model import CreditCurrency
from catalog_service.domain.plans import check_key, check_text
from catalog_service.service_layer.context import SERVICE, CatalogContext, check_mask
from catalog_service.service_layer.idempotency import Replayed, RequestKey, run_once
from catalog_service.service_layer.unit_of_work import CatalogUnitOfWork
from credit_common.errors import AlreadyExists, NotFound, Violations, not_found
from credit_common.pagination import page_request


def currency_not_found(key: str) -> NotFound:
    return not_found("credit currency", key, "CREDIT_CURRENCY_NOT_FOUND")


def create_credit_currency(
    ctx: CatalogContext,
    key: str,
    display_name: str,
    unit_name: str,
    rates: Sequence[tuple[str, str]],
    request: RequestKey | None,
) -> CreditCurrency | Replayed:
    violations = Violations()
    check_key(key, "credit_currency.key", violations)
    check_text(display_name, "credit_currency.display_name", violations, 200)
    check_text(unit_name, "credit_currency.unit_name", violations, 200)

    def effect(uow: CatalogUnitOfWork) -> CreditCurrency:
        parsed = parse_rates(rates, uow.features.types_of({k for k, _ in rates}), violations)
        violations.raise_if_any()
        if uow.currencies.get(key) is not None:
            raise AlreadyExists(
                f"credit currency {key!r} already exists", reason="KEY_ALREADY_EXISTS", metadata={"key": key}
            )
        now = ctx.clock.now()
        currency = CreditCurrency(key, display_name, unit_name, parsed, 1, now, now)
        uow.currencies.save(currency, rates_changed=True)
        uow.outbox.add_credit_currency(currency, now)
        return currency

    return ctx.queued(run_once(ctx.transactions, ctx.clock, request, effect))


def update_credit_currency(
    ctx: CatalogContext,
    key: str,
    display_name: str,
    unit_name: str,
    rates: Sequence[tuple[str, str]],
    mask: Sequence[str],
    request: RequestKey | None,
) -> CreditCurrency | Replayed:
    violations = Violations()
    check_mask(mask, CURRENCY_UPDATABLE_FIELDS, violations)
    if "display_name" in mask:
        check_text(display_name, "credit_currency.display_name", violations, 200)
    if "unit_name" in mask:
        check_text(unit_name, "credit_currency.unit_name", violations, 200)

    def effect(uow: CatalogUnitOfWork) -> CreditCurrency:
        parsed = None
        if "rates" in mask:
            parsed = parse_rates(rates, uow.features.types_of({k for k, _ in rates}), violations)
        violations.raise_if_any()
        current = uow.currencies.get(key, for_update=True)  # concurrent updates take turns
        if current is None:
            raise currency_not_found(key)
        changed = replace(
            current,
            display_name=display_name if "display_name" in mask else current.display_name,
            unit_name=unit_name if "unit_name" in mask else current.unit_name,
            rates=parsed if parsed is not None else current.rates,
        )
        if changed == current:
            return current
        now = ctx.clock.now()
        changed = replace(changed, revision=current.revision + 1, update_time=now)
        uow.currencies.save(changed, rates_changed=changed.rates != current.rates)
        uow.outbox.add_credit_currency(changed, now)
        return changed

    return ctx.queued(run_once(ctx.transactions, ctx.clock, request, effect))


def get_credit_currency(ctx: CatalogContext, key: str) -> CreditCurrency:
    currency = ctx.transactions.read(lambda uow: uow.currencies.get(key))
    if currency is None:
        raise currency_not_found(key)
    return currency


def list_credit_currencies(ctx: CatalogContext, page_size: int, page_token: str) -> tuple[list[CreditCurrency], str]:
    page = page_request(page_size, page_token, method=SERVICE + "ListCreditCurrencies", key=(str,))
    items = ctx.transactions.read(lambda uow: uow.currencies.list(page.after, page.size + 1))
    return page.cut(items, lambda c: (c.key,))
