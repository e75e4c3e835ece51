"""Features and credit currencies over a real server (SQLite and PostgreSQL)."""

from __future__ import annotations

import grpc
from google.protobuf import field_mask_pb2
from sqlalchemy import select

from catalog_service.adapters.orm import CreditRateRow
from catalog_service.adapters.unit_of_work import SqlCatalogTransactions
from catalog_service.v1 import catalog_service_pb2 as pb
from credit_common.db.engine import DatabaseSettings, create_db_engine
from grant_service.v1 import grant_service_pb2 as grant_pb2
from tests.e2e.catalog.conftest import boolean_feature, currency, metered_feature, outbox_rows, rpc_error, wait_for

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def test_create_get_feature(catalog):
    key = catalog.unique("gpt-calls")
    created = catalog.stub.CreateFeature(
        pb.CreateFeatureRequest(
            feature=pb.Feature(key=key, display_name="GPT calls", type=pb.FEATURE_TYPE_METERED, unit_name="call")
        )
    ).feature
    assert (created.key, created.type, created.unit_name) == (key, pb.FEATURE_TYPE_METERED, "call")
    assert created.HasField("create_time")
    assert catalog.stub.GetFeature(pb.GetFeatureRequest(key=key)).feature == created


def test_feature_errors(catalog):
    info, fields = rpc_error(
        lambda: catalog.stub.CreateFeature(
            pb.CreateFeatureRequest(feature=pb.Feature(key="Bad Key", type=pb.FEATURE_TYPE_UNSPECIFIED))
        ),
        INVALID,
    )
    assert set(fields) == {"feature.key", "feature.type"}
    info, fields = rpc_error(
        lambda: catalog.stub.CreateFeature(
            pb.CreateFeatureRequest(feature=pb.Feature(key="sso", type=pb.FEATURE_TYPE_BOOLEAN, unit_name="x"))
        ),
        INVALID,
    )
    assert set(fields) == {"feature.unit_name"}
    key = metered_feature(catalog)
    info, _ = rpc_error(
        lambda: catalog.stub.CreateFeature(
            pb.CreateFeatureRequest(feature=pb.Feature(key=key, type=pb.FEATURE_TYPE_METERED))
        ),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert info.reason == "KEY_ALREADY_EXISTS"
    info, _ = rpc_error(lambda: catalog.stub.GetFeature(pb.GetFeatureRequest(key="nope")), grpc.StatusCode.NOT_FOUND)
    assert info.reason == "FEATURE_NOT_FOUND"


def test_create_feature_request_id_is_idempotent(catalog):
    key = catalog.unique("f")
    request = pb.CreateFeatureRequest(
        feature=pb.Feature(key=key, type=pb.FEATURE_TYPE_METERED, unit_name="call"), request_id=f"req-{key}"
    )
    first = catalog.stub.CreateFeature(request).feature
    assert catalog.stub.CreateFeature(request).feature == first
    other = pb.CreateFeatureRequest()
    other.CopyFrom(request)
    other.feature.unit_name = "token"
    info, _ = rpc_error(lambda: catalog.stub.CreateFeature(other), grpc.StatusCode.ALREADY_EXISTS)
    assert info.reason == "REQUEST_ID_REUSED"


def test_list_features_paginates_by_key(catalog):
    keys = [metered_feature(catalog) for _ in range(5)]
    seen, token = [], ""
    while True:
        page = catalog.stub.ListFeatures(pb.ListFeaturesRequest(page_size=2, page_token=token))
        assert len(page.features) <= 2
        seen += [f.key for f in page.features]
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(seen)
    assert set(keys) <= set(seen)
    info, _ = rpc_error(lambda: catalog.stub.ListFeatures(pb.ListFeaturesRequest(page_token="garbage!")), INVALID)
    assert info.reason == "INVALID_PAGE_TOKEN"


def _outbox(catalog, kind: str, key: str):
    return outbox_rows(catalog, kind, key)


def test_currency_create_update_revisions_rate_history_and_outbox(catalog):
    calls, tokens = metered_feature(catalog), metered_feature(catalog)
    key = currency(catalog, calls, "2.5")
    got = catalog.stub.GetCreditCurrency(pb.GetCreditCurrencyRequest(key=key)).credit_currency
    assert got.revision == 1
    assert [(r.feature_key, r.credits_per_unit) for r in got.rates] == [(calls, "2.5")]

    updated = catalog.stub.UpdateCreditCurrency(
        pb.UpdateCreditCurrencyRequest(
            credit_currency=pb.CreditCurrency(
                key=key,
                display_name="ignored, not in the mask",
                rates=[
                    pb.CreditRate(feature_key=calls, credits_per_unit="3"),
                    pb.CreditRate(feature_key=tokens, credits_per_unit="0.000001"),
                ],
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["rates"]),
        )
    ).credit_currency
    assert updated.revision == 2
    assert updated.display_name == "Credits"
    assert {(r.feature_key, r.credits_per_unit) for r in updated.rates} == {(calls, "3"), (tokens, "0.000001")}
    renamed = catalog.stub.UpdateCreditCurrency(
        pb.UpdateCreditCurrencyRequest(
            credit_currency=pb.CreditCurrency(key=key, display_name="AI credits"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        )
    ).credit_currency
    assert (renamed.revision, renamed.display_name, len(renamed.rates)) == (3, "AI credits", 2)

    engine = create_db_engine(DatabaseSettings(url=catalog.engine_url))
    try:
        history, rows = SqlCatalogTransactions(engine).read(
            lambda uow: (
                uow.currencies.rate_history(key),
                uow.session.scalars(select(CreditRateRow).where(CreditRateRow.currency_key == key)).all(),
            )
        )
    finally:
        engine.dispose()
    assert [h.revision for h in history] == [1, 2]  # the rename kept the rate set of revision 2
    assert history[0].effective_time <= history[1].effective_time
    assert len(rows) == 3

    deliveries = _outbox(catalog, "credit_currency", key)
    assert [(d.kind, d.revision) for d in deliveries] == [("credit_currency", n) for n in (1, 2, 3)]
    first = grant_pb2.ApplyCreditCurrencyRequest.FromString(deliveries[0].payload)
    assert not first.HasField("effective_time")  # the first rates price any usage, also on a past test clock
    payload = grant_pb2.ApplyCreditCurrencyRequest.FromString(deliveries[1].payload)
    assert payload.currency_key == key and payload.revision == 2
    assert payload.effective_time == updated.update_time
    assert {(r.feature_key, r.credits_per_unit) for r in payload.rates} == {(calls, "3"), (tokens, "0.000001")}
    # the dispatcher delivers every revision, in order, and the grant service keeps the latest
    wait_for(lambda: getattr(catalog.grant.applied.get(key), "revision", 0) == 3, "revision 3 delivered")
    assert catalog.grant.applied[key].rates == payload.rates


def test_currency_rate_errors(catalog):
    calls, sso = metered_feature(catalog), boolean_feature(catalog)
    info, fields = rpc_error(
        lambda: catalog.stub.CreateCreditCurrency(
            pb.CreateCreditCurrencyRequest(
                credit_currency=pb.CreditCurrency(
                    key=catalog.unique("c"),
                    rates=[
                        pb.CreditRate(feature_key=calls, credits_per_unit="0"),
                        pb.CreditRate(feature_key=sso, credits_per_unit="1"),
                        pb.CreditRate(feature_key="ghost", credits_per_unit="1"),
                        pb.CreditRate(feature_key=calls, credits_per_unit="1e3"),
                        pb.CreditRate(feature_key=calls, credits_per_unit="-1"),
                    ],
                )
            )
        ),
        INVALID,
    )
    assert fields.keys() == {
        "credit_currency.rates[0].credits_per_unit",
        "credit_currency.rates[1].feature_key",
        "credit_currency.rates[2].feature_key",
        "credit_currency.rates[3].feature_key",
        "credit_currency.rates[3].credits_per_unit",
        "credit_currency.rates[4].feature_key",
        "credit_currency.rates[4].credits_per_unit",
    }
    assert "METERED" in fields["credit_currency.rates[1].feature_key"]
    assert info.reason == "INVALID_ARGUMENT"


def test_currency_update_errors(catalog):
    key = currency(catalog, metered_feature(catalog))
    _, fields = rpc_error(
        lambda: catalog.stub.UpdateCreditCurrency(
            pb.UpdateCreditCurrencyRequest(credit_currency=pb.CreditCurrency(key=key))
        ),
        INVALID,
    )
    assert set(fields) == {"update_mask"}
    _, fields = rpc_error(
        lambda: catalog.stub.UpdateCreditCurrency(
            pb.UpdateCreditCurrencyRequest(
                credit_currency=pb.CreditCurrency(key=key), update_mask=field_mask_pb2.FieldMask(paths=["key"])
            )
        ),
        INVALID,
    )
    assert set(fields) == {"update_mask"}
    info, _ = rpc_error(
        lambda: catalog.stub.UpdateCreditCurrency(
            pb.UpdateCreditCurrencyRequest(
                credit_currency=pb.CreditCurrency(key="nope"), update_mask=field_mask_pb2.FieldMask(paths=["unit_name"])
            )
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert info.reason == "CREDIT_CURRENCY_NOT_FOUND"


def test_list_currencies(catalog):
    calls = metered_feature(catalog)
    keys = {currency(catalog, calls) for _ in range(3)}
    page = catalog.stub.ListCreditCurrencies(pb.ListCreditCurrenciesRequest(page_size=1000))
    assert keys <= {c.key for c in page.credit_currencies}
    assert page.next_page_token == ""


def test_request_id_replays_the_first_response_even_after_later_changes(catalog):
    calls = metered_feature(catalog)
    key = catalog.unique("c")
    create = pb.CreateCreditCurrencyRequest(
        credit_currency=pb.CreditCurrency(
            key=key, display_name="v1", rates=[pb.CreditRate(feature_key=calls, credits_per_unit="1")]
        ),
        request_id=f"create-{key}",
    )
    first = catalog.stub.CreateCreditCurrency(create).credit_currency
    update = pb.UpdateCreditCurrencyRequest(
        credit_currency=pb.CreditCurrency(key=key, display_name="v2"),
        update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        request_id=f"update-{key}",
    )
    updated = catalog.stub.UpdateCreditCurrency(update).credit_currency
    assert updated.revision == 2
    assert catalog.stub.CreateCreditCurrency(create).credit_currency == first
    assert catalog.stub.UpdateCreditCurrency(update).credit_currency == updated
    assert catalog.stub.GetCreditCurrency(pb.GetCreditCurrencyRequest(key=key)).credit_currency.revision == 2
    assert [d.revision for d in _outbox(catalog, "credit_currency", key)] == [1, 2]
