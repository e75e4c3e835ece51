"""Plans: create and edit the draft, publish it as an immutable version, archive; get (the latest
version, a given one or the draft), list."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from catalog_service.domain.model import Plan, PlanContent, PlanStatus, PlanVersion, PlanView
from catalog_service.domain.plans import (
    PLAN_UPDATABLE_FIELDS,
    PlanSpec,
    build_content,
    check_key,
    check_plan_rules,
    referenced_keys,
)
from catalog_service.service_layer.context import SERVICE, CatalogContext, check_mask
from catalog_service.service_layer.idempotency import Replayed, RequestKey, run_once
from catalog_service.service_layer.unit_of_work import CatalogUnitOfWork
from credit_common.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Violations,
    not_found,
)
from credit_common.pagination import page_request


def plan_not_found(key: str) -> NotFound:
    return not_found("plan", key, "PLAN_NOT_FOUND")


def check_not_archived(plan: Plan) -> None:
    if plan.archive_time is not None:
        raise FailedPrecondition(
            f"plan {plan.key!r} is archived", reason="PLAN_ARCHIVED", metadata={"plan_key": plan.key}
        )


def version_view(uow: CatalogUnitOfWork, plan: Plan, number: int) -> PlanView:
    """Published version `number` of `plan`; NotFound (PLAN_VERSION_NOT_FOUND) if there is none."""
    version = uow.plans.get_version(plan.key, number)
    if version is None:
        raise NotFound(
            f"plan {plan.key!r} has no published version {number}",
            reason="PLAN_VERSION_NOT_FOUND",
            metadata={"plan_key": plan.key, "version": str(number), "latest_version": str(plan.latest_version)},
        )
    return PlanView(plan, version.version, version.content, version.publish_time)


def _check_against_catalog(uow: CatalogUnitOfWork, content: PlanContent, violations: Violations) -> None:
    feature_keys, currency_keys = referenced_keys(content)
    check_plan_rules(
        content,
        feature_types=uow.features.types_of(feature_keys),
        currency_keys=uow.currencies.existing_keys(currency_keys),
        violations=violations,
    )


def _draft_view(plan: Plan) -> PlanView:
    return PlanView(plan, 0, plan.draft, None)


def _locked_plan(uow: CatalogUnitOfWork, key: str) -> Plan:
    plan = uow.plans.get(key, for_update=True)
    if plan is None:
        raise plan_not_found(key)
    return plan


def _latest_view(uow: CatalogUnitOfWork, plan: Plan) -> PlanView:
    if plan.latest_version == 0:
        return _draft_view(plan)
    version = uow.plans.get_version(plan.key, plan.latest_version)
    assert version is not None
    return PlanView(plan, version.version, version.content, version.publish_time)


def create_plan(ctx: CatalogContext, key: str, spec: PlanSpec, request: RequestKey | None) -> PlanView | Replayed:
    violations = Violations()
    check_key(key, "plan.key", violations)
    content = build_content(PlanContent(), spec, PLAN_UPDATABLE_FIELDS, violations)

    def effect(uow: CatalogUnitOfWork) -> PlanView:
        _check_against_catalog(uow, content, violations)
        violations.raise_if_any()
        if uow.plans.get(key) is not None:
            raise AlreadyExists(f"plan {key!r} already exists", reason="KEY_ALREADY_EXISTS", metadata={"key": key})
        now = ctx.clock.now()
        plan = Plan(key, content, 0, now, now, None)
        uow.plans.save(plan)
        return _draft_view(plan)

    return run_once(ctx.transactions, ctx.clock, request, effect)


def update_plan(
    ctx: CatalogContext, key: str, spec: PlanSpec, mask: Sequence[str], request: RequestKey | None
) -> PlanView | Replayed:
    violations = Violations()
    check_mask(mask, PLAN_UPDATABLE_FIELDS, violations)
    violations.raise_if_any()

    def effect(uow: CatalogUnitOfWork) -> PlanView:
        plan = _locked_plan(uow, key)
        check_not_archived(plan)
        content = build_content(plan.draft, spec, mask, violations)
        if plan.latest_version > 0 and content.custom != plan.draft.custom:
            violations.add("plan.custom", "cannot change after the plan's first publication", "IMMUTABLE")
        _check_against_catalog(uow, content, violations)
        violations.raise_if_any()
        plan = replace(plan, draft=content, update_time=ctx.clock.now())
        uow.plans.save(plan)
        return _draft_view(plan)

    return run_once(ctx.transactions, ctx.clock, request, effect)


def publish_plan(ctx: CatalogContext, key: str, request: RequestKey | None) -> PlanView | Replayed:
    def effect(uow: CatalogUnitOfWork) -> PlanView:
        plan = _locked_plan(uow, key)
        check_not_archived(plan)
        if not plan.draft.has_entitlements:
            raise FailedPrecondition(
                f"the draft of plan {key!r} has no entitlements: add at least one before publishing",
                reason="PLAN_HAS_NO_ENTITLEMENTS",
                metadata={"plan_key": key},
            )
        if plan.latest_version > 0:
            latest = uow.plans.get_version(key, plan.latest_version)
            if latest is not None and latest.content == plan.draft:
                raise FailedPrecondition(
                    f"the draft of plan {key!r} is unchanged since version {plan.latest_version}",
                    reason="PLAN_DRAFT_UNCHANGED",
                    metadata={"plan_key": key, "latest_version": str(plan.latest_version)},
                )
        violations = Violations()
        _check_against_catalog(uow, plan.draft, violations)
        violations.raise_if_any("the draft is not valid")
        now = ctx.clock.now()
        version = PlanVersion(key, plan.latest_version + 1, plan.draft, now)
        uow.plans.add_version(version)
        plan = replace(plan, latest_version=version.version)
        uow.plans.save(plan)
        return PlanView(plan, version.version, version.content, now)

    return run_once(ctx.transactions, ctx.clock, request, effect)


def archive_plan(ctx: CatalogContext, key: str, request: RequestKey | None) -> PlanView | Replayed:
    def effect(uow: CatalogUnitOfWork) -> PlanView:
        plan = _locked_plan(uow, key)
        if plan.archive_time is None:
            plan = replace(plan, archive_time=ctx.clock.now())
            uow.plans.save(plan)
        return _latest_view(uow, plan)

    return run_once(ctx.transactions, ctx.clock, request, effect)


def get_plan(ctx: CatalogContext, key: str, version: int, draft: bool) -> PlanView:
    if version < 0 or (draft and version != 0):
        raise InvalidArgument(
            "version must be 0 (latest) or a published version, and 0 with draft",
            violations=[FieldViolation("version", "must be >= 0, and 0 when draft is true")],
        )

    def read(uow: CatalogUnitOfWork) -> PlanView:
        plan = uow.plans.get(key)
        if plan is None:
            raise plan_not_found(key)
        if draft:
            return _draft_view(plan)
        if version == 0 and plan.latest_version == 0:
            raise NotFound(
                f"plan {key!r} has no published version yet (ask for its draft)",
                reason="PLAN_VERSION_NOT_FOUND",
                metadata={"plan_key": key},
            )
        return version_view(uow, plan, version or plan.latest_version)

    return ctx.transactions.read(read)


def list_plans(
    ctx: CatalogContext, status: PlanStatus | None, page_size: int, page_token: str
) -> tuple[list[PlanView], str]:
    filters = [status.value if status else ""]
    page = page_request(page_size, page_token, filters, method=SERVICE + "ListPlans", key=(str,))

    def read(uow: CatalogUnitOfWork) -> tuple[list[PlanView], str]:
        plans, token = page.cut(uow.plans.list(status, page.after, page.size + 1), lambda p: (p.key,))
        return [_latest_view(uow, p) for p in plans], token

    return ctx.transactions.read(read)
