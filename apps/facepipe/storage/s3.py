"""S3 backend through boto3: AWS or any S3-compatible endpoint, standard credential chain."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from facepipe.config import StoreSettings
from facepipe.storage.base import LIST_LIMIT, Listing, ObjectNotFound, StoredObject, StoreUnavailable

_MISSING = ("404", "NoSuchKey", "NotFound")


class S3Store:
    """Faces as S3 objects with their metadata as S3 user metadata (durable once put_object returns)."""

    max_batch = 1

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

    def put(self, key: str, png: bytes, metadata: dict[str, str]) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=png, ContentType="image/png", Metadata=metadata, **self.encryption)
        except (BotoCoreError, ClientError) as exc:
            raise StoreUnavailable(f"s3://{self.bucket}/{key}: {exc}") from exc

    def sync(self) -> None:
        """Nothing to do: S3 answers a PUT once the object is durable."""

    def check(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise StoreUnavailable(f"bucket {self.bucket!r} is not reachable: {exc}") from exc

    def apply_retention(self, days: int) -> None:
        """Install (or replace) the bucket's lifecycle rule that expires this prefix after `days`."""
        if days <= 0:
            return
        rule = {
            "ID": f"facepipe-retention-{self.prefix or 'all'}",
            "Filter": {"Prefix": f"{self.prefix}/" if self.prefix else ""},
            "Status": "Enabled",
            "Expiration": {"Days": days},
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
