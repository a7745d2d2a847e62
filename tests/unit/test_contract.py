"""The contract: properties round-trip, keys derive from metadata alone, bad metadata is named; status messages."""

import json
import re
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from facepipe import contract
from facepipe.contract import ContractError, FaceMeta

CAPTURED = datetime(2026, 11, 24, 21, 34, 5, 123456, tzinfo=UTC)


def meta(**overrides: object) -> FaceMeta:
    fields: dict[str, object] = dict(
        device="edge-1", camera="cam0", boot="a1b2c3d4", seq=42, captured_at=CAPTURED,
        frame=7, face=1, bbox=(10, 20, 30, 40), score=0.8766, detector="yunet/face_detection_yunet_2023mar",
    )  # fmt: skip
    fields.update(overrides)
    return FaceMeta(**fields)  # type: ignore[arg-type]


def test_properties_round_trip() -> None:
    original = meta(track=3)
    props = original.to_properties()
    assert props.ContentType == "image/png"
    names = [name for name, _ in props.UserProperty]
    assert names == list(contract.USER_PROPERTY_NAMES)
    parsed = FaceMeta.from_properties(props)
    assert parsed == FaceMeta(**{**original.__dict__, "score": 0.877, "captured_at": CAPTURED.replace(microsecond=123000)})


def test_object_key_follows_design() -> None:
    assert contract.object_key("faces", meta()) == "faces/edge-1/2026/11/24/213405.123_cam0_a1b2c3d4_42.png"
    assert contract.object_key("", meta()) == "edge-1/2026/11/24/213405.123_cam0_a1b2c3d4_42.png"
    assert contract.object_key("/a/b/", meta()) == "a/b/edge-1/2026/11/24/213405.123_cam0_a1b2c3d4_42.png"


def test_same_metadata_same_key_so_redelivery_overwrites() -> None:
    assert contract.object_key("p", meta()) == contract.object_key("p", FaceMeta.from_properties(meta().to_properties()))


def test_anonymous_key_uses_arrival_time_and_sha256() -> None:
    key = contract.anonymous_key("p", "unknown", CAPTURED, b"abc")
    assert key == "p/unknown/2026/11/24/213405.123_sha256-ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad.png"


@pytest.mark.parametrize(
    ("change", "reason", "field"),
    [
        (("seq", "-1"), "bad_metadata", "seq"),
        (("seq", "4x"), "bad_metadata", "seq"),
        (("device", "../etc"), "bad_metadata", "device"),
        (("bbox", "1,2,3"), "bad_metadata", "bbox"),
        (("score", "1.5"), "bad_metadata", "score"),
        (("captured_at", "yesterday"), "bad_metadata", "captured_at"),
        (("schema", "facepipe/0"), "bad_metadata", "schema"),
        (("camera", ""), "bad_metadata", "camera"),
    ],
)
def test_bad_metadata_is_rejected_naming_the_field(change: tuple[str, str], reason: str, field: str) -> None:
    pairs = [(n, change[1] if n == change[0] else v) for n, v in meta().user_properties()]
    with pytest.raises(ContractError) as info:
        FaceMeta.from_user_properties(pairs, "image/png")
    assert info.value.reason == reason
    assert field in str(info.value)


def test_missing_and_duplicate_properties() -> None:
    pairs = [p for p in meta().user_properties() if p[0] != "boot"]
    with pytest.raises(ContractError, match="boot"):
        FaceMeta.from_user_properties(pairs, "image/png")
    with pytest.raises(ContractError, match="twice"):
        FaceMeta.from_user_properties([*meta().user_properties(), ("seq", "1")], "image/png")


def test_wrong_content_type_and_no_properties() -> None:
    with pytest.raises(ContractError) as info:
        FaceMeta.from_user_properties(meta().user_properties(), "text/plain")
    assert info.value.reason == "bad_content_type"
    with pytest.raises(ContractError):
        FaceMeta.from_properties(None)
    with pytest.raises(ContractError):
        FaceMeta.from_properties(Properties(PacketTypes.PUBLISH))


def test_topics() -> None:
    assert contract.remote_topic("cam_bin_remote", "edge-1") == "cam_bin_remote/edge-1"
    assert contract.remote_subscription("cam_bin_remote") == "cam_bin_remote/#"
    assert contract.remote_subscription("cam_bin_remote", "procs") == "$share/procs/cam_bin_remote/#"
    assert contract.device_from_topic("cam_bin_remote", "cam_bin_remote/edge-1") == "edge-1"
    assert contract.device_from_topic("cam_bin_remote", "cam_bin_remote") == "unknown"
    for bad in ("cam_bin_remote/a/b", "other/edge-1", "cam_bin_remote/..", "cam_bin_remote/"):
        with pytest.raises(ContractError):
            contract.device_from_topic("cam_bin_remote", bad)


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)))
def test_timestamps_and_key_times_are_the_strftime_forms_and_round_trip(moment: datetime) -> None:
    text = contract.format_timestamp(moment)
    assert text == f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"
    assert contract.parse_timestamp(text) == moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    key = contract.object_key("p", meta(captured_at=moment))
    assert key.startswith(f"p/edge-1/{moment.year:04d}/{moment:%m/%d}/{moment:%H%M%S}.{moment.microsecond // 1000:03d}_")


@pytest.mark.parametrize(
    "text", ["2026-02-30T00:00:00.000Z", "0000-01-01T00:00:00.000Z", "2026-01-01T24:00:00.000Z", "2026-1-01T00:00:00.000Z"]
)
def test_impossible_timestamps_are_bad_metadata(text: str) -> None:
    with pytest.raises(ContractError, match="captured_at"):
        contract.parse_timestamp(text)


_ids = st.from_regex(contract.ID_PATTERN, fullmatch=True)


@settings(max_examples=200)
@given(
    prefix=st.sampled_from(["", "faces", "site/a"]),
    device=_ids,
    camera=_ids,
    boot=st.from_regex(r"[0-9a-f]{1,16}", fullmatch=True),
    seq=st.integers(0, 10**12 - 1),
    moment=st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)),
)
def test_a_key_tells_what_it_was_made_from(prefix: str, device: str, camera: str, boot: str, seq: int, moment: datetime) -> None:
    meta = FaceMeta(device, camera, boot, seq, moment, 0, 0, (0, 0, 1, 1), 0.5, "yunet")
    key = contract.object_key(prefix, meta)
    facts = contract.parse_object_key(prefix, key)
    assert (facts.device, facts.camera, facts.boot, facts.seq) == (device, camera, boot, seq)
    assert facts.captured_at == moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    assert key.startswith(contract.day_prefix(prefix, device, moment.date())) and key.startswith(contract.device_prefix(prefix, device))


def test_a_key_without_metadata_parses_without_camera() -> None:
    key = contract.anonymous_key("faces", "edge-1", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), b"png")
    facts = contract.parse_object_key("faces", key)
    assert (facts.device, facts.camera, facts.seq, facts.captured_at) == ("edge-1", None, None, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))


@pytest.mark.parametrize(
    "key",
    [
        "other/edge-1/2026/01/02/030405.006_cam0_b1_7.png",  # another prefix
        "faces/../2026/01/02/030405.006_cam0_b1_7.png",
        "faces/edge-1/2026/01/02/../030405.006_cam0_b1_7.png",
        "faces/edge-1/2026/13/02/030405.006_cam0_b1_7.png",  # no 13th month
        "faces/edge-1/2026/01/02/030405.006_cam0_b1_7.png.json",
        "faces/edge-1/2026/01/02/030405_cam0_b1_7.png",
        "faces/edge-1/2026/01/02",
    ],
)
def test_keys_of_another_form_are_bad_keys(key: str) -> None:
    with pytest.raises(ContractError) as info:
        contract.parse_object_key("faces", key)
    assert info.value.reason == "bad_key"


# --- status ---


def status(**overrides: object) -> contract.Status:
    capture = contract.Capture("cam0", "opened", 120, 100, 3, 9.5)
    fields: dict[str, object] = dict(
        device="edge-1", component="camera", state="online", boot="a1b2c3d4", sent_at=CAPTURED.replace(microsecond=123000),
        interval=30.0, capture=capture,
    )  # fmt: skip
    fields.update(overrides)
    return contract.Status(**fields)  # type: ignore[arg-type]


def test_status_round_trips_through_json() -> None:
    for original in (status(), status(component="logger", capture=None), status(state="offline", capture=None)):
        assert contract.Status.from_json(original.to_json()) == original
    doc = json.loads(status().to_json())
    assert doc["schema"] == "facepipe-status/1" and doc["sent_at"] == "2026-11-24T21:34:05.123Z"
    assert {k: doc[k] for k in ("camera", "source", "frames_read", "frames_analysed", "faces", "fps")} == {
        "camera": "cam0", "source": "opened", "frames_read": 120, "frames_analysed": 100, "faces": 3, "fps": 9.5,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"schema": "facepipe-status/2"}, "not a facepipe-status/1 object"),
        ({"state": "sleeping"}, "state 'sleeping'"),
        ({"component": "processor"}, "component 'processor'"),
        ({"device": "edge 1"}, "device 'edge 1'"),
        ({"boot": 7}, "boot 7 is not a string"),
        ({"sent_at": "yesterday"}, "captured_at 'yesterday'"),
        ({"interval": -1}, "interval -1"),
        ({"interval": True}, "interval True"),
        ({"source": "dreaming"}, "source 'dreaming'"),
        ({"frames_read": 1.5}, "frames_read 1.5"),
        ({"fps": float("inf")}, "fps inf"),
    ],
)
def test_bad_status_is_named(change: dict[str, object], needle: str) -> None:
    doc = {**json.loads(status().to_json()), **change}
    with pytest.raises(ContractError, match=re.escape(needle)) as info:
        contract.Status.from_json(json.dumps(doc).encode())
    assert info.value.reason == "bad_status"


@pytest.mark.parametrize("payload", [b"", b"\xff\xfe", b"[1, 2]", b"null", b"{" + b" " * 5000 + b"}"])
def test_status_that_is_not_a_status_object_is_refused(payload: bytes) -> None:
    with pytest.raises(ContractError) as info:
        contract.Status.from_json(payload)
    assert info.value.reason == "bad_status"


def test_status_topics() -> None:
    assert contract.status_topic("cam_bin", "camera") == "cam_bin/status/camera"
    assert contract.remote_status_topic("cam_bin_remote", "edge-1", "camera") == "cam_bin_remote/edge-1/status/camera"
    assert contract.device_topics("cam_bin_remote", "edge-1") == ("cam_bin_remote/edge-1", "cam_bin_remote/edge-1/status/+")
    assert contract.status_from_topic("cam_bin_remote", "cam_bin_remote/edge-1/status/logger") == ("edge-1", "logger")
    for other in (
        "cam_bin_remote/edge-1", "cam_bin_remote/edge-1/status", "cam_bin_remote/edge-1/status/processor",
        "cam_bin_remote/edge 1/status/camera", "cam_bin_remote/edge-1/status/camera/x", "cam_bin_remotex/edge-1/status/camera",
        "cam_bin_remote/edge-1/heartbeat/camera",
    ):  # fmt: skip
        assert contract.status_from_topic("cam_bin_remote", other) is None, other
