"""POST /v1/results against a real database: merge rules, normalisation, validation."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from app.resources import Resources
from app.tokens.service import Scope
from tests.clock import FakeClock
from tests.conftest import MakeToken, bearer

TS = "2026-11-24T13:45:00Z"

STS_RESULT: dict[str, Any] = {
    "policy": {
        "policy-type": "sts",
        "policy-domain": "example.com",
        "policy-string": [
            "version: STSv1",
            "mode: enforce",
            "mx: mx.example.com",
            "max_age: 86400",
        ],
        "mx-host": ["mx.example.com"],
    },
    "result-type": "certificate-expired",
    "sending-mta-ip": "192.0.2.1",
    "receiving-mx-hostname": "mx.example.com",
    "receiving-ip": "198.51.100.7",
    "timestamp": TS,
    "count": 1,
}


def result(**changes: Any) -> dict[str, Any]:
    item = copy.deepcopy(STS_RESULT)
    for key, value in changes.items():
        wire = key.replace("_", "-")
        if value is None:
            item.pop(wire, None)
        else:
            item[wire] = value
    return item


@pytest.fixture
async def ingest_headers(make_token: MakeToken) -> dict[str, str]:
    return bearer(await make_token(Scope.INGEST))


@pytest.fixture
async def read_headers(make_token: MakeToken) -> dict[str, str]:
    return bearer(await make_token(Scope.READ))


async def post(client: httpx.AsyncClient, headers: dict[str, str], *items: Any) -> httpx.Response:
    return await client.post("/v1/results", json={"results": list(items)}, headers=headers)


async def day_results(
    client: httpx.AsyncClient, headers: dict[str, str], day: str = "2026-11-24", **params: str
) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/days/{day}/results", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()["policy-domains"]  # type: ignore[no-any-return]


async def snapshot(resources: Resources) -> list[Any]:
    """Every counter row: what 'nothing stored' is checked against."""
    rows = []
    async with resources.pool.connection() as conn:
        for table in ("policy_counts", "failure_counts", "recipient_counts", "days"):
            cur = await conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2")  # noqa: S608
            rows.append(await cur.fetchall())
    return rows


async def test_a_result_is_stored_and_read_back_in_rfc_shape(
    client: httpx.AsyncClient, ingest_headers: dict[str, str], read_headers: dict[str, str]
) -> None:
    response = await post(client, ingest_headers, STS_RESULT)
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 1, "sessions": 1}
    domains = await day_results(client, read_headers)
    assert domains == [
        {
            "policy-domain": "example.com",
            "policies": [
                {
                    "policy": {
                        "policy-type": "sts",
                        "policy-string": STS_RESULT["policy"]["policy-string"],
                        "policy-domain": "example.com",
                        "mx-host": ["mx.example.com"],
                    },
                    "summary": {
                        "total-successful-session-count": 0,
                        "total-failure-session-count": 1,
                    },
                    "failure-details": [
                        {
                            "result-type": "certificate-expired",
                            "sending-mta-ip": "192.0.2.1",
                            "receiving-mx-hostname": "mx.example.com",
                            "receiving-ip": "198.51.100.7",
                            "failed-session-count": 1,
                        }
                    ],
                }
            ],
        }
    ]


async def test_equal_policies_and_details_merge_and_counts_add(
    client: httpx.AsyncClient, ingest_headers: dict[str, str], read_headers: dict[str, str]
) -> None:
    success = result(
        result_type="success",
        sending_mta_ip=None,
        receiving_mx_hostname=None,
        receiving_ip=None,
        count=7,
    )
    assert (await post(client, ingest_headers, STS_RESULT, result(count=4), success)).json() == {
        "accepted": 3,
        "sessions": 12,
    }
    # A second batch to the same counters, with a differently spelled but equal policy.
    same = result(count=2)
    same["policy"]["policy-domain"] = "EXAMPLE.com."
    same["receiving-ip"] = "198.51.100.07".replace("07", "7")
    other_ip = result(receiving_ip="198.51.100.8")
    assert (await post(client, ingest_headers, same, other_ip)).status_code == 200
    (domain,) = await day_results(client, read_headers)
    (policy,) = domain["policies"]
    assert policy["summary"] == {
        "total-successful-session-count": 7,
        "total-failure-session-count": 8,
    }
    counts = {d["receiving-ip"]: d["failed-session-count"] for d in policy["failure-details"]}
    assert counts == {"198.51.100.7": 7, "198.51.100.8": 1}


async def test_policies_differing_in_any_field_are_counted_apart(
    client: httpx.AsyncClient, ingest_headers: dict[str, str], read_headers: dict[str, str]
) -> None:
    testing = result()
    testing["policy"]["policy-string"] = [
        "version: STSv1",
        "mode: testing",
        "mx: mx.example.com",
        "max_age: 86400",
    ]
    other_mx = result()
    other_mx["policy"]["mx-host"] = ["*.example.com"]
    await post(client, ingest_headers, STS_RESULT, testing, other_mx)
    (domain,) = await day_results(client, read_headers)
    assert len(domain["policies"]) == 3


async def test_tlsa_policy_strings_are_sorted_so_orders_merge(
    client: httpx.AsyncClient, ingest_headers: dict[str, str], read_headers: dict[str, str]
) -> None:
    records = ["3 1 1 BBBB", "3 1 1 AAAA", "2 0 1 CCCC"]
    items = []
    for order in (records, list(reversed(records))):
        items.append(
            {
                "policy": {
                    "policy-type": "tlsa",
                    "policy-domain": "mx1.example.net",
                    "policy-string": order,
                },
                "result-type": "tlsa-invalid",
                "timestamp": TS,
                "receiving-mx-hostname": "mx1.example.net",
            }
        )
    assert (await post(client, ingest_headers, *items)).status_code == 200
    (domain,) = await day_results(client, read_headers)
    assert domain["policy-domain"] == "mx1.example.net"
    (policy,) = domain["policies"]
    assert policy["policy"]["policy-string"] == sorted(records)
    assert "mx-host" not in policy["policy"]
    assert policy["failure-details"][0]["failed-session-count"] == 2


async def test_idna_domains_are_stored_as_alabels(
    client: httpx.AsyncClient, ingest_headers: dict[str, str], read_headers: dict[str, str]
) -> None:
    item = result(receiving_mx_hostname="MX.☺.example")
    item["policy"]["policy-domain"] = "☺.example"
    item["policy"]["mx-host"] = ["*.☺.example"]
    assert (await post(client, ingest_headers, item)).status_code == 200
    (domain,) = await day_results(client, read_headers, policy_domain="☺.example")
    assert domain["policy-domain"] == "xn--74h.example"
    (policy,) = domain["policies"]
    assert policy["policy"]["mx-host"] == ["*.xn--74h.example"]
    assert policy["failure-details"][0]["receiving-mx-hostname"] == "mx.xn--74h.example"


async def test_timestamp_picks_the_utc_day_and_default_is_receipt(
    client: httpx.AsyncClient,
    ingest_headers: dict[str, str],
    read_headers: dict[str, str],
    clock: FakeClock,
) -> None:
    clock.set(datetime(2026, 11, 25, 0, 30, tzinfo=UTC))
    late_evening_west = result(timestamp="2026-11-24T23:59:59-00:00")
    # 01:00 at +02:00 is 23:00 UTC on the previous day.
    east = result(timestamp="2026-11-25T01:00:00+02:00")
    no_ts = result(timestamp=None)
    assert (await post(client, ingest_headers, late_evening_west, east, no_ts)).status_code == 200
    (d24,) = await day_results(client, read_headers, day="2026-11-24")
    assert d24["policies"][0]["summary"]["total-failure-session-count"] == 2
    (d25,) = await day_results(client, read_headers, day="2026-11-25")
    assert d25["policies"][0]["summary"]["total-failure-session-count"] == 1


async def test_an_invalid_policy_domain_filter_is_a_clear_422(
    client: httpx.AsyncClient, read_headers: dict[str, str]
) -> None:
    response = await client.get(
        "/v1/days/2026-11-24/results", headers=read_headers, params={"policy_domain": "a..b"}
    )
    assert response.status_code == 422
    (detail,) = response.json()["error"]["details"]
    assert detail["field"].endswith("policy_domain") and "label" in detail["reason"]


async def test_recipient_domain_is_kept_for_breakdowns(
    client: httpx.AsyncClient, ingest_headers: dict[str, str], resources: Resources
) -> None:
    await post(client, ingest_headers, result(recipient_domain="Bücher.example", count=3))
    async with resources.pool.connection() as conn:
        cur = await conn.execute("SELECT recipient_domain, failure_count FROM recipient_counts")
        assert await cur.fetchall() == [("xn--bcher-kva.example", 3)]


@pytest.mark.parametrize(
    ("item", "field", "reason"),
    [
        (result(result_type="certificate-stolen"), "result-type", "Input should be"),
        (result(count=0), "count", "greater than or equal to 1"),
        (result(count="many"), "count", "valid integer"),
        (result(sending_mta_ip="192.0.2.300"), "sending-mta-ip", "not an IP address"),
        (result(receiving_mx_hostname="mx..example.com"), "receiving-mx-hostname", "label"),
        (result(timestamp="2026-11-24T13:45:00"), "timestamp", "timezone"),
        (result(timestamp="yesterday"), "timestamp", "datetime"),
        (
            result(policy={"policy-type": "dane", "policy-domain": "x.example"}),
            "policy.policy-type",
            "Input should be",
        ),
        (result(policy={"policy-type": "sts"}), "policy.policy-domain", "Field required"),
        (
            result(
                policy={
                    "policy-type": "tlsa",
                    "policy-domain": "mx.example",
                    "mx-host": ["mx.example"],
                }
            ),
            "policy",
            "only allowed with policy-type sts",
        ),
        (result(result_type="success"), None, "failure-detail fields on a success"),
        (result(surprise=1), "surprise", "Extra inputs are not permitted"),
        (result(additional_information="a\r\nBcc: x"), "additional-information", "control"),
        (result(report_delivery="perhaps"), "report-delivery", "valid boolean"),
    ],
)
async def test_an_invalid_item_rejects_the_whole_batch_with_index_field_reason(
    client: httpx.AsyncClient,
    ingest_headers: dict[str, str],
    resources: Resources,
    item: dict[str, Any],
    field: str | None,
    reason: str,
) -> None:
    before = await snapshot(resources)
    response = await post(client, ingest_headers, STS_RESULT, STS_RESULT, item)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_results"
    assert "nothing was stored" in error["message"]
    assert any(
        d["index"] == 2 and (field is None or d["field"] == field) and reason in d["reason"]
        for d in error["details"]
    ), error["details"]
    assert await snapshot(resources) == before


async def test_timestamps_out_of_range_are_refused(
    client: httpx.AsyncClient,
    ingest_headers: dict[str, str],
    resources: Resources,
    clock: FakeClock,
) -> None:
    clock.set(datetime(2026, 11, 24, 14, 0, tzinfo=UTC))
    before = await snapshot(resources)
    response = await post(
        client,
        ingest_headers,
        STS_RESULT,
        result(timestamp="2026-11-24T14:10:00Z"),
        result(timestamp="2026-09-01T00:00:00Z"),
    )
    assert response.status_code == 422
    details = response.json()["error"]["details"]
    assert [(d["index"], d["field"]) for d in details] == [(1, "timestamp"), (2, "timestamp")]
    assert "future" in details[0]["reason"]
    assert "retention" in details[1]["reason"]
    assert await snapshot(resources) == before


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"results": [', 400, "malformed_json"),
        (b"\xff\xfe", 400, "malformed_json"),
        (b"[]", 422, "invalid_request"),
        (b'{"results": []}', 422, "invalid_request"),
        (b'{"results": {}}', 422, "invalid_request"),
        (b'{"result": []}', 422, "invalid_request"),
        (b'{"results": [1]}', 422, "invalid_results"),
    ],
)
async def test_malformed_bodies_get_clear_errors(
    client: httpx.AsyncClient,
    ingest_headers: dict[str, str],
    body: bytes,
    status: int,
    code: str,
) -> None:
    response = await client.post(
        "/v1/results", content=body, headers={**ingest_headers, "content-type": "application/json"}
    )
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


async def test_limits_on_body_size_and_batch_length(
    client: httpx.AsyncClient, ingest_headers: dict[str, str], resources: Resources
) -> None:
    resources.settings.ingest.max_batch_items = 3
    response = await post(client, ingest_headers, *[STS_RESULT] * 4)
    assert response.status_code == 413
    assert "limit is 3" in response.json()["error"]["message"]
    resources.settings.ingest.max_batch_items = 100
    resources.settings.ingest.max_body_bytes = 2048
    response = await post(client, ingest_headers, *[STS_RESULT] * 6)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 1000

    # Without a Content-Length the cap is enforced while reading.
    response = await client.post("/v1/results", content=chunks(), headers=ingest_headers)
    assert response.status_code == 413


async def test_authentication_and_scopes(
    client: httpx.AsyncClient, make_token: MakeToken, resources: Resources
) -> None:
    assert (await client.post("/v1/results", json={"results": [STS_RESULT]})).status_code == 401
    response = await post(client, bearer("tlsrpt_not-a-token"), STS_RESULT)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    read_only = bearer(await make_token(Scope.READ))
    assert (await post(client, read_only, STS_RESULT)).status_code == 403
    ingest_only = bearer(await make_token(Scope.INGEST))
    assert (await client.get("/v1/days/2026-11-24/results", headers=ingest_only)).status_code == 403
    admin = bearer(await make_token(Scope.ADMIN))
    assert (await post(client, admin, STS_RESULT)).status_code == 200


async def test_a_revoked_token_stops_working(
    client: httpx.AsyncClient, make_token: MakeToken, resources: Resources
) -> None:
    from app.tokens.service import revoke_token

    token = await make_token(Scope.INGEST, name="mta1")
    assert (await post(client, bearer(token), STS_RESULT)).status_code == 200
    assert await revoke_token(resources.pool, "mta1", clock=resources.clock)
    resources.authenticator._cache.clear()  # the cache's TTL elapsing
    assert (await post(client, bearer(token), STS_RESULT)).status_code == 401


async def test_results_for_a_closed_day_get_409_and_nothing_is_stored(
    client: httpx.AsyncClient, ingest_headers: dict[str, str], resources: Resources
) -> None:
    from datetime import date

    from app.ingest.service import close_day

    assert await close_day(resources.pool, resources.clock, date(2026, 11, 23))
    assert not await close_day(resources.pool, resources.clock, date(2026, 11, 23))
    before = await snapshot(resources)
    response = await post(
        client, ingest_headers, STS_RESULT, result(timestamp="2026-11-23T10:00:00Z")
    )
    assert response.status_code == 409
    assert "2026-11-23" in response.json()["error"]["message"]
    assert await snapshot(resources) == before
    assert (await post(client, ingest_headers, STS_RESULT)).status_code == 200


async def test_no_stack_trace_reaches_the_client(
    client: httpx.AsyncClient, ingest_headers: dict[str, str], resources: Resources
) -> None:
    # A real failure nobody foresaw: the database raises inside the ingest statement.
    async with resources.pool.connection() as conn:
        await conn.execute(
            """
            CREATE FUNCTION test_bug() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN RAISE EXCEPTION 'a bug'; END $$;
            CREATE TRIGGER test_bug BEFORE INSERT ON policy_counts
            FOR EACH ROW EXECUTE FUNCTION test_bug();
            """
        )
    try:
        response = await post(client, ingest_headers, STS_RESULT)
    finally:
        async with resources.pool.connection() as conn:
            await conn.execute("DROP FUNCTION test_bug() CASCADE")
    assert response.status_code == 500
    body = response.json()["error"]
    assert body["code"] == "internal_error"
    assert "Traceback" not in response.text and "psycopg" not in response.text
    assert response.headers["x-request-id"] in body["message"]


async def test_a_database_that_is_not_there_is_a_503_with_retry_after(
    client: httpx.AsyncClient, ingest_headers: dict[str, str], resources: Resources
) -> None:
    await resources.pool.close()  # no connection to be had: PoolClosed, an OperationalError
    response = await post(client, ingest_headers, STS_RESULT)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    assert response.json()["error"]["code"] == "database_unavailable"
    assert "Traceback" not in response.text and "psycopg" not in response.text
    ready = await client.get("/readyz")
    assert (ready.status_code, ready.headers["retry-after"]) == (503, "2")


async def test_a_null_policy_is_a_422_naming_the_item(
    client: httpx.AsyncClient, ingest_headers: dict[str, str]
) -> None:
    """Found by schemathesis: `"policy": null` was a 500."""
    bad = {"result-type": "success", "policy": None}
    response = await client.post("/v1/results", json={"results": [bad]}, headers=ingest_headers)
    assert response.status_code == 422, response.text
    [detail] = response.json()["error"]["details"]
    assert (detail["index"], detail["field"]) == (0, "policy")
