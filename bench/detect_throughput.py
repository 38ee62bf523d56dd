"""Detection throughput vs a bare orjson.loads loop over the same records.

python -m bench.detect_throughput [--records 1000000] [--resources 10000] [--rounds 2]
    [--noise 1000]

Printed: the best round of each by wall time and by this process's CPU time (which other load
on a shared machine moves far less than wall time), and both ratios (target >= 0.5).
With --noise N the same records are also judged by a detector holding N suppressions and N
custom rules (noise control), and its rate is printed against the one with none.
"""

from __future__ import annotations

import argparse
import gc
import time

import orjson

from monitor.detect import Detector
from monitor.noise import CustomRule, Noise, NoiseRules, Suppression
from streams.cloudtrail import decode_record
from tests.support.realdata import cloudtrail_records
from tests.support.replay_state import bench_detector


def amplified(records: list[dict], total: int) -> list[bytes]:
    """`total` serialised records cycling through `records`, each with its own eventID."""
    base = [orjson.dumps(r) for r in records]
    ids = [r["eventID"].encode() for r in records]
    out: list[bytes] = []
    n = 0
    while len(out) < total:
        for raw, eid in zip(base, ids, strict=True):
            if len(out) >= total:
                break
            out.append(raw.replace(eid, b"%s-%07d" % (eid[:28], n), 1))
            n += 1
    return out


def bare(data: list[bytes]) -> tuple[float, float]:
    """Wall and CPU seconds of the loop."""
    loads = orjson.loads
    start, cpu = time.perf_counter(), time.process_time()
    for raw in data:
        loads(raw)
    return time.perf_counter() - start, time.process_time() - cpu


def detect(data: list[bytes], detector: Detector) -> tuple[float, float, int]:
    """Wall and CPU seconds of the loop, and the drifts found."""
    loads, decode, judge = orjson.loads, decode_record, detector.detect
    drifts = 0
    start, cpu = time.perf_counter(), time.process_time()
    for raw in data:
        drifts += len(judge(decode(loads(raw))).drifts)
    return time.perf_counter() - start, time.process_time() - cpu, drifts


def noisy(detector: Detector, n: int) -> Detector:
    """The same detector with `n` suppressions and `n` custom rules of the kinds people write:
    mostly about things this data never touches, a few about resources and calls it does."""
    resources = detector.index.resources
    names = sorted({r.event_name for r in detector.catalogue.rules.values()})
    meta = {"created_by": "bench", "created_at": "2026-01-01T00:00:00.000Z"}
    sups, rules = [], []
    for i in range(n):
        form = i % 5
        if form == 0:  # a real resource, one in five of these
            inst = resources[(i * 7919) % len(resources)]
            rid = inst.resource_id if i % 25 == 0 else f"{inst.resource_id}-gone-{i}"
            match = {"resource_id": rid}
        elif form == 1:
            match = {"actor": f"user-{i}@example.com"}
        elif form == 2:
            match = {"event_name": f"Custom{i}", "resource_type": "aws_s3_bucket"}
        elif form == 3:
            match = {"resource_address": f"module.m{i}.aws_instance.x", "field": "tags"}
        else:
            match = {"account": f"{i:012d}", "region": "eu-*"}
        sups.append(Suppression.of({"id": f"s{i}", "match": match, "reason": "bench", **meta}))
        form = i % 4
        if form == 0:  # a real call: these rate some drifts
            rmatch = {"event_name": names[(i * 31) % len(names)]}
        elif form == 1:
            rmatch = {"resource_type": f"aws_type_{i}"}
        elif form == 2:
            rmatch = {"tag": f"team=t{i}"}
        else:
            rmatch = {"account": f"{i:012d}", "event_name": "Put*"}
        rules.append(CustomRule.of({"id": f"r{i}", "match": rmatch, "severity": "high", **meta}))
    noise = Noise(NoiseRules(suppressions=tuple(sups), custom_rules=tuple(rules)))
    return Detector(
        detector.catalogue, detector.severity, detector.index, (), detector.clock, noise
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--resources", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--noise", type=int, default=0, help="suppressions and custom rules")
    args = ap.parse_args()

    detector, replayed = bench_detector(args.resources)
    catalogue, index = detector.catalogue, detector.index
    records = cloudtrail_records("invictus_aws_dataset")
    print(f"state: {len(index):,} resources ({replayed} replayed from Terraform's calls)")
    data = amplified(records, args.records)
    mb = sum(map(len, data)) / 1e6
    print(f"records: {len(data):,} ({mb:,.0f} MB), catalogue: {len(catalogue):,} event names")

    gc.collect()
    gc.freeze()
    loud = noisy(detector, args.noise) if args.noise else None
    best_bare = best_detect = best_noise = cpu_bare = cpu_detect = float("inf")
    drifts = noise_drifts = 0
    for r in range(args.rounds):
        t_bare, c_bare = bare(data)
        t_det, c_det, drifts = detect(data, detector)
        best_bare, best_detect = min(best_bare, t_bare), min(best_detect, t_det)
        cpu_bare, cpu_detect = min(cpu_bare, c_bare), min(cpu_detect, c_det)
        line = (
            f"round {r + 1}: bare {len(data) / t_bare:,.0f} rec/s, detect {len(data) / t_det:,.0f}"
        )
        if loud is not None:
            t_noise, _, noise_drifts = detect(data, loud)
            best_noise = min(best_noise, t_noise)
            line += f", with noise rules {len(data) / t_noise:,.0f}"
        print(line + " rec/s")
    bare_rate, det_rate = len(data) / best_bare, len(data) / best_detect
    print(f"bare orjson.loads : {bare_rate:12,.0f} records/s")
    print(f"decode + detect   : {det_rate:12,.0f} records/s  ({drifts:,} drifts)")
    print(f"ratio detect/bare : {det_rate / bare_rate:.3f}  (wall time; target >= 0.5)")
    print(f"ratio by CPU time : {cpu_bare / cpu_detect:.3f}  (this process's CPU seconds)")
    if loud is not None:
        noise_rate = len(data) / best_noise
        held = rated = 0
        for raw in data[:50_000]:  # outside the timing: what the rules did to the drifts
            for d in loud.detect(decode_record(orjson.loads(raw))).drifts:
                held += d.suppressed_by is not None
                rated += d.severity == "high"
        print(
            f"with {args.noise:,} suppressions + {args.noise:,} custom rules: "
            f"{noise_rate:12,.0f} records/s  ({noise_drifts:,} drifts; in the first 50,000 "
            f"records {held:,} suppressed, {rated:,} rated high)"
        )
        print(f"ratio noise/none  : {noise_rate / det_rate:.3f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
