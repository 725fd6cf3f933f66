"""Every sample, by HTTPS and by mail: stored (lenient receiving), what is stored checked
against the file, and what was read leniently answered as warnings."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from app.inbound.mail import find_report
from app.resources import Resources
from tests.inbound.mailkit import build_report_mail

SAMPLES = Path(__file__).parent.parent / "samples"
GZIP = {"Content-Type": "application/tlsrpt+gzip"}
MAIL = {"Content-Type": "message/rfc822"}

ACCEPTED_JSON = [
    "json/rfc8460_appendix-b_verbatim.json",
    "json/google_foo-bar-io_2025-05-22.json",
    "json/microsoft_sts-and-tlsa_2025-05-23.json",
    "json/mailru_sts-policy-fetch-error_2024-02-22.json",
    "quirks/empty-string-optional-fields_sts-policy-fetch-error.json",
    "quirks/null-contact-info.json",
    "quirks/sending-mta-ip-not-an-ip.json",
    "quirks/invalid-policy-type_missing-fields.json",
]
# The fields each sample gets a warning for (the others read cleanly).
WARNED = {
    "quirks/null-contact-info.json": ["contact-info"],
    "quirks/sending-mta-ip-not-an-ip.json": ["policies[0].failure-details[0].sending-mta-ip"],
    "quirks/invalid-policy-type_missing-fields.json": [
        "policies[0].policy.policy-domain",
        "policies[0].summary.total-failure-session-count",
        "policies[1].policy.policy-type",
        "policies[1].policy.policy-domain",
        "policies[1].summary.total-failure-session-count",
    ],
}
ACCEPTED_MAIL = [
    # (file, DKIM verdict: the Google key is not served by the test DNS, RFC's is unsigned)
    ("eml/google_cardinalhealth-ca_2024-09-03.eml", "fail"),
    ("eml/microsoft_example-com_2026-05-13.eml", "fail"),
    ("eml/rfc8460-example-message_gzip.eml", "none"),
]


def as_both(name: str) -> tuple[bytes, bytes, bytes]:
    """(report JSON, gzip body for HTTPS, mail) of a sample, whichever form it has."""
    raw = (SAMPLES / name).read_bytes()
    if name.startswith("eml/"):
        found = find_report(raw)
        return gzip.decompress(found.data), found.data, raw
    return raw, gzip.compress(raw), build_report_mail(raw)


def expected(report_json: bytes) -> list[tuple[Any, ...]]:
    """The policies and failures the file says, read without the service's parser: a
    policy without a known type and a domain is not counted."""
    doc = orjson.loads(report_json)
    rows = []
    for entry in doc["policies"]:
        policy, summary = entry["policy"], entry["summary"]
        if policy["policy-type"] not in ("sts", "tlsa", "no-policy-found"):
            continue
        if "policy-domain" not in policy:
            continue
        failures = [
            (f["result-type"], f["failed-session-count"], f.get("receiving-ip") or None)
            for f in entry.get("failure-details", [])
        ]
        rows.append((
            policy["policy-type"], policy["policy-domain"],
            summary["total-successful-session-count"], summary["total-failure-session-count"],
            failures,
        ))  # fmt: skip
    return rows


async def stored(resources: Resources, report_pk: int) -> list[tuple[Any, ...]]:
    async with resources.pool.connection() as conn:
        cur = await conn.execute(
            """
            SELECT p.policy_type, p.policy_domain, p.success_count, p.failure_count,
                coalesce((SELECT array_agg(ARRAY[f.result_type,
                    f.failed_session_count::text, host(f.receiving_ip)] ORDER BY f.position)
                    FROM inbound_failures f
                    WHERE f.report_pk = p.report_pk AND f.policy_position = p.position), '{}')
            FROM inbound_policies p WHERE p.report_pk = %(id)s ORDER BY p.position
            """,
            {"id": report_pk},
        )
        rows: list[Any] = await cur.fetchall()
        return [
            (t, d, ok, bad, [(f[0], int(f[1]), f[2]) for f in failures])
            for t, d, ok, bad, failures in rows
        ]


async def check_stored(
    client: httpx.AsyncClient, resources: Resources, reader: dict[str, str],
    report_pk: int, report_json: bytes,
) -> dict[str, Any]:  # fmt: skip
    assert await stored(resources, report_pk) == expected(report_json)
    response = await client.get(f"/v1/inbound/reports/{report_pk}", headers=reader)
    detail: dict[str, Any] = response.json()
    assert detail["report"] == orjson.loads(report_json)
    doc = orjson.loads(report_json)
    assert detail["organization_name"] == doc["organization-name"]
    assert detail["report_id"] == doc["report-id"]
    assert detail["contact_info"] == doc["contact-info"]
    rows = expected(report_json)
    assert detail["success_count"] == sum(r[2] for r in rows)
    assert detail["failure_count"] == sum(r[3] for r in rows)
    return detail


@pytest.mark.parametrize("mail_first", [False, True], ids=["https-first", "mail-first"])
@pytest.mark.parametrize(("name", "verdict"), [(n, "none") for n in ACCEPTED_JSON] + ACCEPTED_MAIL)
async def test_accepted_by_https_and_mail_stored_once(
    client: httpx.AsyncClient, resources: Resources, rua: str, reader: dict[str, str],
    name: str, verdict: str, mail_first: bool,
) -> None:  # fmt: skip
    report_json, body, mail = as_both(name)
    sends = [(rua, body, GZIP), (rua + "/mail", mail, MAIL)]
    if mail_first:
        sends.reverse()
    first = await client.post(sends[0][0], content=sends[0][1], headers=sends[0][2])
    assert first.status_code == 201, first.text
    warned = [w["field"] for w in first.json()["warnings"]]
    assert warned == WARNED.get(name, [])
    detail = await check_stored(client, resources, reader, first.json()["id"], report_json)
    assert [w["field"] for w in detail["warnings"] or []] == warned
    assert detail["received_via"] == ("mail" if mail_first else "https")
    assert detail["dkim_verdict"] == (verdict if mail_first else None)
    second = await client.post(sends[1][0], content=sends[1][1], headers=sends[1][2])
    assert second.status_code == 200, second.text
    assert second.json()["duplicate"] is True and second.json()["id"] == first.json()["id"]


async def test_microsoft_tlsa_strings_and_blank_ips_stored_as_read(
    client: httpx.AsyncClient, resources: Resources, rua: str
) -> None:
    _, body, _ = as_both("json/microsoft_sts-and-tlsa_2025-05-23.json")
    pk = (await client.post(rua, content=body, headers=GZIP)).json()["id"]
    _, body, _ = as_both("quirks/empty-string-optional-fields_sts-policy-fetch-error.json")
    blank_pk = (await client.post(rua, content=body, headers=GZIP)).json()["id"]
    async with resources.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT policy_string FROM inbound_policies WHERE report_pk = %(id)s "
            "AND policy_type = 'tlsa'",
            {"id": pk},
        )
        assert await cur.fetchone() == ([
            "3 1 1 6007EEE553E85D8DF007A845D19EC343283D4E416E9A33F9EF3040C8B7C285BC",
            "3 1 1 837C773D54C2E2BD71871A3FC352BE8214D5646CBAE5E3091401A7274717998B",
        ],)  # fmt: skip
        cur = await conn.execute(
            "SELECT sending_mta_ip, receiving_ip, receiving_mx_hostname, additional_information,"
            " failure_reason_code FROM inbound_failures WHERE report_pk = %(id)s",
            {"id": blank_pk},
        )
        assert await cur.fetchall() == [(None, None, None, None, "no-policy-served")]


async def test_unreadable_reports_still_refused_both_ways(
    client: httpx.AsyncClient, resources: Resources, rua: str
) -> None:
    # Refused only when nothing can be read as a report: no identity, no policies array.
    raw = orjson.dumps({"organization-name": "Org", "policies": {}})
    body, mail = gzip.compress(raw), build_report_mail(raw)
    for path, content, headers in ((rua, body, GZIP), (rua + "/mail", mail, MAIL)):
        response = await client.post(path, content=content, headers=headers)
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["code"] == "invalid_report"
        fields = {d["field"] for d in error["details"]}
        assert fields == {"report-id", "date-range", "policies"}
    async with resources.pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM inbound_reports")
        assert await cur.fetchone() == (0,)
