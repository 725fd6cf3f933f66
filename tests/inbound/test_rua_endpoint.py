"""The https rua endpoint and the mail endpoint: status codes, limits, duplicates, DKIM."""

from __future__ import annotations

import gzip
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest

from app.resources import Resources
from app.tokens.service import Scope, list_tokens, revoke_token
from tests.conftest import MakeToken
from tests.inbound.mailkit import SIGNING_DOMAIN, MailFactory, SigningKey
from tests.tlsrpt.test_inflate import zero_bomb

SAMPLES = Path(__file__).parent.parent / "samples"
RFC = (SAMPLES / "json/rfc8460_appendix-b_verbatim.json").read_bytes()
GZIP = {"Content-Type": "application/tlsrpt+gzip"}
JSON = {"Content-Type": "application/tlsrpt+json"}
MAIL = {"Content-Type": "message/rfc822"}


async def test_gzip_report_stored_then_duplicate_acknowledged(
    client: httpx.AsyncClient, rua: str, reader: dict[str, str]
) -> None:
    first = await client.post(rua, content=gzip.compress(RFC), headers=GZIP)
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["duplicate"] is False and body["policies"] == 1
    assert body["organization_name"] == "Company-X"
    assert body["report_id"] == "5065427c-23d3-47ca-b6e0-946ea0e8c4be"

    # Resent as JSON, then by mail: the same report, stored once.
    again = await client.post(rua, content=RFC, headers=JSON)
    assert again.status_code == 200
    assert again.json() == dict(body, duplicate=True)
    listed = (await client.get("/v1/inbound/reports", headers=reader)).json()["reports"]
    assert [r["id"] for r in listed] == [body["id"]]
    assert listed[0]["times_received"] == 2
    assert listed[0]["received_via"] == "https"


async def test_media_types_and_token(
    client: httpx.AsyncClient, rua: str, make_token: MakeToken, resources: Resources
) -> None:
    for headers in ({"Content-Type": "application/json"}, {"Content-Type": "text/plain"}, {}):
        response = await client.post(rua, content=RFC, headers=headers)
        assert response.status_code == 415, headers
        assert response.json()["error"]["code"] == "unsupported_media_type"
    assert (await client.post(rua, content=RFC, headers=MAIL)).status_code == 415
    mail = await client.post(rua + "/mail", content=RFC, headers=JSON)
    assert mail.status_code == 415
    # With parameters and in upper case the type is still the type.
    ok = await client.post(
        rua, content=RFC, headers={"Content-Type": "Application/TLSRPT+JSON; x=1"}
    )
    assert ok.status_code == 201

    read_token = await make_token(Scope.READ, Scope.ADMIN)
    for path in ("/v1/tlsrpt/nope", f"/v1/tlsrpt/{read_token}", "/v1/tlsrpt/nope/mail"):
        response = await client.post(path, content=RFC, headers=JSON)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"
    inbound = await make_token(Scope.INBOUND, name="revoked")
    await revoke_token(resources.pool, "revoked", clock=resources.clock)
    revoked_at = {t.name: t.revoked_at for t in await list_tokens(resources.pool)}
    assert revoked_at["revoked"] == resources.clock()
    resources.authenticator._cache.clear()
    assert (
        await client.post(f"/v1/tlsrpt/{inbound}", content=RFC, headers=JSON)
    ).status_code == 404


async def test_body_over_the_limit_is_refused_while_reading(
    client: httpx.AsyncClient, rua: str, resources: Resources
) -> None:
    resources.settings.inbound.max_body_bytes = 64 * 1024
    declared = await client.post(rua, content=bytes(64 * 1024 + 1), headers=GZIP)
    assert declared.status_code == 413
    assert declared.json()["error"]["code"] == "body_too_large"

    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(10_000):  # 640 MB if it were all read
            pulled += 65536
            yield bytes(65536)

    streamed = await client.post(rua, content=endless(), headers=GZIP)
    assert streamed.status_code == 413
    assert pulled <= 4 * 65536


async def test_gzip_bomb_refused_fast(
    client: httpx.AsyncClient, rua: str, resources: Resources
) -> None:
    resources.settings.inbound.max_body_bytes = 16 * 1024 * 1024
    bomb = zero_bomb(10)
    started = time.monotonic()
    response = await client.post(rua, content=bomb, headers=GZIP)
    assert time.monotonic() - started < 5
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "report_too_large"
    assert error["message"] == "the report inflates to more than 8388608 bytes"
    # Uncompressed JSON larger than the inflated cap is refused the same way.
    resources.settings.inbound.max_inflated_bytes = 1024
    big = RFC + b" " * 2048
    assert (await client.post(rua, content=big, headers=JSON)).status_code == 413


@pytest.mark.parametrize(
    ("body", "headers", "code", "message"),
    [
        (
            b"\x1f\x8b\x08\x00" + bytes(6) + b"\xff" * 20,
            GZIP,
            "invalid_report",
            "the body is not readable: corrupt",
        ),
        (gzip.compress(RFC)[:-20], GZIP, "invalid_report", "the body is not readable: truncated"),
        (b"not json", JSON, "invalid_report", "not a TLSRPT report: not valid JSON"),
        (b"[1, 2]", JSON, "invalid_report", "not a TLSRPT report: a report is a JSON object"),
        (b"", JSON, "invalid_report", "not a TLSRPT report: not valid JSON"),
    ],
)
async def test_malformed_bodies(
    client: httpx.AsyncClient, rua: str, body: bytes, headers: dict[str, str], code: str,
    message: str,
) -> None:  # fmt: skip
    response = await client.post(rua, content=body, headers=headers)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"].startswith(message)


async def test_unreadable_policies_stored_and_named_as_warnings(
    client: httpx.AsyncClient, rua: str
) -> None:
    body = (SAMPLES / "quirks/invalid-policy-type_missing-fields.json").read_bytes()
    response = await client.post(rua, content=gzip.compress(body), headers=GZIP)
    assert response.status_code == 201, response.text
    accepted = response.json()
    assert accepted["policies"] == 0
    assert {
        "field": "policies[1].policy.policy-type",
        "reason": "unknown policy-type 'invalid-policy-type' "
        "(expected sts, tlsa or no-policy-found); "
        "this policy is not counted (the stored JSON keeps it)",
    } in accepted["warnings"]


async def test_unreadable_report_names_each_problem(client: httpx.AsyncClient, rua: str) -> None:
    body = orjson.dumps({"organization-name": "Org", "report-id": "r", "policies": []})
    response = await client.post(rua, content=gzip.compress(body), headers=GZIP)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["message"] == "not a TLSRPT report: date-range: missing"
    assert error["details"] == [{"field": "date-range", "reason": "missing"}]


async def test_too_many_policies_is_413(
    client: httpx.AsyncClient, rua: str, resources: Resources
) -> None:
    resources.settings.inbound.max_policies = 2
    doc = orjson.loads(RFC)
    doc["policies"] *= 3
    response = await client.post(rua, content=orjson.dumps(doc), headers=JSON)
    assert response.status_code == 413
    assert response.json()["error"]["message"] == "3 policies (at most 2 are accepted)"


async def test_signed_mail_passes_and_altered_mail_is_stored_failed(
    client: httpx.AsyncClient, rua: str, reader: dict[str, str], signing_key: SigningKey,
    report_mail: MailFactory,
) -> None:  # fmt: skip
    signed = signing_key.sign(report_mail(RFC))
    response = await client.post(rua + "/mail", content=signed, headers=MAIL)
    assert response.status_code == 201, response.text
    assert (response.json()["dkim"], response.json()["dkim_domain"]) == ("pass", SIGNING_DOMAIN)
    stored = (
        await client.get(f"/v1/inbound/reports/{response.json()['id']}", headers=reader)
    ).json()
    assert stored["dkim_verdict"] == "pass" and stored["received_via"] == "mail"
    assert stored["mail_report_domain"] == "example.com"
    assert stored["mail_filename"] == "reporter.example!example.com!1714521600!1714607999.json.gz"
    # RFC 8460 §5.6: the report-id of the body, not the Subject's.
    assert stored["report_id"] == "5065427c-23d3-47ca-b6e0-946ea0e8c4be"
    assert "subject-id@reporter.example" in stored["mail_subject"]

    other = orjson.loads(RFC)
    other["report-id"] = "another"
    altered = signing_key.sign(report_mail(orjson.dumps(other))).replace(
        b"Subject: Report Domain: example.com", b"Subject: Report Domain: evil.example"
    )
    response = await client.post(rua + "/mail", content=altered, headers=MAIL)
    assert response.status_code == 201
    assert (response.json()["dkim"], response.json()["dkim_domain"]) == ("fail", SIGNING_DOMAIN)
    stored = (
        await client.get(f"/v1/inbound/reports/{response.json()['id']}", headers=reader)
    ).json()
    assert stored["dkim_verdict"] == "fail"
    assert stored["dkim_reason"] == "signature does not verify"


async def test_mail_without_report_is_422(client: httpx.AsyncClient, rua: str) -> None:
    raw = b"From: a@b.example\r\nSubject: hello\r\n\r\njust words\r\n"
    response = await client.post(rua + "/mail", content=raw, headers=MAIL)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "no_report"
    assert response.json()["error"]["message"].startswith("the mail holds no report part")


async def test_hostile_text_stored_verbatim_and_logged_escaped(
    client: httpx.AsyncClient, rua: str, reader: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    doc = orjson.loads(RFC)
    doc["organization-name"] = 'Evil\n{"level":"error"}\x1b[2J\u202e'
    caplog.set_level(logging.INFO, logger="app.inbound.service")
    response = await client.post(rua, content=orjson.dumps(doc), headers=JSON)
    assert response.status_code == 201
    stored = (
        await client.get(f"/v1/inbound/reports/{response.json()['id']}", headers=reader)
    ).json()
    assert stored["organization_name"] == doc["organization-name"]
    assert stored["report"]["organization-name"] == doc["organization-name"]
    (record,) = [r for r in caplog.records if r.getMessage() == "inbound_report_received"]
    logged = record.fields["organization"]  # type: ignore[attr-defined]
    assert logged == 'Evil\\u000a{"level":"error"}\\u001b[2J\\u202e'
