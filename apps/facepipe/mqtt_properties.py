"""paho-mqtt's MQTT 5 property codec, replaced by one that does the same work in linear time.

paho's `Properties` is pure Python written for clarity: every received field slices the rest of
the packet (the 17 KiB image included), every name lookup scans a table and every object
rebuilds its tables. A face carries 13 properties, so decoding them cost 0.16 ms per message,
the largest single cost of the forwarder and a large one of the logger and processor.

`install()` swaps the hot methods of `paho.mqtt.properties.Properties` for the ones below, for
every paho client in the process; the entry points call it (`facepipe.cli.main`, the bench, the
test session), importing this module changes nothing. It patches paho's internals, so
apps/pyproject.toml pins paho-mqtt to the exact version it was checked against. Once installed,
a received block is kept with its Properties (`wire_block`), which the forwarder relays as is.

`PackedProperties`, the byte-for-byte relay of a spooled block, is domain logic and works with or
without the patch (without it `wire_block` finds nothing and the forwarder re-encodes).
Results are identical (tests/unit/test_mqtt_properties.py compares both codecs on generated
properties and packets); errors differ on purpose in two ways:

- anything malformed raises `MalformedPacket`, which paho turns into a protocol error and a
  reconnect; paho itself let `KeyError`/`UnicodeDecodeError`/`IndexError` escape for an unknown
  identifier, invalid UTF-8 or a value running past the property block.
- U+FEFF is accepted: MQTT-1.5.4-3 says a receiver must not strip it, it is a valid character.
  paho treated it as a protocol error, and a persistent session then redelivered the same
  message forever, wedging the processor or forwarder behind one hostile publish (Mosquitto
  accepts it). The other checks (surrogates, NUL) stay.
"""

from __future__ import annotations

import struct
from typing import Any

from paho.mqtt.exception import MalformedPacket, MQTTException
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties, VariableByteIntegers

BYTE, INT16, INT32, VARIABLE_INT, BINARY, STRING, STRING_PAIR = range(7)

_TABLES = Properties(PacketTypes.PUBLISH)
_TYPES: list[str] = _TABLES.types
_NAMES: dict[str, int] = _TABLES.names
_SPECS: dict[int, tuple[int, list[int]]] = _TABLES.properties
if _TYPES != [
    "Byte",
    "Two Byte Integer",
    "Four Byte Integer",
    "Variable Byte Integer",
    "Binary Data",
    "UTF-8 Encoded String",
    "UTF-8 String Pair",
]:
    raise ImportError(f"paho-mqtt's property types changed ({_TYPES}): facepipe.mqtt_properties needs updating")

_IDENT_OF = {name.replace(" ", ""): ident for name, ident in _NAMES.items()}
_SPACED_NAME_OF = {ident: name for name, ident in _NAMES.items()}
_NAME_OF = {ident: name.replace(" ", "") for name, ident in _NAMES.items()}
_PACK_ORDER = [(name.replace(" ", ""), ident, _SPECS[ident][0]) for name, ident in _NAMES.items()]
_MULTIPLE = frozenset({11, 38})
# paho's own attributes, plus the received block (`_wire`, dropped on any change) and PackedProperties' flag.
_PRIVATE = frozenset({"packetType", "types", "names", "properties", "_wire", "_decoded"})
_RANGES = {
    "ReceiveMaximum": (1, 65535),
    "TopicAlias": (1, 65535),
    "TopicAliasMaximum": (0, 65535),
    "MaximumPacketSize": (1, 268435455),
    "SubscriptionIdentifier": (1, 268435455),
    "RequestResponseInformation": (0, 1),
    "RequestProblemInformation": (0, 1),
    "PayloadFormatIndicator": (0, 1),
}
_INT16 = struct.Struct("!H")
_INT32 = struct.Struct("!L")


def _init(self: Properties, packet_type: int) -> None:
    """Share the (read-only) tables instead of rebuilding them for every packet."""
    object.__setattr__(self, "packetType", packet_type)
    object.__setattr__(self, "types", _TYPES)
    object.__setattr__(self, "names", _NAMES)
    object.__setattr__(self, "properties", _SPECS)


def _setattr(self: Properties, name: str, value: Any) -> None:
    """paho's checks (known name, allowed in this packet type, value range), by dict lookup."""
    name = name.replace(" ", "")
    if name in _PRIVATE:
        object.__setattr__(self, name, value)
        return
    ident = _IDENT_OF.get(name)
    if ident is None:
        raise MQTTException(f"Property name must be one of {_NAMES.keys()}")
    if self.packetType not in _SPECS[ident][1]:
        raise MQTTException(f"Property {name} does not apply to packet type {PacketTypes.Names[self.packetType]}")
    if not isinstance(value, list) and name in _RANGES:
        low, high = _RANGES[name]
        if not low <= value <= high:
            bounds = "0 or 1" if high == 1 else f"in the range {low}-{high}"
            raise MQTTException(f"{name} property value must be {bounds}")
    if ident in _MULTIPLE:
        if not isinstance(value, list):
            value = [value]
        if name in self.__dict__:
            value = self.__dict__[name] + value
    self.__dict__.pop("_wire", None)
    object.__setattr__(self, name, value)


def _ident_from_name(self: Properties, compressed_name: str) -> int:
    return _IDENT_OF.get(compressed_name, -1)


def _name_from_ident(self: Properties, identifier: int) -> str | None:
    return _SPACED_NAME_OF.get(identifier)


def _set_names(self: Properties) -> list[str]:
    return [name for name in self.__dict__ if name not in _PRIVATE]


def _clear(self: Properties) -> None:
    for name in _set_names(self):
        delattr(self, name)
    self.__dict__.pop("_wire", None)


def _is_empty(self: Properties) -> bool:
    return not _set_names(self)


def _encode_string(text: str | bytes) -> bytes:
    data = text if isinstance(text, bytes) else text.encode("utf-8")
    return _INT16.pack(len(data)) + data


def _encode_value(kind: int, value: Any) -> bytes:
    if kind == STRING_PAIR:
        return _encode_string(value[0]) + _encode_string(value[1])
    if kind == STRING:
        return _encode_string(value)
    if kind == BYTE:
        return bytes([value])
    if kind == INT16:
        return _INT16.pack(value)
    if kind == INT32:
        return _INT32.pack(value)
    if kind == VARIABLE_INT:
        return VariableByteIntegers.encode(value)
    return _INT16.pack(len(value)) + value


def _pack(self: Properties) -> bytes:
    """Serialise in paho's order (the order of `Properties.names`), byte for byte like paho."""
    present = self.__dict__
    parts: list[bytes] = []
    for name, ident, kind in _PACK_ORDER:
        if name in present:
            values = present[name] if ident in _MULTIPLE else (present[name],)
            parts.extend(VariableByteIntegers.encode(ident) + _encode_value(kind, value) for value in values)
    body = b"".join(parts)
    return VariableByteIntegers.encode(len(body)) + body


def _read_variable_int(view: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = 0
    for shift in (0, 7, 14, 21):
        if pos >= end:
            raise MalformedPacket("Not enough data to decode Variable Byte Integer")
        digit = view[pos]
        pos += 1
        value |= (digit & 0x7F) << shift
        if not digit & 0x80:
            return value, pos
    raise MalformedPacket("Variable Byte Integer is more than four bytes long")


def _read_length_prefixed(view: memoryview, pos: int, end: int, what: str) -> tuple[memoryview, int]:
    if pos + 2 > end:
        raise MalformedPacket(f"Not enough data to read {what} length")
    start = pos + 2
    stop = start + ((view[pos] << 8) | view[pos + 1])
    if stop > end:
        raise MalformedPacket(f"Length delimited {what} too long")
    return view[start:stop], stop


def _read_string(view: memoryview, pos: int, end: int) -> tuple[str, int]:
    data, pos = _read_length_prefixed(view, pos, end, "string")
    try:
        text = str(data, "utf-8")  # strict UTF-8 also rejects surrogates: MQTT-1.5.4-1
    except UnicodeDecodeError as exc:
        raise MalformedPacket(f"[MQTT-1.5.4-1] invalid UTF-8 data: {exc.reason}") from None
    if "\x00" in text:
        raise MalformedPacket("[MQTT-1.5.4-2] Null found in UTF-8 data")
    return text, pos


def _read_fixed(view: memoryview, pos: int, end: int, size: int) -> tuple[int, int]:
    if pos + size > end:
        raise MalformedPacket("Property value runs past the property block")
    return int.from_bytes(view[pos : pos + size], "big"), pos + size


def _read_value(kind: int, view: memoryview, pos: int, end: int) -> tuple[Any, int]:
    if kind == STRING:
        return _read_string(view, pos, end)
    if kind == BYTE:
        return _read_fixed(view, pos, end, 1)
    if kind == INT16:
        return _read_fixed(view, pos, end, 2)
    if kind == INT32:
        return _read_fixed(view, pos, end, 4)
    if kind == VARIABLE_INT:
        return _read_variable_int(view, pos, end)
    data, pos = _read_length_prefixed(view, pos, end, "binary data")
    return bytes(data), pos


def _unpack(self: Properties, buffer: bytes | bytearray) -> tuple[Properties, int]:
    """Decode the property block at the start of `buffer`; return (self, bytes used)."""
    self.clear()
    view = memoryview(buffer)
    length, pos = _read_variable_int(view, 0, len(view))
    end = pos + length
    if end > len(view):
        raise MalformedPacket("Property length runs past the end of the packet")
    pairs: list[tuple[str, str]] = []
    while pos < end:
        ident, pos = _read_variable_int(view, pos, end)
        spec = _SPECS.get(ident)
        if spec is None:
            raise MalformedPacket(f"Unknown property identifier {ident}")
        if spec[0] == STRING_PAIR:
            key, pos = _read_string(view, pos, end)
            value, pos = _read_string(view, pos, end)
            pairs.append((key, value))
            continue
        value, pos = _read_value(spec[0], view, pos, end)
        name = _NAME_OF[ident]
        if ident not in _MULTIPLE and name in self.__dict__:
            raise MalformedPacket(f"Property {name} must not exist more than once")
        setattr(self, name, value)
    if pairs:
        self.UserProperty = pairs
    object.__setattr__(self, "_wire", bytes(view[:end]))
    return self, end


def wire_block(props: Properties) -> bytes | None:
    """The block `props` was decoded from, byte for byte, if it has not been changed since."""
    return props.__dict__.get("_wire")


class PackedProperties(Properties):
    """An encoded property block: `pack()` returns it unchanged; attributes are decoded on first use.

    For relaying a message: the forwarder republishes what it received without decoding and
    re-encoding 13 properties; reading or changing an attribute behaves as on any Properties.
    """

    def __init__(self, block: bytes) -> None:
        super().__init__(PacketTypes.PUBLISH)
        object.__setattr__(self, "_wire", block)
        object.__setattr__(self, "_decoded", False)

    def pack(self) -> bytes:
        block = wire_block(self)
        return block if block is not None else _pack(self)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or self.__dict__.get("_decoded", True):
            raise AttributeError(name)
        object.__setattr__(self, "_decoded", True)
        _unpack(self, self.__dict__["_wire"])
        return object.__getattribute__(self, name)


def install() -> None:
    """Patch paho's Properties in place (idempotent); every client in the process benefits."""
    Properties.__init__ = _init  # type: ignore[method-assign]
    Properties.__setattr__ = _setattr  # type: ignore[method-assign]
    Properties.getIdentFromName = _ident_from_name  # type: ignore[method-assign]
    Properties.getNameFromIdent = _name_from_ident  # type: ignore[method-assign]
    Properties.clear = _clear  # type: ignore[method-assign]
    Properties.isEmpty = _is_empty  # type: ignore[method-assign]
    Properties.pack = _pack  # type: ignore[method-assign]
    Properties.unpack = _unpack  # type: ignore[method-assign]
