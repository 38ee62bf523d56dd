"""The email output against a real SMTP server (aiosmtpd on 127.0.0.1): STARTTLS with a
self-signed certificate made in the test, a login, one message per drift, a certificate that
does not verify, and the password never shown."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.app.config import Config
from tests.support.asgi import in_memory
from tests.support.live import wait_until
from tests.support.records import DEMO_STATE, resize
from tests.support.smtp_server import SmtpServer, smtp_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
CLOUDTRAIL = "/api/v1/ingest/cloudtrail"
PASSWORD = "smtp-pa55word-never-shown"
FAST = {"backoff_seconds": 0.01, "max_backoff_seconds": 0.05, "timeout_seconds": 5}


def _config(tmp_path: Path) -> Config:
    return Config(state=[DEMO_STATE], data_dir=str(tmp_path / "data"), state_poll_seconds=60)


def _email(smtp: SmtpServer, **over: Any) -> dict[str, Any]:
    return {
        "name": "mail",
        "type": "email",
        "url": smtp.url,
        "from": "driftline@example.com",
        "to": ["oncall@example.com", "sec@example.com"],
        "username": smtp.username,
        "password": smtp.password,
        "ca_file": str(smtp.cert),
        "events": ["new", "update"],
        **FAST,
    } | over


async def test_one_mail_per_drift_over_starttls_with_login(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="driftline")
    with smtp_server(tmp_path, password=PASSWORD) as smtp:
        async with in_memory(_config(tmp_path)) as srv:
            created = await srv.client.post("/api/v1/outputs", json=_email(smtp))
            assert created.status_code == 201, created.text
            output_id = created.json()["data"]["id"]
            for i in range(3):
                r = await srv.client.post(
                    CLOUDTRAIL, content=orjson.dumps(resize(f"e-{i}", f"m{i}.x"))
                )
                assert r.status_code == 202
            await wait_until(lambda: len(smtp.mails) >= 3, "three mails")
            view = (await srv.client.get(f"/api/v1/outputs/{output_id}")).json()["data"]
            audit = (await srv.client.get("/api/v1/audit-log")).text
            stats = srv.daemon.outputs.senders[output_id].stats
        for mail in smtp.mails:
            assert mail.tls and mail.login == smtp.username
            assert mail.sender == "driftline@example.com"
            assert mail.recipients == ["oncall@example.com", "sec@example.com"]
            assert mail.message["Subject"].startswith("[Driftline] New drift: ")
            assert "aws_instance" in mail.message["Subject"]
            assert "instance_type" in mail.message.get_content()
        ids = [int(m.message["Driftline-Delivery-Id"]) for m in smtp.mails]
        assert ids == sorted(ids) and len(set(ids)) == 3
        assert len({m.message["Message-ID"] for m in smtp.mails}) == 3
        assert stats.delivered == 3 and stats.failed_attempts == 0
        assert view["secret_set"] is True and view["to"] == _email(smtp)["to"]
        ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("driftline"))
        for text in (orjson.dumps(view).decode(), audit, ours):
            assert PASSWORD not in text


async def test_a_certificate_that_does_not_verify_sends_nothing(tmp_path: Path) -> None:
    with smtp_server(tmp_path, password=PASSWORD) as smtp:
        async with in_memory(_config(tmp_path)) as srv:
            # No ca_file: the system CAs do not know the self-signed certificate.
            body = _email(smtp)
            del body["ca_file"]
            created = await srv.client.post("/api/v1/outputs", json=body)
            output_id = created.json()["data"]["id"]
            r = await srv.client.post(f"/api/v1/outputs/{output_id}/test")
            result = r.json()["data"]
            # With the right CA the same output's test mail goes through.
            fixed = {"ca_file": str(smtp.cert)}
            assert (await srv.client.patch(f"/api/v1/outputs/{output_id}", json=fixed)).is_success
            ok = (await srv.client.post(f"/api/v1/outputs/{output_id}/test")).json()["data"]
        assert result["delivered"] is False and "CERTIFICATE_VERIFY_FAILED" in result["error"]
        assert PASSWORD not in orjson.dumps(result).decode()
        assert smtp.logins == [(smtp.username, PASSWORD)]  # only after the verified STARTTLS
        assert ok == {"delivered": True, "status": None, "error": None}
        assert len(smtp.mails) == 1 and smtp.mails[0].tls


async def test_a_wrong_password_is_retried_then_dead(tmp_path: Path) -> None:
    with smtp_server(tmp_path, password=PASSWORD) as smtp:
        async with in_memory(_config(tmp_path)) as srv:
            body = _email(smtp, password="wrong-one", max_attempts=2)
            output_id = (await srv.client.post("/api/v1/outputs", json=body)).json()["data"]["id"]
            r = await srv.client.post(CLOUDTRAIL, content=orjson.dumps(resize("e-1", "m5.x")))
            assert r.status_code == 202
            store = srv.daemon.store
            await wait_until(lambda: store.delivery_counts(output_id)["dead"] == 1, "dead")
            url = f"/api/v1/outputs/{output_id}/deliveries"
            found = (await srv.client.get(url)).json()["data"]["deliveries"]
        assert found and found[0]["attempts"] == 2 and "535" in found[0]["last_error"]
        assert "wrong-one" not in found[0]["last_error"] and not smtp.mails


async def test_a_connection_the_server_dropped_is_reopened_without_a_failure(
    tmp_path: Path,
) -> None:
    with smtp_server(tmp_path, password=PASSWORD) as smtp:
        async with in_memory(_config(tmp_path)) as srv:
            created = await srv.client.post("/api/v1/outputs", json=_email(smtp))
            stats = srv.daemon.outputs.senders[created.json()["data"]["id"]].stats
            r = await srv.client.post(CLOUDTRAIL, content=orjson.dumps(resize("e-0", "m0.x")))
            assert r.status_code == 202
            await wait_until(lambda: stats.delivered == 1, "the first mail")
            smtp.drop_connections()
            closed = smtp.transports
            await wait_until(lambda: all(t.is_closing() for t in closed), "the server's close")
            r = await srv.client.post(CLOUDTRAIL, content=orjson.dumps(resize("e-1", "m1.x")))
            await wait_until(lambda: stats.delivered == 2, "the second mail")
        assert stats.failed_attempts == 0 and len(smtp.logins) == 2
