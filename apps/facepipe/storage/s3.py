"""S3 backend through boto3: AWS or any S3-compatible endpoint, standard credential chain."""

from __future__ import annotations

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from facepipe.config import StoreSettings
from facepipe.storage.base import StoreUnavailable


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
