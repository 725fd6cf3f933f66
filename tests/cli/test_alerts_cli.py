"""`tlsrpt alerts` as real processes: evaluate raises once and notifies a loopback HTTPS
webhook and the SMTP sink; list shows it; test sends a test digest."""

from __future__ import annotations

import json

from app.ingest.service import record_results
from app.resources import Resources
from tests.alerts.test_alerts import results
from tests.alerts.test_dkim_mismatch import NAME, published
from tests.cli.test_delivery_cli import cli_env, env, tlsrpt  # noqa: F401  (env: fixture)
from tests.delivery.certs import make_dkim_key_pair
from tests.delivery.conftest import dkim_pair, test_ca  # noqa: F401  (fixtures)
from tests.delivery.env import DeliveryEnv
from tests.dnscheck.zone_server import ZoneData, zone_server


async def test_evaluate_list_and_test(
    env: DeliveryEnv,  # noqa: F811
    dkim_pair: tuple[bytes, bytes],  # noqa: F811
) -> None:
    resources = await env.open_resources()
    # DNS publishes the DKIM key the CLI signs with: no dkim_mismatch, until it changes.
    zone = ZoneData({(NAME, "TXT"): published(dkim_pair[0])})
    with zone_server(zone) as dns_port:
        await evaluate_list_and_test(env, resources, cli_env(env, dns_port), zone, dkim_pair[0])


async def evaluate_list_and_test(
    env: DeliveryEnv,  # noqa: F811
    resources: Resources,
    environ: dict[str, str],
    zone: ZoneData,
    our_pem: bytes,
) -> None:
    environ.update(
        {
            "TLSRPT_ALERTS__WEBHOOK_URLS": f"https://127.0.0.1:{env.https_port}/hook",
            "TLSRPT_ALERTS__WEBHOOK_SECRET": "cli-secret",
            "TLSRPT_ALERTS__MAIL_TO": "ops@operator.example",
        }
    )
    status, out, err = await tlsrpt(environ, "alerts", "test")
    assert status == 0, err
    # The path of a webhook URL (where Slack keeps its secret) is not printed.
    assert f"webhook https://127.0.0.1:{env.https_port}/…: sent" in out
    assert "mail ops@operator.example: sent" in out
    assert len(env.https.posts) == 1 and len(env.smtp.messages) == 1

    await record_results(
        resources.committer,
        resources.clock,
        resources.settings,
        results("broken.example", ok=0, failed=100),
    )
    environ["TLSRPT_ALERTS__DIGEST_MIN_INTERVAL_SECONDS"] = "0"
    status, out, err = await tlsrpt(environ, "alerts", "evaluate")
    assert status == 0, err
    assert "raised 1, resolved 0, notifications queued 2, sent 2" in out
    assert len(env.https.posts) == 2 and len(env.smtp.messages) == 2
    status, out, err = await tlsrpt(environ, "alerts", "evaluate")
    assert status == 0 and "raised 0" in out and "queued 0" in out
    assert zone.queries == [f"{NAME} TXT"] * 2  # each evaluate asks DNS at once

    zone.records[NAME, "TXT"] = published(make_dkim_key_pair()[0])
    status, out, err = await tlsrpt(environ, "alerts", "evaluate")
    assert status == 0 and "raised 1, resolved 0" in out, err
    status, out, _ = await tlsrpt(environ, "alerts", "list", "--kind", "dkim_mismatch")
    assert "does not match the configured private key" in out
    zone.records[NAME, "TXT"] = published(our_pem)
    status, out, err = await tlsrpt(environ, "alerts", "evaluate")
    assert status == 0 and "raised 0, resolved 1" in out, err

    status, out, err = await tlsrpt(environ, "alerts")
    assert status == 0, err
    assert "outgoing_spike" in out and "broken.example" in out and "open" in out
    status, out, _ = await tlsrpt(environ, "alerts", "list", "--open", "--json")
    [line] = out.splitlines()  # the spike; the dkim_mismatch alert is resolved
    assert json.loads(line)["subject"] == "broken.example"

    environ.pop("TLSRPT_ALERTS__WEBHOOK_URLS")
    environ.pop("TLSRPT_ALERTS__MAIL_TO")
    status, _, err = await tlsrpt(environ, "alerts", "test")
    assert status == 2 and "no target" in err
