"""Detection throughput vs a bare orjson.loads loop over the same records.

python -m bench.detect_throughput [--records 1000000] [--resources 10000] [--rounds 2]

Printed: the best round of each by wall time and by this process's CPU time (which other load
on a shared machine moves far less than wall time), and both ratios (target >= 0.5).
"""

from __future__ import annotations

import argparse
import gc
import time

import orjson

from monitor.detect import Detector
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--resources", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=2)
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
    best_bare = best_detect = cpu_bare = cpu_detect = float("inf")
    drifts = 0
    for r in range(args.rounds):
        t_bare, c_bare = bare(data)
        t_det, c_det, drifts = detect(data, detector)
        best_bare, best_detect = min(best_bare, t_bare), min(best_detect, t_det)
        cpu_bare, cpu_detect = min(cpu_bare, c_bare), min(cpu_detect, c_det)
        print(
            f"round {r + 1}: bare {len(data) / t_bare:,.0f} rec/s, "
            f"detect {len(data) / t_det:,.0f} rec/s"
        )
    bare_rate, det_rate = len(data) / best_bare, len(data) / best_detect
    print(f"bare orjson.loads : {bare_rate:12,.0f} records/s")
    print(f"decode + detect   : {det_rate:12,.0f} records/s  ({drifts:,} drifts)")
    print(f"ratio detect/bare : {det_rate / bare_rate:.3f}  (wall time; target >= 0.5)")
    print(f"ratio by CPU time : {cpu_bare / cpu_detect:.3f}  (this process's CPU seconds)")


if __name__ == "__main__":
    main()
