"""Plans: drafts, validation, publishing immutable versions, archiving."""

from __future__ import annotations

import grpc
from google.protobuf import field_mask_pb2

from catalog_service.v1 import catalog_service_pb2 as pb
from tests.e2e.catalog.conftest import boolean_feature, currency, metered_feature, rpc_error

INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


def _catalog_items(catalog):
    calls = metered_feature(catalog)
    return calls, boolean_feature(catalog), currency(catalog, calls)


def _plan(key, credits, seats_feature, sso, *, custom=True):
    return pb.Plan(
        key=key,
        display_name="Enterprise",
        custom=custom,
        credit_entitlements=[
            pb.CreditEntitlement(
                key="ai-monthly",
                currency_key=credits,
                cadence=pb.CADENCE_MONTHLY,
                variable_amount=pb.VariableValue(min="1000", max="1000000"),
            ),
            pb.CreditEntitlement(key="ai-yearly", currency_key=credits, cadence=pb.CADENCE_YEARLY, fixed_amount="500"),
        ],
        feature_entitlements=[
            pb.FeatureEntitlement(key="sso", feature_key=sso, access=True),
            pb.FeatureEntitlement(
                key="calls-limit", feature_key=seats_feature, variable_limit=pb.VariableValue(default_value="25")
            ),
        ],
    )


def test_create_update_publish_get_versions(catalog):
    calls, sso, credits = _catalog_items(catalog)
    key = catalog.unique("enterprise")
    draft = catalog.stub.CreatePlan(pb.CreatePlanRequest(plan=_plan(key, credits, calls, sso))).plan
    assert (draft.status, draft.version, draft.latest_version) == (pb.PLAN_STATUS_DRAFT, 0, 0)
    assert draft.credit_entitlements[0].variable_amount.max == "1000000"
    assert not draft.HasField("publish_time")

    v1 = catalog.stub.PublishPlan(pb.PublishPlanRequest(key=key)).plan
    assert (v1.status, v1.version, v1.latest_version) == (pb.PLAN_STATUS_PUBLISHED, 1, 1)
    assert v1.HasField("publish_time")

    info, _ = rpc_error(lambda: catalog.stub.PublishPlan(pb.PublishPlanRequest(key=key)), PRECONDITION)
    assert info.reason == "PLAN_DRAFT_UNCHANGED"

    updated = catalog.stub.UpdatePlan(
        pb.UpdatePlanRequest(
            plan=pb.Plan(key=key, display_name="Enterprise 2026", description="ignored"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        )
    ).plan
    assert (updated.display_name, updated.description, updated.version) == ("Enterprise 2026", "", 0)
    assert len(updated.credit_entitlements) == 2
    v2 = catalog.stub.PublishPlan(pb.PublishPlanRequest(key=key)).plan
    assert (v2.version, v2.display_name) == (2, "Enterprise 2026")

    # version 1 is immutable; 0 means the latest; the draft on request
    assert catalog.stub.GetPlan(pb.GetPlanRequest(key=key, version=1)).plan.display_name == "Enterprise"
    assert catalog.stub.GetPlan(pb.GetPlanRequest(key=key)).plan.version == 2
    got_draft = catalog.stub.GetPlan(pb.GetPlanRequest(key=key, draft=True)).plan
    assert (got_draft.version, got_draft.latest_version) == (0, 2)
    info, _ = rpc_error(lambda: catalog.stub.GetPlan(pb.GetPlanRequest(key=key, version=3)), grpc.StatusCode.NOT_FOUND)
    assert info.reason == "PLAN_VERSION_NOT_FOUND"
    _, fields = rpc_error(lambda: catalog.stub.GetPlan(pb.GetPlanRequest(key=key, version=1, draft=True)), INVALID)
    assert set(fields) == {"version"}
    info, _ = rpc_error(lambda: catalog.stub.GetPlan(pb.GetPlanRequest(key="nope")), grpc.StatusCode.NOT_FOUND)
    assert info.reason == "PLAN_NOT_FOUND"

    # custom is immutable after the first publication
    info, fields = rpc_error(
        lambda: catalog.stub.UpdatePlan(
            pb.UpdatePlanRequest(
                plan=pb.Plan(key=key, custom=False), update_mask=field_mask_pb2.FieldMask(paths=["custom"])
            )
        ),
        INVALID,
    )
    assert "plan.custom" in fields


def test_publish_rejects_a_draft_without_entitlements(catalog):
    key = catalog.unique("empty")
    catalog.stub.CreatePlan(pb.CreatePlanRequest(plan=pb.Plan(key=key, display_name="Empty")))
    info, _ = rpc_error(lambda: catalog.stub.PublishPlan(pb.PublishPlanRequest(key=key)), PRECONDITION)
    assert info.reason == "PLAN_HAS_NO_ENTITLEMENTS"
    assert info.metadata["plan_key"] == key


def test_plan_validation_reports_one_violation_per_problem(catalog):
    calls, sso, credits = _catalog_items(catalog)
    plan = pb.Plan(
        key=catalog.unique("bad"),
        custom=False,
        credit_entitlements=[
            pb.CreditEntitlement(  # 0: variable on a non-custom plan, min > max, default outside
                key="a",
                currency_key=credits,
                cadence=pb.CADENCE_MONTHLY,
                variable_amount=pb.VariableValue(min="10", max="5", default_value="20"),
            ),
            pb.CreditEntitlement(
                key="b", currency_key=credits, cadence=pb.CADENCE_MONTHLY, fixed_amount="1"
            ),  # 1: same schedule
            pb.CreditEntitlement(key="c", currency_key="ghost", cadence=pb.CADENCE_YEARLY, fixed_amount="1.2.3"),  # 2
            pb.CreditEntitlement(
                key="d", currency_key=credits, cadence=pb.CADENCE_UNSPECIFIED
            ),  # 3: no cadence, no amount
            pb.CreditEntitlement(key="e", currency_key=credits, cadence=pb.CADENCE_YEARLY, fixed_amount="0"),  # 4
        ],
        feature_entitlements=[
            pb.FeatureEntitlement(key="a", feature_key=sso, access=True),  # 0: duplicate key
            pb.FeatureEntitlement(key="f", feature_key=sso, fixed_limit="3"),  # 1: limit on BOOLEAN
            pb.FeatureEntitlement(key="g", feature_key=calls, access=True),  # 2: access on METERED
            pb.FeatureEntitlement(key="h", feature_key="nope", fixed_limit="1"),  # 3: unknown feature
            pb.FeatureEntitlement(key="Bad Key", feature_key=calls),  # 4: bad key, missing oneof
        ],
    )
    info, fields = rpc_error(lambda: catalog.stub.CreatePlan(pb.CreatePlanRequest(plan=plan)), INVALID)
    assert info.reason == "INVALID_ARGUMENT"
    assert set(fields) == {
        "plan.credit_entitlements[0].variable_amount",
        "plan.credit_entitlements[0].variable_amount.min",
        "plan.credit_entitlements[0].variable_amount.default_value",
        "plan.credit_entitlements[1]",
        "plan.credit_entitlements[2].currency_key",
        "plan.credit_entitlements[2].fixed_amount",
        "plan.credit_entitlements[3].cadence",
        "plan.credit_entitlements[3].amount",
        "plan.credit_entitlements[4].fixed_amount",
        "plan.feature_entitlements[0].key",
        "plan.feature_entitlements[1].fixed_limit",
        "plan.feature_entitlements[2].access",
        "plan.feature_entitlements[3].feature_key",
        "plan.feature_entitlements[4].key",
        "plan.feature_entitlements[4].value",
    }
    assert "custom" in fields["plan.credit_entitlements[0].variable_amount"]


def test_update_validation_and_mask(catalog):
    calls, sso, credits = _catalog_items(catalog)
    key = catalog.unique("p")
    catalog.stub.CreatePlan(pb.CreatePlanRequest(plan=_plan(key, credits, calls, sso)))
    _, fields = rpc_error(lambda: catalog.stub.UpdatePlan(pb.UpdatePlanRequest(plan=pb.Plan(key=key))), INVALID)
    assert set(fields) == {"update_mask"}
    # making the plan non-custom leaves its variable entitlements invalid
    _, fields = rpc_error(
        lambda: catalog.stub.UpdatePlan(
            pb.UpdatePlanRequest(
                plan=pb.Plan(key=key, custom=False), update_mask=field_mask_pb2.FieldMask(paths=["custom"])
            )
        ),
        INVALID,
    )
    assert set(fields) == {
        "plan.credit_entitlements[0].variable_amount",
        "plan.feature_entitlements[1].variable_limit",
    }
    info, _ = rpc_error(
        lambda: catalog.stub.UpdatePlan(
            pb.UpdatePlanRequest(plan=pb.Plan(key="nope"), update_mask=field_mask_pb2.FieldMask(paths=["custom"]))
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert info.reason == "PLAN_NOT_FOUND"


def test_archive_and_list_by_status(catalog):
    calls, sso, credits = _catalog_items(catalog)
    draft_key, published_key, archived_key = (catalog.unique(p) for p in ("d", "p", "a"))
    for key in (draft_key, published_key, archived_key):
        catalog.stub.CreatePlan(pb.CreatePlanRequest(plan=_plan(key, credits, calls, sso)))
    catalog.stub.PublishPlan(pb.PublishPlanRequest(key=published_key))
    catalog.stub.PublishPlan(pb.PublishPlanRequest(key=archived_key))
    archived = catalog.stub.ArchivePlan(pb.ArchivePlanRequest(key=archived_key)).plan
    assert (archived.status, archived.version) == (pb.PLAN_STATUS_ARCHIVED, 1)
    assert archived.HasField("archive_time")

    info, _ = rpc_error(lambda: catalog.stub.PublishPlan(pb.PublishPlanRequest(key=archived_key)), PRECONDITION)
    assert info.reason == "PLAN_ARCHIVED"
    info, _ = rpc_error(
        lambda: catalog.stub.UpdatePlan(
            pb.UpdatePlanRequest(
                plan=pb.Plan(key=archived_key), update_mask=field_mask_pb2.FieldMask(paths=["description"])
            )
        ),
        PRECONDITION,
    )
    assert info.reason == "PLAN_ARCHIVED"

    def keys(status):
        found, token = [], ""
        while True:
            page = catalog.stub.ListPlans(pb.ListPlansRequest(status=status, page_size=2, page_token=token))
            found += [(p.key, p.status, p.version) for p in page.plans]
            token = page.next_page_token
            if not token:
                return found

    drafts, published, archived_list = (
        keys(s) for s in (pb.PLAN_STATUS_DRAFT, pb.PLAN_STATUS_PUBLISHED, pb.PLAN_STATUS_ARCHIVED)
    )
    assert (draft_key, pb.PLAN_STATUS_DRAFT, 0) in drafts
    assert (published_key, pb.PLAN_STATUS_PUBLISHED, 1) in published
    assert (archived_key, pb.PLAN_STATUS_ARCHIVED, 1) in archived_list
    assert {draft_key, published_key, archived_key} <= {k for k, _, _ in keys(pb.PLAN_STATUS_UNSPECIFIED)}
    assert all(s == pb.PLAN_STATUS_DRAFT for _, s, _ in drafts)
    # a token is bound to its filter
    token = catalog.stub.ListPlans(pb.ListPlansRequest(page_size=1)).next_page_token
    info, _ = rpc_error(
        lambda: catalog.stub.ListPlans(pb.ListPlansRequest(status=pb.PLAN_STATUS_DRAFT, page_token=token)), INVALID
    )
    assert info.reason == "INVALID_PAGE_TOKEN"


def test_publish_request_id_returns_the_first_version(catalog):
    calls, sso, credits = _catalog_items(catalog)
    key = catalog.unique("idem")
    catalog.stub.CreatePlan(pb.CreatePlanRequest(plan=_plan(key, credits, calls, sso), request_id=f"c-{key}"))
    again = catalog.stub.CreatePlan(pb.CreatePlanRequest(plan=_plan(key, credits, calls, sso), request_id=f"c-{key}"))
    assert again.plan.key == key
    first = catalog.stub.PublishPlan(pb.PublishPlanRequest(key=key, request_id=f"p-{key}")).plan
    second = catalog.stub.PublishPlan(pb.PublishPlanRequest(key=key, request_id=f"p-{key}")).plan
    assert first == second and first.version == 1
