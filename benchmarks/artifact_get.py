"""Memory and time of getting one large artifact from the S3 backend: whole or streamed.

Starts moto's S3 server in a separate process (so its copy of the object is not counted), stores
one artifact of ``--mb`` megabytes through :class:`~bcce.storage.s3.S3StorageBackend`, then gets
it into a file in a fresh child process per mode, measuring how much that process's peak
resident memory grew and how long the read took:

- ``whole``: ``retrieve(key)`` (the bytes in memory) written to the file, as ``bcce workflow
  artifacts --get`` did before it streamed;
- ``streamed``: ``retrieve_into(key, handle)``, what ``--get`` does now (ranged parts in
  parallel, written at their offsets);
- ``one-get``: ``retrieve_into`` with the multipart threshold above the artifact's size: one
  GET streamed in order. moto copies the whole object to answer each ranged GET (about 0.2 s
  per 8 MB part of a 256 MB object here), so against moto this mode shows the cost of streaming
  itself; against S3, parallel ranged GETs are the faster way.

    .venv/bin/python benchmarks/artifact_get.py [--mb 256] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BUCKET = "bench-artifacts"
KEY = "r1/package/bundle.bin"


def backend(url: str, runs: Path, threshold: int = 8 * 1024 * 1024) -> Any:
    import boto3

    from bcce.storage.s3 import S3StorageBackend

    return S3StorageBackend(
        client=lambda: boto3.client("s3", endpoint_url=url, region_name="us-east-1"),
        bucket=BUCKET,
        prefix="bench",
        runs_dir=runs,
        multipart_threshold=threshold,
    )


def read(mode: str, url: str, target: Path) -> dict[str, float]:
    """In a child process: get the artifact into ``target``; peak RSS growth and seconds."""
    store = backend(url, target.parent, threshold=2**62 if mode == "one-get" else 8 * 1024 * 1024)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    if mode == "whole":
        target.write_bytes(store.retrieve(KEY))
    else:
        with target.open("wb") as handle:
            store.retrieve_into(KEY, handle)
    seconds = time.perf_counter() - started
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    return {"rss_growth_mb": grown / 1024, "seconds": seconds, "bytes": target.stat().st_size}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=256, help="artifact size in MB (MiB)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--child", nargs=3, metavar=("MODE", "URL", "TARGET"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    if args.child:
        mode, url, target = args.child
        print(json.dumps(read(mode, url, Path(target))))
        return 0

    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from bcce.testing.aws import MotoServer; "
            "print(MotoServer().start().url, flush=True); time.sleep(86400)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        with tempfile.TemporaryDirectory() as temp:
            root = Path(temp)
            source = root / "bundle.bin"
            with source.open("wb") as handle:
                for _ in range(args.mb):
                    handle.write(os.urandom(1024 * 1024))
            import boto3

            boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(
                Bucket=BUCKET
            )
            backend(url, root).store_file(KEY, source)
            source.unlink()
            results = {}
            for mode in ("whole", "streamed", "one-get"):
                child = subprocess.run(
                    [sys.executable, __file__, "--child", mode, url, str(root / f"{mode}.bin")],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                results[mode] = json.loads(child.stdout)
                (root / f"{mode}.bin").unlink()
    finally:
        server.kill()
        server.wait()
    if args.json:
        print(json.dumps({"mb": args.mb, **results}, indent=2))
        return 0
    print(f"getting one {args.mb} MiB artifact from S3 (moto server, loopback):")
    for mode, result in results.items():
        print(
            f"  {mode:<9} peak RSS +{result['rss_growth_mb']:.0f} MB, "
            f"{result['seconds']:.2f} s ({args.mb / result['seconds']:.0f} MiB/s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
