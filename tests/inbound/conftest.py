"""Fixtures of the inbound tests: a DKIM signing key and the report-mail builder."""

from __future__ import annotations

import pytest

from tests.inbound.mailkit import MailFactory, SigningKey, build_report_mail


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    return SigningKey()


@pytest.fixture
def report_mail() -> MailFactory:
    return build_report_mail
