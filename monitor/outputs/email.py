"""The email output: one message per drift over SMTP, STARTTLS before any login or content.

The stdlib client runs in a worker thread: a sender makes one attempt at a time, so a
blocking client costs no concurrency, and it needs no new dependency. The connection is
kept between messages and reopened after any failure.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any
from urllib.parse import urlsplit

import orjson

from monitor.outputs.render import TITLES, actor_name, drift_link
from monitor.outputs.spec import OutputSpec
from monitor.outputs.transport import Outcome
from monitor.store import Delivery

SMTP_PORT = 587  # submission: STARTTLS, then login


def message(spec: OutputSpec, d: Delivery, now: float, link_base: str | None) -> EmailMessage:
    """The mail for one delivery: a one-line subject, a readable body and the drift as JSON."""
    p: dict[str, Any] = orjson.loads(d.body)
    msg = EmailMessage()
    if d.event == "state":
        subject = f"Terraform state changed: {p.get('resource_count', '?')} resources"
        lines = [subject]
    else:
        severity = str(p.get("severity") or "unknown")
        resource = p.get("resource_address") or f"{p.get('resource_type')} {p.get('resource_id')}"
        subject = f"{TITLES.get(d.event, 'Drift')}: {severity.upper()} {resource}"
        lines = [
            subject,
            "",
            f"Severity: {severity}",
            f"Resource: {resource}",
            f"Change:   {p.get('field') or '(resource)'}: "
            f"{orjson.dumps(p.get('old_value')).decode()} -> "
            f"{orjson.dumps(p.get('new_value')).decode()}",
            f"Actor:    {actor_name(p)}",
            f"Time:     {p.get('event_time') or d.ts}",
            f"Status:   {p.get('status') or '-'}",
        ]
        link = drift_link(link_base, p)
        if link:
            lines += ["", link]
    lines += ["", "-- the drift as JSON --", orjson.dumps(p, option=orjson.OPT_INDENT_2).decode()]
    msg["Subject"] = f"[Driftline] {subject}"[:250]
    msg["From"] = spec.mail_from or ""
    msg["To"] = ", ".join(spec.mail_to)
    msg["Date"] = formatdate(now, usegmt=True)
    # The same on every retry of one delivery, so a mail system or reader can deduplicate.
    msg["Message-ID"] = f"<driftline.{spec.id}.{d.id}@{_domain(spec.mail_from)}>"
    msg["Driftline-Delivery-Id"] = str(d.id)
    msg["Driftline-Event"] = d.event
    msg.set_content("\n".join(lines) + "\n")
    return msg


def _domain(address: str | None) -> str:
    return (address or "driftline@localhost").rpartition("@")[2]


class EmailTransport:
    """SMTP with STARTTLS (verified against the system CAs or `ca_file`) and optional login."""

    def __init__(self, link_base: str | None) -> None:
        self.link_base = link_base
        self._smtp: smtplib.SMTP | None = None
        self._for: OutputSpec | None = None

    async def send(self, spec: OutputSpec, d: Delivery, now: float) -> Outcome:
        msg = message(spec, d, now, self.link_base)
        try:
            await asyncio.to_thread(self._send, spec, msg)
        except (smtplib.SMTPException, OSError, ValueError) as exc:
            await self.close()
            return Outcome(False, f"SMTP: {type(exc).__name__}: {_reason(exc)}")
        return Outcome(True)

    def _send(self, spec: OutputSpec, msg: EmailMessage) -> None:
        if self._smtp is not None and self._for is spec:
            try:
                self._smtp.send_message(msg)
                return
            except TimeoutError:
                raise
            except (smtplib.SMTPServerDisconnected, ConnectionError):
                # Servers drop idle connections: a kept one that went away is no failure.
                self._smtp = None
        self._close()
        self._smtp, self._for = self._connect(spec), spec
        self._smtp.send_message(msg)

    @staticmethod
    def _connect(spec: OutputSpec) -> smtplib.SMTP:
        parts = urlsplit(spec.url)
        # Given the host here (not to connect()), smtplib checks the certificate against it.
        smtp = smtplib.SMTP(
            parts.hostname or "", parts.port or SMTP_PORT, timeout=spec.timeout_seconds
        )
        try:
            if spec.starttls:
                smtp.starttls(context=ssl.create_default_context(cafile=spec.ca_file))
            if spec.username is not None:
                smtp.login(spec.username, spec.password or "")
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _close(self) -> None:
        smtp, self._smtp, self._for = self._smtp, None, None
        if smtp is not None:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()

    async def close(self) -> None:
        await asyncio.to_thread(self._close)


def _reason(exc: BaseException) -> str:
    """The server's answer or the socket error; never the login (smtplib does not echo it)."""
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error
        text = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
        return f"{exc.smtp_code} {text}"[:300]
    return str(exc)[:300]
