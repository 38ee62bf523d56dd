"""The Falco gRPC outputs client against a real grpc.aio server speaking Falco's API."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from monitor.types import ChangeEvent, Decoded, DecodeError, FalcoAlert
from rules import load_catalogue
from streams.falco import decode_alert
from streams.falco_grpc import (
    PRIORITY_NAMES,
    FalcoGrpcSource,
    TlsFiles,
    decode_response,
    response_to_alert,
)
from streams.falco_pb import (
    outputs_pb2,
)
from tests.support.falco_grpc import FakeFalco, Servers, servers, to_response, wire
from tests.support.realdata import falco_alerts

__all__ = ["servers"]  # the fixture
pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[1]
SOURCE_FOR = load_catalogue().source_for
REAL: list[tuple[str, dict[str, Any]]] = list(falco_alerts())
# The one aws_cloudtrail alert captured verbatim from a real Falco 0.43.
REAL_CLOUDTRAIL = "tfdrift-falco_cloudtrail_source_alerts.jsonl:6"


# -- Driftline's side ------------------------------------------------------------------------


class Collector:
    """An on_items that keeps what it is handed and lets a test await a count."""

    def __init__(self) -> None:
        self.items: list[Decoded] = []
        self.batches: list[int] = []
        self.changed = asyncio.Condition()

    async def __call__(self, batch: list[Decoded]) -> None:
        async with self.changed:
            self.batches.append(len(batch))
            self.items.extend(batch)
            self.changed.notify_all()

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(20):
            async with self.changed:
                await self.changed.wait_for(lambda: len(self.items) >= count)


async def until(predicate: Callable[[], bool]) -> None:
    """Poll a status predicate (the source offers no event for it), bounded."""
    try:
        async with asyncio.timeout(20):
            while not predicate():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"still false after 20 s: {predicate}") from None


def fast(**overrides: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "backoff_initial": 0.02,
        "backoff_max": 0.1,
        "poll_interval": 0.02,
        "connect_timeout": 5.0,
        "source_for": SOURCE_FOR,
    }
    options.update(overrides)
    return options


# -- expectations from the real alerts -------------------------------------------------------


def expectation(alert: dict[str, Any], timed: bool) -> Decoded:
    """What decode_alert makes of the JSON alert (without a time no Timestamp could carry)."""
    doc = dict(alert)
    if not timed:
        doc.pop("time", None)
    try:
        return decode_alert(doc, SOURCE_FOR)
    except DecodeError as exc:
        return exc


def assert_same(got: Decoded, want: Decoded, alert: dict[str, Any], where: str) -> None:
    assert type(got) is type(want), where
    if isinstance(want, DecodeError):
        assert isinstance(got, DecodeError)
        assert got.reason == want.reason, where
    elif isinstance(want, FalcoAlert):
        assert isinstance(got, FalcoAlert)
        assert (got.rule, got.priority, got.severity, got.time) == (
            want.rule,
            want.priority,
            want.severity,
            want.time,
        ), where
        assert (got.hostname, got.tags) == (want.hostname, want.tags), where
        # Without field 9 the deprecated enum speaks, and its zero value is syscall.
        assert got.source == (want.source or "syscall"), where
        fields = alert.get("output_fields") or {}
        assert got.output_fields == {k: wire(v) for k, v in fields.items()}, where
    else:
        assert isinstance(got, ChangeEvent) and isinstance(want, ChangeEvent)
        assert (got.event_name, got.event_source, got.event_time, got.region) == (
            want.event_name,
            want.event_source,
            want.event_time,
            want.region,
        ), where
        assert got.account_id == want.account_id and got.actor.arn == want.actor.arn, where
        assert got.request == want.request, where


# -- tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sub", "get"])
async def test_real_alerts_arrive_decoded_and_in_order(servers: Servers, mode: str) -> None:
    converted = [to_response(alert) for _, alert in REAL]
    falco = FakeFalco(res for res, _ in converted)
    server, port = await servers.start("127.0.0.1:0", falco)
    collector = Collector()
    source = FalcoGrpcSource(
        f"127.0.0.1:{port}", collector, mode=mode, insecure=True, **fast(batch_max=7)
    )
    await source.start()
    try:
        await collector.wait_for(len(REAL))
    finally:
        await source.stop()
        await servers.stop(server)

    assert len(collector.items) == len(REAL)
    for (where, alert), (_, timed), got in zip(REAL, converted, collector.items, strict=True):
        assert_same(got, expectation(alert, timed), alert, where)
    assert all(size <= 7 for size in collector.batches) and len(collector.batches) >= 7

    change = collector.items[[where for where, _ in REAL].index(REAL_CLOUDTRAIL)]
    assert isinstance(change, ChangeEvent)
    assert change.event_name == "AuthorizeSecurityGroupIngress"
    assert change.event_source == "ec2.amazonaws.com"

    rejected = sum(isinstance(item, DecodeError) for item in collector.items)
    assert rejected >= 1  # the real alert with no time at all
    status = source.status()
    assert status["alerts_received"] == len(REAL)
    assert status["alerts_rejected"] == rejected
    assert status["alerts_delivered"] == len(REAL)
    assert status["batches"] == len(collector.batches)
    assert status["mode"] == mode and status["target"] == f"127.0.0.1:{port}"
    assert status["falco_version"]["version"] == "0.43.0"
    assert status["falco_version"]["engine_version"] == 55
    assert status["state"] == "stopped" and status["connected"] is False


async def test_unix_socket_streams_alerts_as_falco_raises_them(
    servers: Servers, tmp_path: Path
) -> None:
    falco = FakeFalco()
    server, _ = await servers.start(f"unix://{tmp_path}/falco.sock", falco)
    collector = Collector()
    source = FalcoGrpcSource(
        f"unix://{tmp_path}/falco.sock", collector, **fast(clock=lambda: "2026-01-02T03:04:05Z")
    )
    await source.start()
    try:
        await until(lambda: source.status()["connected"])
        status = source.status()
        assert status["connected_since"] == "2026-01-02T03:04:05Z"
        assert status["tls"] is False and status["reconnects"] == 0
        alerts = [to_response(alert)[0] for _, alert in REAL[:10]]
        falco.feed(alerts[:4])
        await collector.wait_for(4)
        falco.feed(alerts[4:])
        await collector.wait_for(10)
    finally:
        await source.stop()
        await servers.stop(server)
    rules = [item.rule for item in collector.items if isinstance(item, FalcoAlert)]
    assert rules == [alert["rule"] for _, alert in REAL[:10]]
    assert falco.requests >= 2  # sub is asked again after the first drain


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_ca(folder: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip


def _make_leaf(
    folder: Path, ca: str, name: str, usage: str, names: str = "DNS:localhost,IP:127.0.0.1"
) -> None:
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
        cwd=folder,
    )  # fmt: skip
    (folder / f"{name}.ext").write_text(
        f"subjectAltName={names}\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"
    )
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
        "-set_serial", str(abs(hash(name)) % 10**12), "-days", "2", "-out", f"{name}.crt",
        "-extfile", f"{name}.ext",
        cwd=folder,
    )  # fmt: skip


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    _make_ca(tmp_path, "ca")
    _make_leaf(tmp_path, "ca", "server", "serverAuth")
    _make_leaf(tmp_path, "ca", "client", "clientAuth")
    _make_ca(tmp_path, "rogue-ca")
    _make_leaf(tmp_path, "rogue-ca", "rogue-client", "clientAuth")
    _make_leaf(tmp_path, "ca", "named-server", "serverAuth", "DNS:falco.internal")
    return tmp_path


def _server_credentials(pki: Path, name: str = "server") -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials(
        [((pki / f"{name}.key").read_bytes(), (pki / f"{name}.crt").read_bytes())],
        root_certificates=(pki / "ca.crt").read_bytes(),
        require_client_auth=True,
    )


async def test_mutual_tls(servers: Servers, pki: Path) -> None:
    falco = FakeFalco(to_response(alert)[0] for _, alert in REAL[:5])
    server, port = await servers.start("127.0.0.1:0", falco, credentials=_server_credentials(pki))
    collector = Collector()
    tls = TlsFiles(pki / "ca.crt", pki / "client.crt", pki / "client.key")
    source = FalcoGrpcSource(f"127.0.0.1:{port}", collector, tls=tls, **fast())
    await source.start()
    try:
        await collector.wait_for(5)
        assert source.status()["connected"] and source.status()["tls"]
    finally:
        await source.stop()
        await servers.stop(server)
    assert [getattr(i, "rule", None) for i in collector.items] == [a["rule"] for _, a in REAL[:5]]


async def test_server_name_checks_a_certificate_issued_for_another_name(
    servers: Servers, pki: Path
) -> None:
    falco = FakeFalco(to_response(alert)[0] for _, alert in REAL[:2])
    server, port = await servers.start(
        "127.0.0.1:0", falco, credentials=_server_credentials(pki, "named-server")
    )
    tls = TlsFiles(pki / "ca.crt", pki / "client.crt", pki / "client.key")
    mismatched = FalcoGrpcSource(f"127.0.0.1:{port}", Collector(), tls=tls, **fast())
    collector = Collector()
    named = FalcoGrpcSource(
        f"127.0.0.1:{port}", collector, tls=tls, server_name="falco.internal", **fast()
    )
    await mismatched.start()
    try:
        await until(lambda: mismatched.status()["last_error"] is not None)
        assert not mismatched.status()["connected"]
    finally:
        await mismatched.stop()
    await named.start()
    try:
        await collector.wait_for(2)
    finally:
        await named.stop()
        await servers.stop(server)
    assert named.status()["reconnects"] == 0 and len(collector.items) == 2


@pytest.mark.parametrize(
    "files",
    [
        ("ca.crt", "rogue-client.crt", "rogue-client.key"),  # Falco does not trust the client
        ("rogue-ca.crt", "client.crt", "client.key"),  # the client does not trust Falco
    ],
)
async def test_mutual_tls_with_wrong_certificates_fails(
    servers: Servers, pki: Path, files: tuple[str, str, str]
) -> None:
    falco = FakeFalco(to_response(alert)[0] for _, alert in REAL[:5])
    server, port = await servers.start("127.0.0.1:0", falco, credentials=_server_credentials(pki))
    collector = Collector()
    tls = TlsFiles(*(pki / name for name in files))
    source = FalcoGrpcSource(f"127.0.0.1:{port}", collector, tls=tls, **fast())
    await source.start()
    try:
        await until(lambda: source.status()["last_error"] is not None)
        status = source.status()
    finally:
        await source.stop()
        await servers.stop(server)
    assert status["connected"] is False and status["connected_since"] is None
    assert "UNAVAILABLE" in status["last_error"]
    assert falco.requests == 0 and collector.items == []
    assert len(falco.queue) == 5


async def test_unreadable_tls_file_is_reported(tmp_path: Path) -> None:
    collector = Collector()
    tls = TlsFiles(tmp_path / "ca.crt", tmp_path / "client.crt", tmp_path / "client.key")
    source = FalcoGrpcSource("127.0.0.1:5060", collector, tls=tls, **fast())
    await source.start()
    try:
        await until(lambda: source.status()["last_error"] is not None)
    finally:
        await source.stop()
    assert source.status()["last_error"].startswith(f"cannot read TLS file {tmp_path}/ca.crt")


def test_tcp_without_tls_is_refused_unless_insecure() -> None:
    async def nowhere(batch: list[Decoded]) -> None:
        raise AssertionError("never called")

    with pytest.raises(ValueError, match="mutual TLS"):
        FalcoGrpcSource("falco.example:5060", nowhere)
    FalcoGrpcSource("falco.example:5060", nowhere, insecure=True)
    FalcoGrpcSource("unix:///run/falco/falco.sock", nowhere)
    with pytest.raises(ValueError, match="mode"):
        FalcoGrpcSource("unix:///run/falco/falco.sock", nowhere, mode="watch")  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["sub", "get"])
async def test_server_restart_reconnects_without_duplicates(servers: Servers, mode: str) -> None:
    alerts = [to_response(alert)[0] for _, alert in REAL[:30]]
    first_falco = FakeFalco(alerts[:12])
    first, port = await servers.start("127.0.0.1:0", first_falco)
    collector = Collector()
    source = FalcoGrpcSource(f"127.0.0.1:{port}", collector, mode=mode, insecure=True, **fast())
    await source.start()
    try:
        await collector.wait_for(12)
        await servers.stop(first)
        await until(lambda: not source.status()["connected"])
        assert source.status()["last_error"] is not None

        second_falco = FakeFalco(alerts[12:20])
        second, again = await servers.start(f"127.0.0.1:{port}", second_falco)
        assert again == port
        await collector.wait_for(20)
        second_falco.feed(alerts[20:])
        await collector.wait_for(30)
        status = source.status()
        await servers.stop(second)
    finally:
        await source.stop()
    assert status["connected"] is True and status["reconnects"] >= 1
    # Each server session handed out its alerts once: exactly 30 arrived, in Falco's order.
    assert len(collector.items) == 30 and status["alerts_received"] == 30
    assert [getattr(i, "rule", None) for i in collector.items] == [a.rule for a in alerts]


async def test_malformed_responses_are_counted_and_neighbours_arrive(servers: Servers) -> None:
    good = [to_response(alert)[0] for _, alert in REAL[:3]]
    no_rule = outputs_pb2.response()
    no_rule.CopyFrom(good[0])
    no_rule.rule = ""
    bad_priority = outputs_pb2.response()
    bad_priority.CopyFrom(good[1])
    bad_priority.priority = 42  # type: ignore[assignment]  # proto3 enums are open
    falco = FakeFalco([good[0], no_rule, good[1], bad_priority, good[2]])
    server, port = await servers.start("127.0.0.1:0", falco)
    collector = Collector()
    source = FalcoGrpcSource(f"127.0.0.1:{port}", collector, insecure=True, **fast())
    await source.start()
    try:
        await collector.wait_for(5)
    finally:
        await source.stop()
        await servers.stop(server)
    kinds = [type(item).__name__ for item in collector.items]
    assert kinds == ["FalcoAlert", "DecodeError", "FalcoAlert", "DecodeError", "FalcoAlert"]
    errors = [item for item in collector.items if isinstance(item, DecodeError)]
    assert [e.reason for e in errors] == ["not a Falco alert", "bad Falco alert"]
    assert "42" in errors[1].detail
    status = source.status()
    assert status["alerts_received"] == 5 and status["alerts_rejected"] == 2


async def test_missing_version_service_is_not_fatal(servers: Servers) -> None:
    falco = FakeFalco(to_response(alert)[0] for _, alert in REAL[:3])
    server, port = await servers.start("127.0.0.1:0", falco, version=False)
    collector = Collector()
    source = FalcoGrpcSource(f"127.0.0.1:{port}", collector, insecure=True, **fast())
    await source.start()
    try:
        await collector.wait_for(3)
        status = source.status()
    finally:
        await source.stop()
        await servers.stop(server)
    assert status["connected"] is True and status["falco_version"] is None


async def test_falco_without_grpc_output_is_named_and_backs_off(servers: Servers) -> None:
    server, port = await servers.start("127.0.0.1:0", None)  # a Falco with grpc_output off
    delays: list[float] = []
    retried = asyncio.Event()

    async def record(delay: float) -> None:
        delays.append(delay)
        if len(delays) == 4:
            retried.set()
        await asyncio.sleep(0)

    source = FalcoGrpcSource(
        f"127.0.0.1:{port}", Collector(), insecure=True, **fast(sleep=record, rand=lambda: 1.0)
    )
    await source.start()
    try:
        async with asyncio.timeout(20):
            await retried.wait()
        status = source.status()
    finally:
        await source.stop()
        await servers.stop(server)
    assert "UNIMPLEMENTED" in status["last_error"] and "grpc_output" in status["last_error"]
    # Connecting works every time, but the backoff still grows: 0.02, 0.04, 0.08, 0.1 (max).
    assert delays[:4] == pytest.approx([0.02, 0.04, 0.08, 0.1])


async def test_stop_while_disconnected_returns_promptly(tmp_path: Path) -> None:
    backing_off = asyncio.Event()

    async def sleep_forever(delay: float) -> None:
        backing_off.set()
        await asyncio.Event().wait()

    collector = Collector()
    source = FalcoGrpcSource(
        f"unix://{tmp_path}/no-falco-here.sock", collector, sleep=sleep_forever
    )
    await source.start()
    async with asyncio.timeout(20):
        await backing_off.wait()
    assert source.status()["state"] == "backoff"
    assert source.status()["last_error"] is not None
    async with asyncio.timeout(5):
        await source.stop()
    assert source.status()["state"] == "stopped" and collector.items == []


async def test_failed_hand_over_is_retried_not_lost(servers: Servers) -> None:
    falco = FakeFalco(to_response(alert)[0] for _, alert in REAL[:4])
    server, port = await servers.start("127.0.0.1:0", falco)
    collector = Collector()
    failures = 0

    async def flaky(batch: list[Decoded]) -> None:
        nonlocal failures
        if failures < 2:
            failures += 1
            raise RuntimeError("store is busy")
        await collector(batch)

    async def no_wait(delay: float) -> None:
        await asyncio.sleep(0)

    source = FalcoGrpcSource(
        f"127.0.0.1:{port}", flaky, insecure=True, **fast(batch_wait=0.2, sleep=no_wait)
    )
    await source.start()
    try:
        await collector.wait_for(4)
    finally:
        await source.stop()
        await servers.stop(server)
    assert [getattr(i, "rule", None) for i in collector.items] == [a["rule"] for _, a in REAL[:4]]
    assert source.status()["deliver_errors"] == 2


@pytest.mark.parametrize(("priority", "name"), [(n, name) for n, name in enumerate(PRIORITY_NAMES)])
def test_priorities_read_as_falco_writes_them(priority: int, name: str) -> None:
    res = outputs_pb2.response(rule="r", priority=priority)  # type: ignore[arg-type]
    res.time.FromJsonString("2024-05-06T07:08:09.123456789Z")
    doc = response_to_alert(res)
    assert doc["priority"] == name
    assert doc["time"] == "2024-05-06T07:08:09.123456789Z"
    item = decode_response(res)
    assert isinstance(item, FalcoAlert) and item.priority == name


@pytest.mark.parametrize(
    ("source", "legacy", "fields", "want"),
    [
        ("aws_cloudtrail", 0, {}, "aws_cloudtrail"),
        ("", 1, {}, "k8s_audit"),
        ("", 2, {}, "internal"),
        ("", 0, {}, "syscall"),
        ("", 0, {"ct.name": "RunInstances"}, None),
        ("k8s_audit", 0, {}, "k8s_audit"),
    ],
)
def test_source_from_field_nine_or_the_deprecated_enum(
    source: str, legacy: int, fields: dict[str, str], want: str | None
) -> None:
    res = outputs_pb2.response(rule="r", source=source, output_fields=fields)
    res.source_deprecated = legacy  # type: ignore[assignment]
    assert response_to_alert(res).get("source") == want


def test_stubs_match_the_proto_files() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "streams.falco_pb.generate", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
