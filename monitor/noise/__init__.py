"""Noise control: suppressions, custom and disabled rules, apply principals, `.driftignore`.

`NoiseRules` is one immutable snapshot of all of them, indexed for detection; `Noise` holds
the current snapshot, which the API replaces whole so a detection never sees half a change.
"""

from monitor.noise.driftignore import (
    DriftIgnore,
    IgnoreFileError,
    IgnoreFileWatch,
    load_driftignore,
    parse_driftignore,
)
from monitor.noise.match import MATCH_KEYS, Match, MatchError, MatchIndex, parse_match
from monitor.noise.rules import (
    CustomRule,
    DisabledRule,
    Noise,
    NoiseRules,
    Suppression,
    UnmanagedScope,
)

__all__ = [
    "MATCH_KEYS",
    "CustomRule",
    "DisabledRule",
    "DriftIgnore",
    "IgnoreFileError",
    "IgnoreFileWatch",
    "Match",
    "MatchError",
    "MatchIndex",
    "Noise",
    "NoiseRules",
    "Suppression",
    "UnmanagedScope",
    "load_driftignore",
    "parse_driftignore",
    "parse_match",
]
