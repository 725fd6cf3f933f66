"""Fixtures of the inbound tests: a DKIM key served by a fake DNS, report mails, tokens,
and a real Dovecot IMAP server (tests/inbound/dovecot.py)."""

from __future__ import annotations

import pytest

from app.resources import Resources
from app.tokens.service import Scope
from tests.conftest import MakeToken, bearer
from tests.dns.fake_resolver import FakeResolver
from tests.inbound.dovecot import dovecot  # noqa: F401  (the fixture)
from tests.inbound.mailkit import KEY_NAME, MailFactory, SigningKey, build_report_mail


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    return SigningKey()


@pytest.fixture
def report_mail() -> MailFactory:
    return build_report_mail


@pytest.fixture
def dns(resources: Resources, signing_key: SigningKey) -> FakeResolver:
    """The fake DNS of the service: serves the test DKIM key; add or drop records."""
    resolver = FakeResolver({KEY_NAME: [(signing_key.record,)]})
    resources.resolver = resolver
    return resolver


@pytest.fixture
async def rua(make_token: MakeToken, dns: FakeResolver) -> str:
    """The https rua path of a fresh `inbound` token."""
    return "/v1/tlsrpt/" + await make_token(Scope.INBOUND)


@pytest.fixture
async def reader(make_token: MakeToken) -> dict[str, str]:
    """Authorization headers of a `read` token."""
    return bearer(await make_token(Scope.READ))
