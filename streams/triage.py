"""Read-only triage: which records need decoding on the event loop at all.

Most of a CloudTrail stream is read-only calls (Describe*, Get*, List*: about 80% of the
real invictus logs), and a read-only or failed read-only call can never be drift nor is it
stored. The Kafka fetch worker (`streams.kafka_worker`) parses each record it fetches and
gives it one code: decode it on the loop (DECODE), or it is one read-only change (READ_ONLY)
or one failed read-only change (FAILED). Only DECODE records reach the loop's decoder; the
others become `SkippedChange` items, counted exactly as the detector would have counted
them. A record that cannot be judged (bad JSON, several records, anything not a single
read-only change) is DECODE, so errors and poison records are found on the loop as before.
"""

from __future__ import annotations

from collections.abc import Sequence

from monitor.types import ChangeEvent, Decoded, SkippedChange, SkipReason

DECODE, READ_ONLY, FAILED = 0, 1, 2
SKIPPED = {READ_ONLY: SkippedChange(SkipReason.READ_ONLY), FAILED: SkippedChange(SkipReason.FAILED)}


def judge(items: Sequence[Decoded]) -> int:
    """The code for what one record value decodes to (what the loop would conclude)."""
    if len(items) != 1:
        return DECODE
    first = items[0]
    if type(first) is not ChangeEvent:
        return DECODE
    if first.read_only is not True:
        return DECODE
    return FAILED if first.error_code else READ_ONLY
