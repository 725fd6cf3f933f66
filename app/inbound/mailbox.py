"""One IMAP connection to the report mailbox, on imapclient (blocking: call it in a thread).

`Mailbox` connects with implicit TLS, STARTTLS (the CA file trusted besides the system's)
or in clear on loopback, logs in, makes sure the done and invalid folders exist, and
offers what the intake needs: the UIDs of the messages waiting, one message's size and
bytes, a move by UID, and one IDLE wait (RFC 2177). Configured folder names use `/` as
the hierarchy separator; it is translated to the server's. Every failure of the server
or the connection is raised as `MailboxError` with a readable reason that never holds the
password.
"""

from __future__ import annotations

import imaplib
import socket
import ssl
from collections.abc import Callable
from typing import Any, TypeVar

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from app.config import ImapSecurity, ImapSettings
from app.tlsrpt.text import display

T = TypeVar("T")
# What a failing server or connection raises inside imapclient and imaplib.
_FAILURES = (IMAPClientError, imaplib.IMAP4.error, OSError, EOFError, ValueError)


class MailboxError(Exception):
    """The server refused or the connection failed; `reason` is fit for the log."""

    def __init__(self, reason: str, *, login: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.login = login


def tls_context(settings: ImapSettings) -> ssl.SSLContext:
    """The system's trust store plus the configured CA file; host names are checked."""
    context = ssl.create_default_context()
    if settings.ca_file is not None:
        context.load_verify_locations(cafile=str(settings.ca_file))
    return context


class Mailbox:
    """A logged-in connection with FOLDER selected. Not thread-safe: one caller at a time
    (only `abort` may be called from another thread, to end an IDLE wait)."""

    def __init__(self, settings: ImapSettings, *, use_move: bool = True) -> None:
        self.settings = settings
        self._password = ""
        self._client: IMAPClient | None = None
        self._use_move = use_move
        self._separator = "/"

    def open(self) -> None:
        """Connect, log in, create the done and invalid folders if missing, select FOLDER."""
        s = self.settings
        assert s.host is not None
        try:
            # Read on every connect: a rotated password file is picked up.
            self._password = s.secret()
        except OSError as exc:
            reason = f"TLSRPT_IMAP__PASSWORD_FILE unreadable: {exc}"
            raise MailboxError(reason, login=True) from None
        implicit = s.security is ImapSecurity.TLS
        self._client = self._guard(
            lambda: IMAPClient(
                s.host,
                port=s.effective_port,
                ssl=implicit,
                ssl_context=tls_context(s) if implicit else None,
                timeout=s.timeout_seconds,
            )
        )
        try:
            self._prepare()
        except BaseException:
            self._drop()
            raise

    def _prepare(self) -> None:
        s, client = self.settings, self._c
        if s.security is ImapSecurity.STARTTLS:
            self._guard(lambda: client.starttls(tls_context(s)))
        try:
            client.login(s.user or "", self._password)
        except _FAILURES as exc:
            reason = f"login as {s.user!r} refused: {self._reason(exc)}"
            raise MailboxError(reason, login=True) from None
        self._separator = self._guard(self._server_separator)
        for folder in (s.done_folder, s.invalid_folder):
            name = self._name(folder)
            if not self._guard(lambda n=name: client.folder_exists(n)):  # type: ignore[misc]
                self._guard(lambda n=name: client.create_folder(n))  # type: ignore[misc]
        self._guard(lambda: client.select_folder(self._name(s.folder)))

    @property
    def can_idle(self) -> bool:
        return self._client is not None and self._client.has_capability("IDLE")

    def waiting(self) -> list[int]:
        """UIDs in FOLDER, oldest first; those flagged \\Deleted are already handled."""
        # NOOP first: a server may report mail that arrived since SELECT only then.
        self._guard(self._c.noop)
        return sorted(self._guard(lambda: self._c.search(["UNDELETED"])))

    def size(self, uid: int) -> int | None:
        """RFC822.SIZE of one message; None when it is gone."""
        found = self._guard(lambda: self._c.fetch([uid], ["RFC822.SIZE"]))
        entry = found.get(uid)
        return None if entry is None else int(entry[b"RFC822.SIZE"])

    def fetch(self, uid: int) -> bytes | None:
        """The whole message, without setting \\Seen; None when it is gone."""
        found = self._guard(lambda: self._c.fetch([uid], ["BODY.PEEK[]"]))
        entry = found.get(uid)
        return None if entry is None else bytes(entry[b"BODY[]"])

    def move(self, uid: int, folder: str) -> None:
        """MOVE (RFC 6851); without it COPY, then \\Deleted and UID EXPUNGE (RFC 4315) of
        this one UID. Without UIDPLUS the copy stays flagged \\Deleted and is skipped."""
        client, target = self._c, self._name(folder)
        if self._use_move and client.has_capability("MOVE"):
            self._guard(lambda: client.move([uid], target))
            return
        self._guard(lambda: client.copy([uid], target))
        self._guard(lambda: client.add_flags([uid], [b"\\Deleted"], silent=True))
        if client.has_capability("UIDPLUS"):
            self._guard(lambda: client.uid_expunge([uid]))

    def idle(self, timeout: float) -> bool:
        """Wait in IDLE up to `timeout` seconds; True when the server said something."""
        client = self._c

        def wait() -> bool:
            client.idle()
            try:
                return bool(client.idle_check(timeout=timeout))
            finally:
                client.idle_done()

        return self._guard(wait)

    def close(self) -> None:
        """Log out politely; a connection already broken is just dropped."""
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.logout()
        except _FAILURES:
            self._client = client
            self._drop()

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.shutdown()
            except _FAILURES:
                pass

    def abort(self) -> None:
        """End the connection now, from any thread (wakes an IDLE wait)."""
        client = self._client
        if client is None:
            return
        try:
            client.socket().shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    @property
    def _c(self) -> IMAPClient:
        if self._client is None:
            raise MailboxError("not connected")
        return self._client

    def _server_separator(self) -> str:
        personal = self._c.namespace().personal
        separator = personal[0][1] if personal else None
        if isinstance(separator, bytes):
            separator = separator.decode()
        return separator or "/"

    def _name(self, folder: str) -> str:
        return folder.replace("/", self._separator)

    def _guard(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except _FAILURES as exc:
            raise MailboxError(self._reason(exc)) from None

    def _reason(self, exc: BaseException) -> str:
        text = " ".join(str(exc).split()) or type(exc).__name__
        if self._password:
            text = text.replace(self._password, "***")
        return display(f"{type(exc).__name__}: {text}", 300)


def describe(settings: ImapSettings) -> dict[str, Any]:
    """Where the mailbox is, for the log (never the password)."""
    return {
        "host": settings.host,
        "port": settings.effective_port,
        "security": settings.security.value,
        "user": settings.user,
        "folder": settings.folder,
    }
