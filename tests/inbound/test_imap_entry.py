"""The IMAP settings, `tlsrpt inbound imap [--watch]` as an operator runs it, and the
background watch that `serve` and `worker` start (against a real Dovecot)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.cli.imap import start_imap
from app.config import ImapSecurity, ImapSettings
from app.inbound.mailbox import Mailbox, MailboxError
from app.resources import Resources
from tests.cli.test_cli import ROOT, tlsrpt
from tests.dns.fake_resolver import FakeResolver
from tests.inbound.dovecot import PASSWORD, USER, Dovecot
from tests.inbound.imapkit import DONE, RFC
from tests.inbound.mailkit import build_report_mail


def test_defaults_and_ports() -> None:
    assert not ImapSettings().enabled
    tls = ImapSettings(host="imap.example.com", user="u", password="p")  # type: ignore[arg-type]
    assert tls.enabled and tls.effective_port == 993 and tls.security is ImapSecurity.TLS
    assert (tls.folder, tls.done_folder, tls.invalid_folder) == (
        "INBOX",
        "TLSRPT/done",
        "TLSRPT/invalid",
    )
    starttls = tls.model_copy(update={"security": ImapSecurity.STARTTLS})
    assert starttls.effective_port == 143


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "[::1]", "127.0.0.53"])
def test_no_tls_allowed_on_loopback(host: str) -> None:
    ImapSettings(host=host, security=ImapSecurity.NONE, user="u", password="p")  # type: ignore[arg-type]


@pytest.mark.parametrize("host", ["imap.example.com", "192.0.2.1", "localhost.example"])
def test_no_tls_refused_elsewhere(host: str) -> None:
    with pytest.raises(ValidationError, match="not a loopback address"):
        ImapSettings(host=host, security=ImapSecurity.NONE, user="u", password="p")  # type: ignore[arg-type]


def test_password_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "imap.password"
    secret.write_text("from-a-file\n")
    settings = ImapSettings(host="imap.example.com", user="u", password_file=secret)
    assert settings.secret() == "from-a-file"
    secret.unlink()
    with pytest.raises(MailboxError, match="PASSWORD_FILE unreadable"):
        Mailbox(settings).open()
    with pytest.raises(ValidationError, match="PASSWORD"):
        ImapSettings(host="imap.example.com", user="u")


def test_refused_setting_is_one_line_without_the_password() -> None:
    done = tlsrpt(
        "inbound",
        "imap",
        env={
            "TLSRPT_IMAP__HOST": "imap.example.com",
            "TLSRPT_IMAP__SECURITY": "none",
            "TLSRPT_IMAP__USER": "u",
            "TLSRPT_IMAP__PASSWORD": "hunter2-secret",
        },
    )
    assert done.returncode == 2
    assert "TLSRPT_IMAP: " in done.stderr and "not a loopback address" in done.stderr
    assert "hunter2-secret" not in done.stderr + done.stdout


def env_of(dovecot: Dovecot, database_url: str) -> dict[str, str]:
    return {
        "TLSRPT_DATABASE_URL": database_url,
        # The report mails here are unsigned; no lookup may leave the machine anyway.
        "TLSRPT_DNS__NAMESERVERS": "127.0.0.1:9",
        "TLSRPT_IMAP__HOST": "127.0.0.1",
        "TLSRPT_IMAP__PORT": str(dovecot.tls_port),
        "TLSRPT_IMAP__CA_FILE": str(dovecot.ca.ca_file),
        "TLSRPT_IMAP__USER": USER,
        "TLSRPT_IMAP__PASSWORD": PASSWORD,
    }


def test_one_round_prints_what_it_did(dovecot: Dovecot, database_url: str) -> None:
    dovecot.append(build_report_mail(RFC), b"Subject: hello\r\n\r\nnot a report\r\n")
    done = tlsrpt("inbound", "imap", env=env_of(dovecot, database_url))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "INBOX: 1 invalid, 1 report stored"
    assert PASSWORD not in done.stderr + done.stdout
    again = tlsrpt("inbound", "imap", env=env_of(dovecot, database_url))
    assert again.stdout.strip() == "INBOX: no messages"


@pytest.mark.parametrize(
    "command",
    [("inbound", "imap", "--watch"), ("worker",), ("serve", "--port", "0")],
    ids=["inbound-imap-watch", "worker", "serve"],
)
def test_watching_commands_read_the_mailbox_and_stop_on_sigterm(
    command: tuple[str, ...], dovecot: Dovecot, database_url: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLSRPT_")}
    env |= env_of(dovecot, database_url) | {"TLSRPT_LOG_FORMAT": "text"}
    process = subprocess.Popen(
        [sys.executable, "-m", "app", *command],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Reading the log blocks: a process that never logs the move is killed, and fails.
    watchdog = threading.Timer(60, process.kill)
    watchdog.start()
    try:
        dovecot.append(build_report_mail(RFC))
        assert process.stderr is not None
        for line in process.stderr:  # the log, until the mail has been moved
            if "imap_message_done" in line:
                break
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
    assert dovecot.messages() == []
    assert len(dovecot.messages(DONE)) == 1


async def test_background_watch_of_serve_and_worker(
    dovecot: Dovecot, resources: Resources, dns: FakeResolver
) -> None:
    assert await start_imap(resources) is None  # no host: nothing runs
    moved = asyncio.Event()

    class OnDone(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "imap_message_done":
                moved.set()

    handler = OnDone()
    logger = logging.getLogger("app.inbound.imap")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    resources.settings.imap = dovecot.settings(ImapSecurity.STARTTLS)
    stop = await start_imap(resources)
    assert stop is not None
    try:
        await asyncio.to_thread(dovecot.append, build_report_mail(RFC))
        await asyncio.wait_for(moved.wait(), 20)
    finally:
        await stop()
        logger.removeHandler(handler)
        logger.setLevel(level)
    async with resources.pool.connection() as conn:
        cur = await conn.execute("SELECT received_via FROM inbound_reports")
        assert await cur.fetchall() == [("imap",)]
