"""The format registry: a topic's or endpoint's format name to its document decoder."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any, cast

from monitor.types import Decoded, DecodeError
from streams.decode import decode_document
from streams.falco import SourceFor, no_source

FORMATS = ("cloudtrail", "falco", "k8s_audit", "gcp_audit", "azure_activity", "auto")
# Formats whose decoders live in their own modules, imported on first use.
_LAZY_DECODERS: dict[str, str] = {
    "k8s_audit": "streams.k8s_audit",
    "gcp_audit": "streams.gcp_audit",
    "azure_activity": "streams.azure_activity",
}

DocDecoder = Callable[[Any], Iterable[Decoded]]


def decoder_for(
    fmt: str, source_for: SourceFor = no_source, cluster: str | None = None
) -> DocDecoder:
    """The document decoder for a format, imported on first use.

    `source_for` names a Falco alert's rule source (cloudtrail, falco, auto); `cluster`
    names the cluster Kubernetes audit events come from. A format whose decoder module is
    not installed gets a decoder that rejects every document with `decoder missing`.
    """
    if fmt not in _LAZY_DECODERS:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r} (one of {FORMATS})")

        def decode(doc: Any) -> Iterable[Decoded]:
            return decode_document(doc, source_for)

        return decode
    module_name, name = _LAZY_DECODERS[fmt], f"decode_{fmt}"
    try:
        func = getattr(importlib.import_module(module_name), name, None)
    except ImportError:
        func = None
    if callable(func):
        if fmt == "k8s_audit" and cluster is not None:
            k8s = func

            def decode_k8s(doc: Any) -> Iterable[Decoded]:
                return cast(Iterable[Decoded], k8s(doc, cluster))

            return decode_k8s
        return cast(DocDecoder, func)
    missing = DecodeError("decoder missing", f"{module_name}.{name} is not available")

    def reject(doc: Any) -> Iterable[Decoded]:
        return (missing,)

    return reject
