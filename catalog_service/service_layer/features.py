"""Features: create, get, list."""

from __future__ import annotations

from catalog_service.domain.catalog import check_feature
from catalog_service.domain.model import Feature, FeatureType
from catalog_service.domain.plans import check_key, check_text
from catalog_service.service_layer.context import SERVICE, CatalogContext
from catalog_service.service_layer.idempotency import Replayed, RequestKey, run_once
from catalog_service.service_layer.unit_of_work import CatalogUnitOfWork
from credit_common.errors import AlreadyExists, Violations, not_found
from credit_common.pagination import page_request


def create_feature(
    ctx: CatalogContext,
    key: str,
    display_name: str,
    type_: FeatureType | None,
    unit_name: str,
    request: RequestKey | None,
) -> Feature | Replayed:
    violations = Violations()
    check_key(key, "feature.key", violations)
    check_text(display_name, "feature.display_name", violations, 200)
    check_feature(type_, unit_name, violations)
    violations.raise_if_any()
    assert type_ is not None

    def effect(uow: CatalogUnitOfWork) -> Feature:
        if uow.features.get(key) is not None:
            raise AlreadyExists(f"feature {key!r} already exists", reason="KEY_ALREADY_EXISTS", metadata={"key": key})
        feature = Feature(key, display_name, type_, unit_name, ctx.clock.now())
        uow.features.add(feature)
        return feature

    return run_once(ctx.transactions, ctx.clock, request, effect)


def get_feature(ctx: CatalogContext, key: str) -> Feature:
    feature = ctx.transactions.read(lambda uow: uow.features.get(key))
    if feature is None:
        raise not_found("feature", key, "FEATURE_NOT_FOUND")
    return feature


def list_features(ctx: CatalogContext, page_size: int, page_token: str) -> tuple[list[Feature], str]:
    page = page_request(page_size, page_token, method=SERVICE + "ListFeatures", key=(str,))
    items = ctx.transactions.read(lambda uow: uow.features.list(page.after, page.size + 1))
    return page.cut(items, lambda f: (f.key,))
