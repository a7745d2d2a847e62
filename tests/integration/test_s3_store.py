"""The processor against a real S3 server (Ceph RGW): refusals it cannot retry away are clear and counted.

RGW refuses server-side encryption over plain HTTP (`InvalidRequest`), which is what the review's
`cloud-s3-compatible` example asked for: the processor used to retry that forever, quietly. Now its
write check refuses to become ready, says what to change (`store.refused`) and counts it by reason,
and the faces wait at the broker in the processor's session until the configuration is fixed.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from facepipe import contract
from facepipe.config import BrokerSettings, CommonSettings, ProcessorSettings
from facepipe.contract import FaceMeta
from facepipe.metric_names import PROCESSOR_RECEIVED, PROCESSOR_STORE_REFUSED, PROCESSOR_STORED
from facepipe.probe import synthetic_face
from facepipe.storage.s3 import CHECK_KEY
from facepipe_dev.brokers import MosquittoBroker
from facepipe_dev.components import ComponentProcess
from facepipe_dev.mqtt import TestClient
from facepipe_dev.processes import wait_until
from facepipe_dev.rgw import RadosGateway
from facepipe_dev.store import s3_keys

BASE = contract.DEFAULT_REMOTE_TOPIC


def processor_settings(broker: MosquittoBroker, rgw: RadosGateway, bucket: str, sse: str) -> ProcessorSettings:
    storage = replace(rgw.store_settings(f"s3://{bucket}/faces"), s3_sse=sse)
    return ProcessorSettings(
        common=CommonSettings(device_id="cloud"),
        broker=BrokerSettings(host=broker.host, port=broker.port, topic=BASE),
        storage=storage,
        store_retry_max_seconds=2.0,
    )


def test_an_encryption_the_store_refuses_is_a_clear_counted_error_and_loses_nothing(
    tmp_path: Path, cloud_broker: MosquittoBroker, rgw: RadosGateway, s3_bucket: str
) -> None:
    good = processor_settings(cloud_broker, rgw, s3_bucket, "none")
    s3 = rgw.client()
    # A processor that worked (its session at the broker holds its subscription) is restarted with SSE AES256.
    ComponentProcess("processor", good, tmp_path / "first", extra_env=rgw.env()).start().wait_ready().stop()
    encrypted = replace(good, storage=replace(good.storage, s3_sse="AES256"))
    refused = ComponentProcess("processor", encrypted, tmp_path / "refused", extra_env=rgw.env()).start()
    metas = [FaceMeta("edge-1", "cam0", "b00f", seq, datetime.now(UTC), seq, 0, (0, 0, 96, 96), 0.9, "test/1") for seq in range(3)]
    try:
        wait_until(
            lambda: refused.metrics().get('facepipe_processor_store_refused_total{reason="encryption"}', 0) >= 2,
            timeout=60, what="the refusal counted, twice (it is retried, slowly)",
        )  # fmt: skip
        client = TestClient(cloud_broker.host, cloud_broker.port)
        for meta in metas:
            client.publish(f"{BASE}/edge-1", synthetic_face(96), meta.to_properties())
        client.close()
        assert refused.process.running() and not refused.is_ready()
        assert refused.metrics().get(PROCESSOR_STORED, 0) == 0
        assert refused.metrics().get(PROCESSOR_RECEIVED, 0) == 0, "nothing taken from the broker"
        lines = [json.loads(line) for line in refused.process.log_path.read_text().splitlines() if '"store.refused"' in line]
        assert lines and lines[0]["reason"] == "encryption"
        assert "InvalidRequest" in lines[0]["error"] and "FACEPIPE_S3_SSE=none" in lines[0]["error"], lines[0]
        assert all(line["retry_in"] == 2.0 for line in lines), "a refusal is retried at the longest delay only"
    finally:
        refused.stop()
    assert s3_keys(s3, s3_bucket, "faces/edge-1/") == []

    # Fixed: the faces that waited in the processor's session at the broker are all stored.
    fixed = ComponentProcess("processor", good, tmp_path / "fixed", extra_env=rgw.env()).start().wait_ready()
    try:
        wait_until(lambda: fixed.metrics().get(PROCESSOR_STORED, 0) == len(metas), what="the waiting faces stored")
    finally:
        fixed.stop()
    assert sorted(s3_keys(s3, s3_bucket, "faces/edge-1/")) == sorted(contract.object_key("faces", m) for m in metas)
    assert s3.head_object(Bucket=s3_bucket, Key=f"faces/{CHECK_KEY}")["ContentLength"] == 0, "the write check's marker"


def put_only_policy(bucket: str, uid: str, prefix: str) -> str:
    """A bucket policy giving `uid` s3:PutObject under `prefix` and nothing else (what the processor needs)."""
    statement = {
        "Effect": "Allow",
        "Principal": {"AWS": [f"arn:aws:iam:::user/{uid}"]},
        "Action": ["s3:PutObject"],
        "Resource": [f"arn:aws:s3:::{bucket}/{prefix}/*"],
    }
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


def test_the_processor_needs_only_put_object_and_retention_is_a_separate_step(
    tmp_path: Path, cloud_broker: MosquittoBroker, rgw: RadosGateway, s3_bucket: str
) -> None:
    """The review: the processor held PutLifecycleConfiguration and rewrote the bucket's rules. Now a processor whose
    keys may only put objects under its prefix (a bucket policy on a real RGW) becomes ready and stores faces with the
    default retention (30 days) and never touches the bucket's lifecycle; `facepipe retention`, run once with the
    owner's keys, sets the rule, including the expiry of noncurrent versions (a redelivered key on a versioned bucket
    left two versions, and only the current one expired)."""
    import subprocess
    import sys

    from botocore.exceptions import ClientError

    owner = rgw.client()
    owner.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    writer_env = rgw.add_user("faces-writer")
    owner.put_bucket_policy(Bucket=s3_bucket, Policy=put_only_policy(s3_bucket, "faces-writer", "faces"))
    settings = processor_settings(cloud_broker, rgw, s3_bucket, "none")
    assert settings.storage.retention_days == 30, "the app's default retention is the chart's"
    processor = ComponentProcess("processor", settings, tmp_path / "processor", extra_env=writer_env).start().wait_ready()
    meta = FaceMeta("edge-1", "cam0", "b00f", 1, datetime.now(UTC), 1, 0, (0, 0, 96, 96), 0.9, "test/1")
    try:
        client = TestClient(cloud_broker.host, cloud_broker.port)
        for _ in range(2):  # a redelivery: the same key twice
            client.publish(f"{BASE}/edge-1", synthetic_face(96), meta.to_properties())
        client.close()
        wait_until(lambda: processor.metrics().get(PROCESSOR_STORED, 0) == 2, what="both copies stored")
        assert processor.metrics().get(PROCESSOR_STORE_REFUSED, 0) == 0
    finally:
        processor.stop()
    key = contract.object_key("faces", meta)
    versions = owner.list_object_versions(Bucket=s3_bucket, Prefix=key)["Versions"]
    assert len(versions) == 2, "the versioned bucket kept both copies: noncurrent versions need a rule of their own"
    try:
        owner.get_bucket_lifecycle_configuration(Bucket=s3_bucket)
        raise AssertionError("the processor set a lifecycle rule")
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "NoSuchLifecycleConfiguration"
    log = processor.process.log_path.read_text()
    assert '"retention.external"' in log and '"retention.applied"' not in log

    # The separate step: with keys that may set lifecycle rules (here the bucket owner's).
    env = {**os.environ, **rgw.env(), "FACEPIPE_STORE": f"s3://{s3_bucket}/faces", "FACEPIPE_RETENTION_DAYS": "30"}
    result = subprocess.run([sys.executable, "-m", "facepipe", "retention"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    (rule,) = owner.get_bucket_lifecycle_configuration(Bucket=s3_bucket)["Rules"]
    assert rule["Status"] == "Enabled" and rule["Expiration"] == {"Days": 30}
    assert rule["NoncurrentVersionExpiration"]["NoncurrentDays"] == 1
    assert rule.get("Filter", {}).get("Prefix", rule.get("Prefix")) == "faces/"

    # The same step with the processor's keys is refused by the store, and says so (exit 1).
    denied = subprocess.run(
        [sys.executable, "-m", "facepipe", "retention"], env={**env, **writer_env}, capture_output=True, text=True, timeout=60
    )
    assert denied.returncode == 1 and "retention.failed" in denied.stdout + denied.stderr
