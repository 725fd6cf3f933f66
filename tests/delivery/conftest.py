"""Fixtures for delivery tests: a DKIM key pair, a fake DKIM DNS, a test CA, the sinks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.clock import FakeClock
from tests.delivery.certs import LoopbackCa, make_dkim_key_pair, make_test_ca
from tests.delivery.env import DeliveryEnv, delivery_env


@pytest.fixture(scope="session")
def dkim_pair() -> tuple[bytes, bytes]:
    """(private key PEM, TXT record value) for selector `sel` of `sender.example`."""
    return make_dkim_key_pair()


@pytest.fixture(scope="session")
def dkim_dns(dkim_pair: tuple[bytes, bytes]) -> Callable[..., bytes | None]:
    """A dkimpy `dnsfunc` serving only `sel._domainkey.sender.example`."""
    record = dkim_pair[1]

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        if name.rstrip(b".").lower() == b"sel._domainkey.sender.example":
            return record
        return None

    return lookup


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> LoopbackCa:
    return make_test_ca(Path(tmp_path_factory.mktemp("ca")))


@pytest.fixture
async def env(
    database_url: str,
    tmp_path: Path,
    test_ca: LoopbackCa,
    dkim_pair: tuple[bytes, bytes],
    clock: FakeClock,
) -> AsyncIterator[DeliveryEnv]:
    """Loopback SMTP and HTTPS sinks, settings aimed at them, on the test's fake clock."""
    async with delivery_env(database_url, tmp_path, test_ca, dkim_pair[0], clock) as e:
        yield e
