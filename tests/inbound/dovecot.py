"""A real Dovecot IMAP server on loopback for the intake's tests.

Each test gets its own: a throw-away dovecot.conf in a temporary directory (its own
base_dir, so it never meets a system Dovecot), one user with a `{PLAIN}` password in a
passwd-file, a maildir beside it owned by `nobody`, and two listeners on free 127.0.0.1
ports: plain IMAP with STARTTLS offered, and implicit TLS, both with a certificate of the
test CA. Dovecot runs
in the foreground (`dovecot -F`) as a child of the test and is stopped after it. Missing
Dovecot fails the test with the line that installs it (`.ci/run` does).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from imapclient import IMAPClient

from app.config import ImapSecurity, ImapSettings
from tests.delivery.certs import LoopbackCa, make_test_ca

USER = "reports"
PASSWORD = "s3cret-imap-pw"

CONF = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
first_valid_uid = 0
first_valid_gid = 0
mail_location = maildir:{root}/mail/%u
namespace inbox {{
  inbox = yes
  separator = /
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {root}/passwd
}}
userdb {{
  driver = passwd-file
  args = {root}/passwd
  override_fields = uid=nobody gid=nogroup home={root}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
    ssl = yes
  }}
}}
# tmp_path is root's alone: the auth processes read the passwd-file as root.
service auth {{
  user = root
}}
service auth-worker {{
  user = root
}}
# No growing delay after failed logins (the wrong-password test logs in again and again).
service anvil {{
  chroot =
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service stats {{
  chroot =
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Dovecot:
    root: Path
    port: int
    tls_port: int
    ca: LoopbackCa

    def settings(self, security: ImapSecurity = ImapSecurity.NONE, **fields: Any) -> ImapSettings:
        """Settings reaching this server: `none` and `starttls` on the plain port."""
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.tls_port if security is ImapSecurity.TLS else self.port,
            "security": security,
            "ca_file": self.ca.ca_file,
            "user": USER,
            "password": PASSWORD,
            "poll_seconds": 30,
            "timeout_seconds": 10,
        }
        return ImapSettings(**(values | fields))

    def client(self) -> IMAPClient:
        client = IMAPClient("127.0.0.1", port=self.port, ssl=False, timeout=10)
        try:
            client.login(USER, PASSWORD)
        except BaseException:
            client.shutdown()
            raise
        return client

    def append(self, *messages: bytes, folder: str = "INBOX") -> None:
        client = self.client()
        try:
            for raw in messages:
                client.append(folder, raw)
        finally:
            client.logout()

    def messages(self, folder: str = "INBOX") -> list[bytes]:
        """The messages in a folder (none when it does not exist), oldest first."""
        client = self.client()
        try:
            if not client.folder_exists(folder):
                return []
            client.select_folder(folder, readonly=True)
            uids = sorted(client.search(["ALL"]))
            found = client.fetch(uids, ["BODY.PEEK[]"]) if uids else {}
            return [bytes(found[u][b"BODY[]"]) for u in uids]
        finally:
            client.logout()


class _ExitedEarly(Exception):
    """Dovecot exited before it listened (its output says why)."""


def _start(binary: str, root: Path, ca: LoopbackCa) -> tuple[Dovecot, subprocess.Popen[bytes]]:
    port = free_port()
    tls_port = free_port()
    while tls_port == port:
        tls_port = free_port()
    server = Dovecot(root, port, tls_port, ca)
    conf = root / "dovecot.conf"
    conf.write_text(
        CONF.format(root=root, cert=ca.cert_file, key=ca.key_file, port=port, tls_port=tls_port)
    )
    with (root / "dovecot.out").open("wb") as out:
        process = subprocess.Popen([binary, "-F", "-c", str(conf)], stdout=out, stderr=out)
    return server, process


def _wait_listening(port: int, process: subprocess.Popen[bytes], root: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = "".join(
                p.read_text(errors="replace")
                for p in (root / "dovecot.out", root / "dovecot.log")
                if p.exists()
            )
            raise _ExitedEarly(f"dovecot exited with {process.returncode}:\n{text}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"dovecot did not listen on 127.0.0.1:{port} within 15 s")


@pytest.fixture
def dovecot(tmp_path: Path) -> Iterator[Dovecot]:
    binary = shutil.which("dovecot") or next(
        (p for p in ("/usr/sbin/dovecot",) if Path(p).exists()), None
    )
    if binary is None:
        pytest.fail(
            "dovecot is not installed: `apt-get install -y dovecot-imapd` (.ci/run does this)"
        )
    # Not under tmp_path: Dovecot refuses root as the mail user, and tmp_path is root's alone.
    root = Path(tempfile.mkdtemp(prefix="tlsrpt-dovecot-"))
    root.chmod(0o755)
    for sub in ("run", "state", "mail"):
        (root / sub).mkdir()
    shutil.chown(root / "mail", "nobody", "nogroup")
    ca = make_test_ca(tmp_path)
    (root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
    # A port picked free may be taken by another process before Dovecot binds it (the
    # suite runs in several workers): then Dovecot exits at once, and is started again
    # on other ports.
    for attempt in range(3):
        server, process = _start(binary, root, ca)
        try:
            _wait_listening(server.port, process, root)
            _wait_listening(server.tls_port, process, root)
            break
        except _ExitedEarly as exc:
            if attempt == 2:
                pytest.fail(str(exc))
        except BaseException:
            process.kill()
            process.wait()
            raise
    try:
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(root, ignore_errors=True)
