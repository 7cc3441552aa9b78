"""`retrainer batch child`, SIGKILLed halfway through putting its attempt's folder in the
bucket, as a container is when its spot instance is reclaimed:

    python -m tests.support.batch_child --plan s3://…
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from retrainer.mirror.storage.protocol import UploadResult
from retrainer.mirror.storage.s3 import S3Storage

_put_file = S3Storage.put_file


def _killed_mid_upload(self: S3Storage, local_path: Path, key: str) -> UploadResult:
    if not key.endswith(".tar"):
        return _put_file(self, local_path, key)
    data = local_path.read_bytes()
    self._client.put_object(
        Bucket=self.bucket, Key=self._object_key(key), Body=data[: len(data) // 2]
    )
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable")


if __name__ == "__main__":
    S3Storage.put_file = _killed_mid_upload  # type: ignore[method-assign]
    from retrainer.cli.app import main

    sys.argv = ["retrainer", "batch", "child", *sys.argv[1:]]
    main()
