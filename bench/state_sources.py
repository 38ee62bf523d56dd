"""Many states: load time, the CPU of an unchanged poll, and memory per managed resource.

python -m bench.state_sources [--states 500] [--resources 200] [--s3]

Writes `--states` version-4 states of `--resources` resources each (real-shaped aws_instance
attributes) to a temporary folder, then:
- bare baseline: read every file and `orjson.loads` it (the least any loader must do);
- load: `StateSources` over the folder's glob, then the detection index (`build_index`), as
  the daemon does at start; targets < 30 s, printed as a ratio to the baseline;
- an unchanged poll cycle (force: every source polled): process CPU seconds; target < 1 s;
- memory: tracemalloc's peak over a second load + index, per managed resource.
With `--s3`, the same states are uploaded to a moto S3 server and loaded from
`s3://BUCKET/states/**/*.tfstate` too (the unchanged poll is then one ListObjectsV2 walk;
moto runs in this process, so its CPU counts in the figure).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import orjson

from monitor.engine import build_index, load_rules
from monitor.statesrc import StateSources, parse_source


def instance(n: int, s: int) -> dict[str, Any]:
    """One aws_instance as Terraform 1.x writes it (the attribute set, not the values)."""
    iid = f"i-{s:05d}{n:012x}"
    return {
        "mode": "managed",
        "type": "aws_instance",
        "name": f"web_{n}",
        "provider": 'provider["registry.terraform.io/hashicorp/aws"]',
        "instances": [
            {
                "schema_version": 1,
                "attributes": {
                    "id": iid,
                    "arn": f"arn:aws:ec2:us-east-1:123456789012:instance/{iid}",
                    "ami": "ami-0c55b159cbfafe1f0",
                    "instance_type": "t3.micro",
                    "availability_zone": "us-east-1a",
                    "subnet_id": f"subnet-{s:08x}",
                    "vpc_security_group_ids": [f"sg-{s:08x}"],
                    "private_ip": f"10.{s % 256}.{n // 256}.{n % 256}",
                    "tags": {"Name": f"web-{s}-{n}", "env": "prod"},
                    "root_block_device": [
                        {"volume_size": 8, "volume_type": "gp3", "encrypted": True}
                    ],
                    "metadata_options": [{"http_tokens": "required"}],
                    "user_data": None,
                },
                "sensitive_attributes": [],
                "dependencies": [f"aws_security_group.sg_{s}"],
            }
        ],
    }


def write_states(root: Path, states: int, resources: int) -> list[Path]:
    out = []
    for s in range(states):
        doc = {
            "version": 4,
            "terraform_version": "1.7.5",
            "serial": 1,
            "lineage": str(uuid.uuid4()),
            "outputs": {},
            "resources": [instance(n, s) for n in range(resources)],
        }
        path = root / f"stack-{s:04d}" / "terraform.tfstate"
        path.parent.mkdir(parents=True)
        path.write_bytes(orjson.dumps(doc))
        out.append(path)
    return out


def measure(url: str, endpoint: str | None, baseline: float, total: int) -> None:
    catalogue, _ = load_rules()
    gc.collect()
    t0 = time.perf_counter()
    sources = StateSources([parse_source(url, endpoint=endpoint)])
    states = sources.load()
    index = build_index(states, catalogue)
    load = time.perf_counter() - t0
    assert len(index) == total, (len(index), total)
    c0 = time.process_time()
    result = sources.poll(force=True)
    poll_cpu = time.process_time() - c0
    assert result.changed == () and result.missing == ()
    print(
        f"  load {len(states)} states / {total} resources: {load:.2f} s "
        f"({load / baseline:.1f}x the bare read+parse; target < 30 s)"
    )
    print(f"  unchanged poll cycle: {poll_cpu:.3f} s CPU (target < 1 s)")
    del sources, states, index
    gc.collect()
    tracemalloc.start()
    again = StateSources([parse_source(url, endpoint=endpoint)])
    kept = build_index(again.load(), catalogue)
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"  memory: {current / total:.0f} B kept per managed resource "
        f"(peak while loading {peak / total:.0f} B); {current / 2**20:.0f} MiB in all"
    )
    del again, kept


def upload(root: Path, files: list[Path]) -> tuple[Any, str, str]:
    import boto3
    from moto.server import ThreadedMotoServer

    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
    )
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3 = boto3.session.Session().client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket="bench-states")
    for f in files:
        key = "states/" + f.relative_to(root).as_posix()
        s3.put_object(Bucket="bench-states", Key=key, Body=f.read_bytes())
    return server, endpoint, "s3://bench-states/states/**/*.tfstate"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--states", type=int, default=500)
    ap.add_argument("--resources", type=int, default=200)
    ap.add_argument("--s3", action="store_true", help="also load from a moto S3 server")
    args = ap.parse_args()
    total = args.states * args.resources
    with tempfile.TemporaryDirectory(prefix="driftline-states-") as tmp:
        root = Path(tmp)
        files = write_states(root, args.states, args.resources)
        size = sum(f.stat().st_size for f in files)
        print(f"{args.states} states x {args.resources} resources, {size / 2**20:.0f} MiB")
        t0 = time.perf_counter()
        for f in files:
            orjson.loads(f.read_bytes())
        baseline = time.perf_counter() - t0
        print(f"bare read + orjson.loads: {baseline:.2f} s")
        print(f"local glob {root}/**/*.tfstate:")
        measure(str(root / "**" / "*.tfstate"), None, baseline, total)
        if args.s3:
            server, endpoint, url = upload(root, files)
            try:
                print(f"S3 (moto server) {url}:")
                measure(url, endpoint, baseline, total)
            finally:
                server.stop()


if __name__ == "__main__":
    main()
