"""The processor against a real S3 server (Ceph RGW): refusals it cannot retry away are clear and counted.

RGW refuses server-side encryption over plain HTTP (`InvalidRequest`), which is what the review's
`cloud-s3-compatible` example asked for: the processor used to retry that forever, quietly. Now its
write check refuses to become ready, says what to change (`store.refused`) and counts it by reason,
and the faces wait at the broker in the processor's session until the configuration is fixed.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from facepipe import contract
from facepipe.config import BrokerSettings, CommonSettings, ProcessorSettings, StoreSettings
from facepipe.contract import FaceMeta
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
    storage = StoreSettings(store=f"s3://{bucket}/faces", s3_endpoint_url=rgw.endpoint_url, s3_region=rgw.region, s3_sse=sse)
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
        assert refused.metrics().get("facepipe_processor_stored_total", 0) == 0
        assert refused.metrics().get("facepipe_processor_received_total", 0) == 0, "nothing taken from the broker"
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
        wait_until(lambda: fixed.metrics().get("facepipe_processor_stored_total", 0) == len(metas), what="the waiting faces stored")
    finally:
        fixed.stop()
    assert sorted(s3_keys(s3, s3_bucket, "faces/edge-1/")) == sorted(contract.object_key("faces", m) for m in metas)
    assert s3.head_object(Bucket=s3_bucket, Key=f"faces/{CHECK_KEY}")["ContentLength"] == 0, "the write check's marker"
