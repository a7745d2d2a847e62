"""S3 backend through boto3: AWS or any S3-compatible endpoint, standard credential chain."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from facepipe.config import StoreSettings
from facepipe.storage.base import LIST_LIMIT, Listing, ObjectNotFound, StoredObject, StoreRefused, StoreUnavailable

_MISSING = ("404", "NoSuchKey", "NotFound")

# S3 error codes that mean "not with this configuration" rather than "not right now".
ACCESS_ERRORS = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled", "403"}
MISSING_BUCKET_ERRORS = {"NoSuchBucket", "404"}
# What a server says to encryption it does not offer (Ceph RGW refuses SSE over plain HTTP with InvalidRequest).
ENCRYPTION_ERRORS = {"InvalidRequest", "InvalidArgument", "NotImplemented", "InvalidEncryptionAlgorithmError"}
# A face's older versions (a redelivery overwrote it, or it was erased) go this many days after they stop being current.
NONCURRENT_DAYS = 1
CHECK_KEY = ".facepipe-write-check"  # the empty object `check` writes under the prefix: a put proves what faces need


def is_check_key(key: str) -> bool:
    """True for the write check's object (listings of faces leave it out)."""
    return key.rsplit("/", 1)[-1] == CHECK_KEY


class S3Store:
    """Faces as S3 objects with their metadata as S3 user metadata (durable once put_object returns)."""

    max_batch = 1
    prunes_itself = False  # retention is the bucket's lifecycle rule, set by `facepipe retention`

    def __init__(self, settings: StoreSettings, max_connections: int = 32) -> None:
        self.url = settings.store
        bucket_and_prefix = settings.store[len("s3://") :]
        self.bucket, _, prefix = bucket_and_prefix.partition("/")
        self.prefix = prefix.strip("/")
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.s3_endpoint_url or None,
            region_name=settings.s3_region or None,
            config=Config(
                retries={"mode": "standard", "max_attempts": 3},
                connect_timeout=5,
                read_timeout=30,
                max_pool_connections=max_connections,
            ),
        )
        self.encryption: dict[str, str] = {}
        if settings.s3_sse != "none":
            self.encryption["ServerSideEncryption"] = settings.s3_sse
            if settings.s3_sse == "aws:kms" and settings.s3_kms_key_id:
                self.encryption["SSEKMSKeyId"] = settings.s3_kms_key_id

    def put(self, key: str, png: bytes, metadata: dict[str, str], content_type: str = "image/png") -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=png, ContentType=content_type, Metadata=metadata, **self.encryption)
        except ClientError as exc:
            raise self._refusal(exc, f"s3://{self.bucket}/{key}") from exc
        except BotoCoreError as exc:
            raise StoreUnavailable(f"s3://{self.bucket}/{key}: {exc}") from exc

    def _refusal(self, exc: ClientError, where: str) -> StoreUnavailable:
        """StoreRefused, saying what to change, where the answer means this configuration cannot work."""
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if self.encryption and (code in ENCRYPTION_ERRORS or code.startswith("KMS.")):
            return StoreRefused(
                "encryption",
                f"{where}: the store refuses server-side encryption {self.encryption['ServerSideEncryption']} ({exc}); "
                "Ceph RGW takes it only over https, MinIO only with a KMS: use an https:// endpoint, configure the "
                "server's encryption, or set FACEPIPE_S3_SSE=none (processor.store.s3.sse)",
            )
        if code in ACCESS_ERRORS:
            return StoreRefused("access_denied", f"{where}: access denied ({exc}); the credentials need s3:PutObject on this prefix")
        if code in MISSING_BUCKET_ERRORS:
            return StoreRefused("no_such_bucket", f"{where}: the bucket {self.bucket!r} does not exist ({exc})")
        return StoreUnavailable(f"{where}: {exc}")

    def sync(self) -> None:
        """Nothing to do: S3 answers a PUT once the object is durable."""

    def check(self) -> None:
        """Put a tiny object under the prefix as faces are put (same encryption): proves the endpoint, the
        credentials, the permission (s3:PutObject on the prefix is all the processor needs) and the encryption."""
        self.put(f"{self.prefix}/{CHECK_KEY}" if self.prefix else CHECK_KEY, b"", {}, content_type="text/plain")

    def apply_retention(self, days: int) -> None:
        """Install (or replace) the bucket's lifecycle rule that expires this prefix after `days`, and on a versioned
        bucket the versions a redelivered face or an erasure leaves behind a day after they stop being current.
        Needs s3:GetLifecycleConfiguration and s3:PutLifecycleConfiguration: `facepipe retention`, not the processor."""
        if days <= 0:
            return
        rule = {
            "ID": f"facepipe-retention-{self.prefix or 'all'}",
            "Filter": {"Prefix": f"{self.prefix}/" if self.prefix else ""},
            "Status": "Enabled",
            "Expiration": {"Days": days},
            "NoncurrentVersionExpiration": {"NoncurrentDays": NONCURRENT_DAYS},
        }
        try:
            current = self.client.get_bucket_lifecycle_configuration(Bucket=self.bucket).get("Rules", [])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchLifecycleConfiguration":
                raise StoreUnavailable(f"cannot read the lifecycle of {self.bucket!r}: {exc}") from exc
            current = []
        rules = [r for r in current if r.get("ID") != rule["ID"]] + [rule]
        try:
            self.client.put_bucket_lifecycle_configuration(Bucket=self.bucket, LifecycleConfiguration={"Rules": rules})
        except (BotoCoreError, ClientError) as exc:
            raise StoreUnavailable(f"cannot set the lifecycle rule on {self.bucket!r}: {exc}") from exc

    def list(self, prefix: str, delimiter: str = "", token: str | None = None, limit: int = LIST_LIMIT) -> Listing:
        request = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": min(limit, LIST_LIMIT)}
        if delimiter:
            request["Delimiter"] = delimiter
        if token:
            request["ContinuationToken"] = token
        try:
            page = self.client.list_objects_v2(**request)
        except (BotoCoreError, ClientError) as exc:
            raise StoreUnavailable(f"cannot list s3://{self.bucket}/{prefix}: {exc}") from exc
        return Listing(
            keys=[item["Key"] for item in page.get("Contents", [])],
            prefixes=[item["Prefix"] for item in page.get("CommonPrefixes", [])],
            token=page.get("NextContinuationToken") if page.get("IsTruncated") else None,
        )

    def head(self, key: str) -> StoredObject:
        return self._read(key, self.client.head_object)

    def get(self, key: str) -> StoredObject:
        return self._read(key, self.client.get_object)

    def _read(self, key: str, call: Callable[..., dict[str, Any]]) -> StoredObject:
        try:
            answer = call(Bucket=self.bucket, Key=key)
            body = answer["Body"].read() if "Body" in answer else None
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                raise ObjectNotFound(key) from None
            raise StoreUnavailable(f"cannot read s3://{self.bucket}/{key}: {exc}") from exc
        except BotoCoreError as exc:
            raise StoreUnavailable(f"cannot read s3://{self.bucket}/{key}: {exc}") from exc
        return StoredObject(
            key=key, size=int(answer["ContentLength"]), etag=answer["ETag"], modified=answer["LastModified"],
            metadata=dict(answer.get("Metadata", {})), body=body,
        )  # fmt: skip

    def delete(self, keys: Sequence[str]) -> None:
        """DeleteObjects in batches of 1,000 (S3's limit); any key the store refused is an error."""
        for start in range(0, len(keys), LIST_LIMIT):
            batch = [{"Key": key} for key in keys[start : start + LIST_LIMIT]]
            try:
                answer = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            except (BotoCoreError, ClientError) as exc:
                raise StoreUnavailable(f"cannot delete from s3://{self.bucket}: {exc}") from exc
            refused = answer.get("Errors", [])
            if refused:
                first = refused[0]
                raise StoreUnavailable(
                    f"s3://{self.bucket} refused to delete {len(refused)} object(s), e.g. {first.get('Key')}: "
                    f"{first.get('Code')} {first.get('Message', '')}".strip()
                )
