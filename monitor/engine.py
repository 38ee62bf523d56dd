"""Assembling a Detector from state sources and rule files (shared by `detect` and `serve`)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from monitor.clock import utc_now
from monitor.detect import Detector
from monitor.statesrc import StateSources, parse_source
from monitor.tfstate import StateIndex, TfState
from monitor.types import Clock
from rules.catalogue import Catalogue, load_catalogue
from rules.severity import SeverityRules, load_severity


def load_rules(severity_path: str | Path | None = None) -> tuple[Catalogue, SeverityRules]:
    catalogue = load_catalogue()
    severity = load_severity(Path(severity_path) if severity_path else None)
    return catalogue, severity


def build_index(states: Iterable[TfState], catalogue: Catalogue) -> StateIndex:
    return StateIndex(states, catalogue.identifiers)


def build_detector(
    state_urls: Iterable[str | Path],
    severity_path: str | Path | None = None,
    apply_principals: Iterable[str] = (),
    clock: Clock = utc_now,
) -> Detector:
    catalogue, severity = load_rules(severity_path)
    states = StateSources(parse_source(str(u)) for u in state_urls).load()
    index = build_index(states, catalogue)
    return Detector(catalogue, severity, index, apply_principals, clock)
