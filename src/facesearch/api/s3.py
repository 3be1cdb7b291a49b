"""Images named by ``Image.S3Object``, read from the S3-compatible store the operator configures
(``FACESEARCH_API_S3_ENDPOINT_URL`` and credentials). Without one, S3 objects are refused."""

from __future__ import annotations

import re
from typing import Any

from facesearch.api.errors import InvalidS3ObjectError
from facesearch.config import EndpointSettings
from facesearch.errors import ImageTooLargeError
from facesearch.limits import megabytes

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


def check_object(bucket: str, name: str) -> None:
    """Refuse bucket and object names that are not plain: S3's bucket naming rules, and no
    ``.`` or ``..`` segment, leading ``/``, empty segment, backslash or control character in
    the name (``../../other-bucket/x`` would name another bucket on a path-style store)."""
    if not _BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise InvalidS3ObjectError(f"invalid S3 bucket name {bucket!r}")
    segments = name.split("/")
    if (not name or name.startswith("/") or "\\" in name
            or any(seg in ("", ".", "..") for seg in segments[:-1])
            or segments[-1] in (".", "..")
            or any(ord(c) < 32 or ord(c) == 127 for c in name)):
        raise InvalidS3ObjectError(f"invalid S3 object name {name!r}: no '.' or '..' "
                                   "segments, leading or double '/', backslashes or control "
                                   "characters")


class S3Images:
    """Fetch objects (at most ``max_bytes``) from one S3-compatible store (blocking calls)."""

    def __init__(self, settings: EndpointSettings, max_bytes: int) -> None:
        """``settings``: the store (``FACESEARCH_API_S3_*``; no endpoint URL: none)."""
        self.max_bytes = max_bytes
        self._client: Any = None
        if settings.endpoint_url is None:
            return
        import boto3  # type: ignore[import-untyped]
        from botocore.config import Config  # type: ignore[import-untyped]

        secret = settings.secret_access_key
        self._client = boto3.client(
            "s3", endpoint_url=settings.endpoint_url, region_name=settings.region,
            aws_access_key_id=settings.access_key_id,
            aws_secret_access_key=secret.get_secret_value() if secret else None,
            config=Config(retries={"max_attempts": 2}, connect_timeout=5, read_timeout=30))

    def fetch(self, bucket: str, name: str, version: str | None = None) -> bytes:
        """The object's bytes; :class:`InvalidS3ObjectError` if it cannot be read,
        :class:`ImageTooLargeError` if it is over the image byte limit."""
        check_object(bucket, name)
        if self._client is None:
            raise InvalidS3ObjectError("this server has no S3 store configured "
                                       "(FACESEARCH_API_S3_ENDPOINT_URL); send Image.Bytes")
        from botocore.exceptions import (  # type: ignore[import-untyped]
            BotoCoreError,
            ClientError,
        )

        where = f"s3://{bucket}/{name}" + (f"?versionId={version}" if version else "")
        try:
            args = {"Bucket": bucket, "Key": name}
            if version:
                args["VersionId"] = version
            obj = self._client.get_object(**args)
            size = int(obj.get("ContentLength", 0))
            if size > self.max_bytes:
                obj["Body"].close()
                raise ImageTooLargeError(f"{where}: {megabytes(size)} is over the "
                                         f"{megabytes(self.max_bytes)} image limit")
            data: bytes = obj["Body"].read(self.max_bytes + 1)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            raise InvalidS3ObjectError(f"{where}: cannot be read ({code})") from None
        except BotoCoreError as exc:
            raise InvalidS3ObjectError(f"{where}: cannot be read ({exc})") from None
        if len(data) > self.max_bytes:
            raise ImageTooLargeError(f"{where}: over the {megabytes(self.max_bytes)} image "
                                     f"limit")
        return data

    def shutdown(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
