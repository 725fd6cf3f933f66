"""Fixtures of the inbound tests: a DKIM key served by a fake DNS, report mails, tokens."""

from __future__ import annotations

import pytest

from app.resources import Resources
from app.tokens.service import Scope
from tests.conftest import MakeToken, bearer
from tests.inbound.mailkit import KEY_NAME, MailFactory, SigningKey, build_report_mail


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    return SigningKey()


@pytest.fixture
def report_mail() -> MailFactory:
    return build_report_mail


@pytest.fixture
def dkim_keys(resources: Resources, signing_key: SigningKey) -> dict[str, bytes]:
    """The fake DNS behind DKIM lookups: serves the test key; add or drop records."""
    records = {KEY_NAME: signing_key.record}

    async def lookup(name: str) -> bytes | None:
        return records.get(name)

    resources.dkim_lookup = lookup
    return records


@pytest.fixture
async def rua(make_token: MakeToken, dkim_keys: dict[str, bytes]) -> str:
    """The https rua path of a fresh `inbound` token."""
    return "/v1/tlsrpt/" + await make_token(Scope.INBOUND)


@pytest.fixture
async def reader(make_token: MakeToken) -> dict[str, str]:
    """Authorization headers of a `read` token."""
    return bearer(await make_token(Scope.READ))
