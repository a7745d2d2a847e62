"""facepipe's MQTT 5 property codec against paho's own, on generated properties and packets.

The reference is a private copy of paho's `properties` module loaded from its file, so it keeps
paho's original methods while the imported one is patched by `facepipe.mqtt_properties`.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType
from typing import Any

import paho.mqtt.properties as patched
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.exception import MalformedPacket, MQTTException
from paho.mqtt.packettypes import PacketTypes

from facepipe.mqtt_properties import PackedProperties, _unpack, install, wire_block

install()  # the codec under test (the conftest installs it for the session too)


def load_reference() -> ModuleType:
    spec = importlib.util.spec_from_file_location("paho.mqtt.properties_reference", patched.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REFERENCE = load_reference()

# Text paho's own reader accepts: no surrogates (not encodable anyway), no NUL, no U+FEFF.
text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\ufeff"), max_size=40)
PUBLISH_VALUES: dict[str, Any] = {
    "PayloadFormatIndicator": st.integers(0, 1),
    "MessageExpiryInterval": st.integers(0, 2**32 - 1),
    "ContentType": text,
    "ResponseTopic": text,
    "CorrelationData": st.binary(max_size=40),
    "SubscriptionIdentifier": st.lists(st.integers(1, 268435455), min_size=1, max_size=3),
    "TopicAlias": st.integers(1, 65535),
    "UserProperty": st.lists(st.tuples(text, text), min_size=1, max_size=14),
}


@st.composite
def publish_properties(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.sets(st.sampled_from(sorted(PUBLISH_VALUES))))
    return {name: draw(PUBLISH_VALUES[name]) for name in names}


def build(module: ModuleType, values: dict[str, Any]) -> Any:
    props = module.Properties(PacketTypes.PUBLISH)
    for name, value in values.items():
        setattr(props, name, value)
    return props


def decoded(props: Any) -> dict[str, Any]:
    return {name: value for name, value in vars(props).items() if name not in ("packetType", "types", "names", "properties", "_wire")}


@settings(max_examples=300, deadline=None)
@given(publish_properties(), st.binary(max_size=64))
def test_pack_and_unpack_match_paho(values: dict[str, Any], payload: bytes) -> None:
    ours, theirs = build(patched, values), build(REFERENCE, values)
    packed = ours.pack()
    assert packed == theirs.pack()
    assert ours.isEmpty() == theirs.isEmpty() == (not values)

    packet = packed + payload
    mine, used = patched.Properties(PacketTypes.PUBLISH).unpack(packet)
    reference, reference_used = REFERENCE.Properties(PacketTypes.PUBLISH).unpack(packet)
    assert used == reference_used == len(packed)
    assert decoded(mine) == decoded(reference) == {name: (list(v) if isinstance(v, list) else v) for name, v in values.items()}


@settings(max_examples=300, deadline=None)
@given(publish_properties(), st.data())
def test_damaged_blocks_fail_as_malformed_or_decode_like_paho(values: dict[str, Any], data: st.DataObject) -> None:
    """Cut or flip bytes of a valid block: either both codecs agree, or ours says MalformedPacket."""
    packed = bytearray(build(patched, values).pack())
    if data.draw(st.booleans()) and len(packed) > 1:
        packed = packed[: data.draw(st.integers(1, len(packed) - 1))]
    else:
        index = data.draw(st.integers(0, len(packed) - 1))
        packed[index] = data.draw(st.integers(0, 255))
    try:
        mine = decoded(patched.Properties(PacketTypes.PUBLISH).unpack(bytes(packed))[0])
    except MalformedPacket:
        return
    except MQTTException:  # a value outside its range: paho's setter says so too
        with pytest.raises(MQTTException):
            REFERENCE.Properties(PacketTypes.PUBLISH).unpack(bytes(packed))
        return
    assert mine == decoded(REFERENCE.Properties(PacketTypes.PUBLISH).unpack(bytes(packed))[0])


@pytest.mark.parametrize(
    ("block", "reason"),
    [
        (b"\x05\x26\x00\x01a", "runs past the end of the packet"),
        (b"\x03\x7f\x00\x00", "Unknown property identifier 127"),
        (b"\x07\x26\x00\x02\xc3\x28\x00\x00", "invalid UTF-8"),
        (b"\x07\x26\x00\x01a\x00\x01\x00", "Null found"),
        (b"\x06\x26\x00\x05abc\x00", "too long"),
        (b"\x02\x23\x01", "runs past"),  # a two-byte integer cut short
        (b"\x04\x02\x00\x00\x00", "runs past"),
        (b"\x05\xff\xff\xff\xff\x01", "more than four bytes"),
        (b"\x06\x03\x00\x00\x03\x00\x00", "must not exist more than once"),
    ],
)
def test_malformed_blocks_name_the_problem(block: bytes, reason: str) -> None:
    with pytest.raises(MalformedPacket, match=reason):
        _unpack(patched.Properties(PacketTypes.PUBLISH), block)


def test_byte_order_mark_is_an_ordinary_character() -> None:
    """MQTT-1.5.4-3: U+FEFF must be kept, not refused (paho refuses it and wedges a persistent session)."""
    props = patched.Properties(PacketTypes.PUBLISH)
    props.UserProperty = ("device_id", "\ufeffcam")
    assert decoded(patched.Properties(PacketTypes.PUBLISH).unpack(props.pack())[0]) == {"UserProperty": [("device_id", "\ufeffcam")]}


def test_setter_keeps_paho_checks() -> None:
    props = patched.Properties(PacketTypes.PUBLISH)
    with pytest.raises(MQTTException, match="must be one of"):
        props.NoSuchThing = 1
    with pytest.raises(MQTTException, match="does not apply to packet type"):
        props.ReceiveMaximum = 5
    with pytest.raises(MQTTException, match="must be in the range 1-65535"):
        props.TopicAlias = 0
    with pytest.raises(MQTTException, match="must be 0 or 1"):
        props.PayloadFormatIndicator = 2
    props.UserProperty = ("a", "1")
    props.UserProperty = [("b", "2")]
    assert props.UserProperty == [("a", "1"), ("b", "2")]


def test_a_received_block_is_kept_until_the_properties_change() -> None:
    props = patched.Properties(PacketTypes.PUBLISH)
    props.ContentType = "image/png"
    props.UserProperty = [("a", "1"), ("b", "2")]
    block = props.pack()
    received, _used = patched.Properties(PacketTypes.PUBLISH).unpack(block + b"payload")
    assert wire_block(received) == block
    received.UserProperty = ("c", "3")
    assert wire_block(received) is None, "a changed object must not claim its old bytes"
    assert decoded(patched.Properties(PacketTypes.PUBLISH).unpack(received.pack())[0])["UserProperty"][-1] == ("c", "3")


def test_packed_properties_relay_the_block_and_decode_on_demand() -> None:
    props = patched.Properties(PacketTypes.PUBLISH)
    props.ContentType = "image/png"
    props.UserProperty = [("schema", "facepipe/1"), ("seq", "7")]
    block = props.pack()
    relayed = PackedProperties(block)
    assert relayed.pack() is block
    assert relayed.UserProperty == [("schema", "facepipe/1"), ("seq", "7")]
    assert relayed.ContentType == "image/png" and not hasattr(relayed, "ResponseTopic")
    assert relayed.pack() == block
    relayed.UserProperty = ("extra", "1")
    assert relayed.pack() != block and relayed.pack().endswith(b"extra\x00\x011")
