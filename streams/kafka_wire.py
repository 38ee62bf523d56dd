"""The fetch worker's pipe protocol: frames, and the batches of records they carry.

Frames (both directions): `<I length><kind byte><payload>`.
- parent -> worker: `C` config (JSON, first frame; it holds credentials, so it is never put
  on the command line), `A` assign (JSON list of [topic, partition, offset, epoch]; replaces
  the whole assignment), `S` seek (JSON [topic, partition, offset, epoch]).
- worker -> parent: `B` batch (`<I header length>`, a JSON header, then the bytes: per
  partition its codes, then the key and value of each DECODE record), `H` highwater marks
  only (JSON), `E` an error message (UTF-8).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from streams.triage import DECODE

_LEN = struct.Struct("<I")
_NONE = -1  # the length of a missing key or value


class Record(NamedTuple):
    """What the loop needs of one record: decoding it and dead-lettering it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(slots=True)
class Part:
    """One partition's records from one poll.

    `codes` holds one triage code per record (None: decode every record); `msgs` holds the
    records to decode, in offset order (all of them when `codes` is None, else only those
    whose code is DECODE).
    """

    topic: str
    partition: int
    epoch: int
    first: int
    last: int
    count: int
    codes: bytes | None
    msgs: Sequence[Any]


def frame(kind: bytes, payload: bytes) -> bytes:
    return _LEN.pack(len(payload) + 1) + kind + payload


def _blob(data: bytes | None) -> tuple[int, bytes]:
    return (_NONE, b"") if data is None else (len(data), data)


Highwater = list[tuple[str, int, int]]  # (topic, partition, log end offset)


def encode_batch(
    parts: Iterable[tuple[str, int, int, Sequence[Any], bytes]], highwater: Highwater
) -> bytes:
    """A `B` frame: per partition (topic, partition, epoch, records, codes)."""
    header: list[Any] = []
    chunks: list[bytes] = []
    for topic, partition, epoch, msgs, codes in parts:
        offsets: list[int] = []
        klens: list[int] = []
        vlens: list[int] = []
        chunks.append(codes)
        for msg, code in zip(msgs, codes, strict=True):
            if code != DECODE:
                continue
            offsets.append(msg.offset)
            klen, key = _blob(msg.key)
            vlen, value = _blob(msg.value)
            klens.append(klen)
            vlens.append(vlen)
            chunks.append(key)
            chunks.append(value)
        first, last = msgs[0].offset, msgs[-1].offset
        header.append([topic, partition, epoch, first, last, len(msgs), offsets, klens, vlens])
    head = orjson.dumps({"parts": header, "high": highwater})
    return frame(b"B", _LEN.pack(len(head)) + head + b"".join(chunks))


def decode_batch(payload: bytes) -> tuple[list[Part], Highwater]:
    """The parts and highwater marks of a `B` frame's payload."""
    (hlen,) = _LEN.unpack_from(payload)
    head = orjson.loads(payload[4 : 4 + hlen])
    pos = 4 + hlen
    parts: list[Part] = []
    for topic, partition, epoch, first, last, count, offsets, klens, vlens in head["parts"]:
        codes = payload[pos : pos + count]
        pos += count
        msgs: list[Record] = []
        for offset, klen, vlen in zip(offsets, klens, vlens, strict=True):
            key = None
            if klen != _NONE:
                key = payload[pos : pos + klen]
                pos += klen
            value = None
            if vlen != _NONE:
                value = payload[pos : pos + vlen]
                pos += vlen
            msgs.append(Record(topic, partition, offset, key, value))
        parts.append(Part(topic, partition, epoch, first, last, count, codes, msgs))
    return parts, head["high"]


async def read_frame(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    try:
        (n,) = _LEN.unpack(await reader.readexactly(_LEN.size))
        data = await reader.readexactly(n)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    return data[:1], data[1:]
