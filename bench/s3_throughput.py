"""Upload throughput of a 100 MB artifact to S3 (a local SeaweedFS): retrainer's S3 client
against a plain boto3 `upload_file` of the same file.

    python -m bench.s3_throughput [--mb 100] [--n 5]

retrainer's put_file does more than send bytes: it hashes the file (sha256 and the
per-part SHA-256 S3 will report), HEADs the key first (an object with the same sha256 is
not sent again), asks S3 for SHA-256 checksums on every part, and HEADs the object after
to confirm the server's checksum. Each repetition uploads to a fresh key, so nothing is
skipped. The plain runs use boto3's defaults (8 MiB parts, 10 threads, its default CRC
checksum); a third row gives plain boto3 the same part size and concurrency as ours.
The figure measures the whole path on loopback: the client, SeaweedFS and its disk.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import print_table, summarise, write_results
from bench.seaweed import SeaweedServer
from retrainer.mirror.storage.s3 import MB, S3Options, S3Storage


def _plain_client(server: SeaweedServer) -> Any:
    import boto3

    return boto3.session.Session(region_name="us-east-1").client(
        "s3", endpoint_url=server.endpoint_url
    )


def measure(upload: Callable[[str], object], n: int, size_mb: float) -> list[float]:
    """MB/s of n uploads, each to a fresh key."""
    rates = []
    for _ in range(n):
        key = f"bench/{uuid.uuid4().hex}/model.bin"
        began = time.perf_counter()
        upload(key)
        rates.append(size_mb / (time.perf_counter() - began))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--n", type=int, default=5)
    parser.add_argument("--chunk_mb", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, SeaweedServer(Path(tmp) / "weed") as server:
        os.environ.update(server.env)  # the standard AWS chain, as a nightly job has it
        artifact = Path(tmp) / "model.bin"
        artifact.write_bytes(os.urandom(args.mb * MB))
        plain = _plain_client(server)
        plain.create_bucket(Bucket="bench")
        ours = S3Storage(
            S3Options(
                bucket="bench",
                endpoint_url=server.endpoint_url,
                addressing_style="path",
                chunk_bytes=args.chunk_mb * MB,
                multipart_threshold_bytes=8 * MB,
                max_concurrency=args.concurrency,
            )
        )
        from boto3.s3.transfer import TransferConfig

        same = TransferConfig(
            multipart_chunksize=args.chunk_mb * MB, max_concurrency=args.concurrency
        )
        size_mb = args.mb * MB / 1e6
        # One warm-up each: connection pools, the server's first volume.
        tuned = f"boto3 upload_file ({args.chunk_mb} MiB parts, {args.concurrency} threads)"
        uploads = {
            "retrainer S3Storage.put_file (verified)": lambda key: ours.put_file(artifact, key),
            "boto3 upload_file (defaults)": lambda key: plain.upload_file(
                str(artifact), "bench", key
            ),
            tuned: lambda key: plain.upload_file(str(artifact), "bench", key, Config=same),
        }
        rates: dict[str, list[float]] = {name: [] for name in uploads}
        for upload in uploads.values():  # warm-up: connection pools, the first volumes
            measure(upload, 1, size_mb)
        for _ in range(args.n):  # interleaved, so that a busy moment hits every row alike
            for name, upload in uploads.items():
                rates[name] += measure(upload, 1, size_mb)
        results = {name: summarise(samples) for name, samples in rates.items()}
    print_table(
        f"Upload of a {args.mb} MiB file to SeaweedFS on loopback (MB/s, higher is better)",
        ["what", "median", "min", "max", "n"],
        [[k, r["median"], r["min"], r["max"], int(r["n"])] for k, r in results.items()],
    )
    names = list(results)
    ratio = results[names[0]]["median"] / results[names[1]]["median"]
    print(f"\nretrainer's verified upload runs at {ratio:.2f}x plain boto3's rate")
    write_results(
        "s3_throughput",
        {
            "size_mib": args.mb,
            "chunk_mib": args.chunk_mb,
            "concurrency": args.concurrency,
            "mb_per_s": results,
            "ratio_to_plain_boto3": ratio,
        },
    )


if __name__ == "__main__":
    main()
