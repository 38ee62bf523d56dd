"""Correlation keys (actor, source IP, resource/host/container) and the recent-items index.

A Falco alert is `related` to an event or drift that shares a key with it within the window.
Keys are namespaced strings: `actor:<arn or name>`, `ip:<address>`, `res:<id>` (a resource id,
an EC2 instance id, a host name, a container or pod); `via` names the kind of match.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from graph.model import DriftNode, EventNode
from monitor.types import FalcoAlert

Key = tuple[str, str]  # (key, via)

# Output fields that name who, from where, or what/where (-> key namespace and `via`).
FIELDS: dict[str, tuple[str, str]] = {
    "ka.user.name": ("actor:", "actor"),
    "ct.user": ("actor:", "actor"),
    "ct.user.arn": ("actor:", "actor"),
    "gcp.principalEmail": ("actor:", "actor"),
    "gcp.authenticationInfo.principalEmail": ("actor:", "actor"),
    "azure.principalName": ("actor:", "actor"),
    "fd.rip": ("ip:", "ip"),
    "fd.cip": ("ip:", "ip"),
    "fd.sip": ("ip:", "ip"),
    "ct.srcip": ("ip:", "ip"),
    "gcp.callerIp": ("ip:", "ip"),
    "ka.sourceips": ("ip:", "ip"),
    "container.id": ("res:", "container"),
    "k8s.pod.name": ("res:", "container"),
    "ka.target.name": ("res:", "resource"),
    "gcp.resourceName": ("res:", "resource"),
    "ct.request.instanceid": ("res:", "resource"),
}
_NA = ("", "<NA>", "host", "None")
MAX_ALERT_KEYS = 12


def is_ip(value: str | None) -> bool:
    """A source IP address, not `ec2.amazonaws.com` or `AWS Internal` (cheap, no parsing:
    anonymised datasets write octets with leading zeros that strict parsers refuse)."""
    if not value:
        return False
    return (value[0].isdigit() or ":" in value) and not value.endswith(".com")


def _instance_of_host(host: str) -> str | None:
    """`i-0abc...` from an EC2 resource-based host name (`i-0abc.ec2.internal`)."""
    if host.startswith("i-"):
        head = host.split(".", 1)[0]
        if len(head) > 3:
            return head
    return None


def event_keys(ev: EventNode) -> tuple[Key, ...]:
    a = ev.actor
    keys: list[Key] = []
    if a.arn:
        keys.append(("actor:" + a.arn, "actor"))
    name = a.user_name
    if name and name != a.arn:
        keys.append(("actor:" + name, "actor"))
        if name.startswith("i-"):
            # An instance's role session is named after the instance: the call came from it.
            keys.append(("res:" + name, "host"))
    ip = ev.source_ip
    if ip and is_ip(ip):
        keys.append(("ip:" + ip, "ip"))
    return tuple(keys)


def drift_keys(d: DriftNode) -> tuple[Key, ...]:
    return (("res:" + d.resource_id, "resource"),)


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, bool)):
        return None
    text = value if isinstance(value, str) else str(value)
    return None if text in _NA else text


def _ips(value: Any) -> Iterator[str]:
    if isinstance(value, list):
        for v in value:
            yield from _ips(v)
        return
    text = _text(value)
    if text is None:
        return
    for part in text.strip("[]").split(","):
        part = part.strip().strip("\"'")
        if is_ip(part):
            yield part


def alert_keys(alert: FalcoAlert) -> tuple[Key, ...]:
    """Keys of a runtime alert (Linux `user.name` is deliberately not an actor: `root` on a
    host is not the `root` of a cloud account)."""
    keys: dict[str, str] = {}
    host = alert.hostname
    if host and host not in _NA:
        keys["res:" + host] = "host"
        instance = _instance_of_host(host)
        if instance:
            keys.setdefault("res:" + instance, "host")
    for name, value in alert.output_fields.items():
        kind = FIELDS.get(name)
        if kind is None:
            continue
        prefix, via = kind
        if prefix == "ip:":
            for ip in _ips(value):
                keys.setdefault("ip:" + ip, via)
        else:
            text = _text(value)
            if text:
                keys.setdefault(prefix + text, via)
    return tuple(keys.items())[:MAX_ALERT_KEYS]


class KeyIndex:
    """Recent (time, node id) per key, newest last; bounded per key, emptied keys dropped.

    Lists, not deques: most keys hold one or two entries, and an empty deque alone costs
    more than half a kilobyte.
    """

    __slots__ = ("by_key", "per_key")

    def __init__(self, per_key: int) -> None:
        self.per_key = per_key
        self.by_key: dict[str, list[tuple[float, str]]] = {}

    def __len__(self) -> int:
        return len(self.by_key)

    def add(self, key: str, ts: float, nid: str) -> None:
        q = self.by_key.get(key)
        if q is None:
            self.by_key[key] = [(ts, nid)]
            return
        q.append((ts, nid))
        if len(q) > self.per_key:
            del q[0]

    def near(self, key: str, ts: float, window: float, limit: int) -> list[str]:
        """Up to `limit` ids seen under `key` within `window` seconds of `ts`, newest first.

        The scan stops at the first entry older than the window: entries arrive roughly in
        time order, so what lies further back is older still.
        """
        q = self.by_key.get(key)
        if not q:
            return []
        lo, hi = ts - window, ts + window
        out: list[str] = []
        for t, nid in reversed(q):
            if t < lo:
                break
            if t <= hi:
                out.append(nid)
                if len(out) >= limit:
                    break
        return out

    def discard(self, key: str, ts: float, nid: str) -> None:
        q = self.by_key.get(key)
        if q is None:
            return
        entry = (ts, nid)
        first = q[0]
        if first == entry:
            del q[0]  # items age out oldest first, so this is the usual case
        elif ts < first[0]:
            return  # older than anything kept: newer items already pushed it out
        else:
            with contextlib.suppress(ValueError):
                q.remove(entry)
        if not q:
            del self.by_key[key]
