"""Alert tests: the delivery environment's loopback HTTPS receiver (the webhook) and
aiosmtpd sink (the mail), and resources whose alert settings aim at them."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from app.config import AlertSettings
from app.resources import Resources
from tests.delivery.conftest import dkim_pair, env, test_ca  # noqa: F401  (fixtures)
from tests.delivery.env import DeliveryEnv

SECRET = "webhook-test-secret"
MAIL_TO = "ops@operator.example"


def alert_settings(where: DeliveryEnv, **changes: object) -> AlertSettings:
    values: dict[str, object] = {
        "webhook_urls": [where.https_rua("/hook")],
        "webhook_secret": SecretStr(SECRET),
        "mail_to": [MAIL_TO],
        "spike_min_sessions": 50,
    }
    values.update(changes)
    return AlertSettings.model_validate(values)


@pytest.fixture
async def res(env: DeliveryEnv) -> Resources:  # noqa: F811
    """Resources on the delivery environment with alerts aimed at its sinks."""
    return await env.open_resources(alerts=alert_settings(env))
