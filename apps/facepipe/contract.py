"""The contract every component, test and benchmark shares: topics, message properties, keys.

A face message is one encoded image crop as the MQTT payload, with its metadata in MQTT 5
properties (content type + user properties). Object keys derive from that metadata alone,
so a redelivered message overwrites its own object instead of adding a copy.

A status message is a component's retained JSON status on `<base>/status/<component>` at the
edge, relayed by the forwarder to `<base>/<device>/status/<component>` in the cloud (`Status`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

SCHEMA = "facepipe/1"

DEFAULT_LOCAL_TOPIC = "cam_bin"
DEFAULT_REMOTE_TOPIC = "cam_bin_remote"
MQTT_PORT = 1883
MQTTS_PORT = 8883

DEFAULT_MAX_PAYLOAD_BYTES = 2 * 1024 * 1024
# A face crop, not a frame: the camera scales a larger crop down to this, the processor refuses more.
DEFAULT_MAX_PIXELS = 1024 * 1024
# A crop is the face box grown by at most this fraction of its size on every side (camera FACEPIPE_CROP_MARGIN);
# the processor refuses an image larger than its `bbox` allows with this margin.
MAX_CROP_MARGIN = 1.0

PNG = "image/png"
JPEG = "image/jpeg"
CONTENT_TYPES = {"png": PNG, "jpeg": JPEG}

# Device, camera and boot ids appear in topics, object keys and file names: keep them tame.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")  # always used with fullmatch
UNKNOWN_DEVICE = "unknown"  # where faces without metadata published on the base topic itself are stored
# Device ids no device may use: the folder of faces whose device no topic proves. The processor also refuses its
# own broker user name as a device (it may only read).
RESERVED_DEVICE_IDS = frozenset({UNKNOWN_DEVICE})

# Names of the user properties, in the order they are published.
USER_PROPERTY_NAMES = (
    "schema", "device", "camera", "boot", "seq", "captured_at",
    "frame", "face", "bbox", "score", "detector", "track",
)  # fmt: skip


# Why the processor rejects a message (facepipe_processor_rejected_total{reason}).
REJECTION_REASONS = (
    "empty", "too_large", "not_image", "bad_content_type", "undecodable", "unsupported_format", "too_many_pixels",
    "bbox_mismatch", "bloated", "bad_metadata", "device_mismatch", "reserved_device", "bad_topic",
)  # fmt: skip


class ContractError(ValueError):
    """A message or identifier that breaks the contract; `reason` is a short, fixed label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def check_id(kind: str, value: str) -> str:
    """Return `value` when it is a valid device/camera/boot id, else raise ContractError."""
    if not ID_PATTERN.fullmatch(value):
        raise ContractError("bad_metadata", f"{kind} {value!r} must match {ID_PATTERN.pattern}")
    return value


def check_device_id(value: str) -> str:
    """Return `value` when a device may use it as its id (valid and not reserved), else raise ContractError."""
    check_id("device", value)
    if value in RESERVED_DEVICE_IDS:
        raise ContractError("reserved_device", f"device id {value!r} is reserved ({', '.join(sorted(RESERVED_DEVICE_IDS))})")
    return value


def remote_topic(base: str, device: str) -> str:
    """The cloud topic a device's forwarder publishes to: `<base>/<device>`."""
    return f"{base}/{device}"


def remote_subscription(base: str, share_group: str = "") -> str:
    """The processor's subscription: every device under `base`, shared when a group is given."""
    topic = f"{base}/#"
    return f"$share/{share_group}/{topic}" if share_group else topic


def device_topics(base: str, device: str) -> tuple[str, str]:
    """What a device may publish on the cloud broker (its ACL): its faces and its components' status."""
    return remote_topic(base, device), remote_status_topic(base, device, "+")


def device_from_topic(base: str, topic: str) -> str:
    """The device id a cloud topic belongs to (`<base>/<device>`), or `unknown` for the base itself."""
    if topic == base:
        return UNKNOWN_DEVICE
    prefix = base + "/"
    if not topic.startswith(prefix) or "/" in topic[len(prefix) :]:
        raise ContractError("bad_topic", f"topic {topic!r} is not {base}/<device>")
    return check_id("device", topic[len(prefix) :])


def max_crop_size(bbox: tuple[int, int, int, int]) -> tuple[int, int]:
    """The largest crop (width, height) a camera sends for a face box: the box and MAX_CROP_MARGIN on every side
    (a crop clipped by the frame's edge or scaled down to the pixel limit is smaller)."""
    _x, _y, w, h = bbox
    return w + 2 * math.ceil(w * MAX_CROP_MARGIN), h + 2 * math.ceil(h * MAX_CROP_MARGIN)


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 UTC with milliseconds, e.g. 2026-11-24T21:34:05.123Z."""
    u = moment.astimezone(UTC)
    return f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}.{u.microsecond // 1000:03d}Z"


def parse_timestamp(text: str) -> datetime:
    """Parse the `captured_at` form written by `format_timestamp`."""
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z", text):
        raise ContractError("bad_metadata", f"captured_at {text!r} is not YYYY-MM-DDTHH:MM:SS.mmmZ")
    try:  # fixed positions, checked above (strptime costs ten times as much)
        fields = (text[0:4], text[5:7], text[8:10], text[11:13], text[14:16], text[17:19])
        return datetime(*map(int, fields), int(text[20:23]) * 1000, tzinfo=UTC)
    except ValueError as exc:
        raise ContractError("bad_metadata", f"captured_at {text!r}: {exc}") from None


@dataclass(frozen=True)
class FaceMeta:
    """The metadata of one published face crop."""

    device: str
    camera: str
    boot: str
    seq: int
    captured_at: datetime
    frame: int
    face: int
    bbox: tuple[int, int, int, int]
    score: float
    detector: str
    content_type: str = PNG
    track: int | None = None

    def user_properties(self) -> list[tuple[str, str]]:
        pairs = [
            ("schema", SCHEMA),
            ("device", self.device),
            ("camera", self.camera),
            ("boot", self.boot),
            ("seq", str(self.seq)),
            ("captured_at", format_timestamp(self.captured_at)),
            ("frame", str(self.frame)),
            ("face", str(self.face)),
            ("bbox", ",".join(str(v) for v in self.bbox)),
            ("score", f"{self.score:.3f}"),
            ("detector", self.detector),
        ]
        if self.track is not None:
            pairs.append(("track", str(self.track)))
        return pairs

    def to_properties(self) -> Properties:
        props = Properties(PacketTypes.PUBLISH)
        props.ContentType = self.content_type
        props.UserProperty = self.user_properties()
        return props

    @classmethod
    def from_user_properties(cls, pairs: list[tuple[str, str]], content_type: str | None) -> FaceMeta:
        """Parse and validate published properties; raise ContractError naming the bad field."""
        fields: dict[str, str] = {}
        for name, value in pairs:
            if name in fields:
                raise ContractError("bad_metadata", f"user property {name!r} appears twice")
            fields[name] = value
        if fields.get("schema") != SCHEMA:
            raise ContractError("bad_metadata", f"schema {fields.get('schema')!r} is not {SCHEMA!r}")
        missing = [n for n in USER_PROPERTY_NAMES if n not in fields and n != "track"]
        if missing:
            raise ContractError("bad_metadata", f"missing user properties: {', '.join(missing)}")
        if content_type not in (PNG, JPEG):
            raise ContractError("bad_content_type", f"content type {content_type!r} is not {PNG} or {JPEG}")
        if not re.fullmatch(r"[A-Za-z0-9._:/+-]{1,64}", fields["detector"]):
            raise ContractError("bad_metadata", f"detector {fields['detector']!r} has unexpected characters")
        bbox = tuple(_int(f"bbox[{i}]", v, minimum=0) for i, v in enumerate(fields["bbox"].split(",")))
        if len(bbox) != 4:
            raise ContractError("bad_metadata", f"bbox {fields['bbox']!r} is not x,y,w,h")
        score = _float("score", fields["score"])
        if not 0.0 <= score <= 1.0:
            raise ContractError("bad_metadata", f"score {score} is outside 0..1")
        track = fields.get("track")
        return cls(
            device=check_id("device", fields["device"]),
            camera=check_id("camera", fields["camera"]),
            boot=check_id("boot", fields["boot"]),
            seq=_int("seq", fields["seq"], minimum=0),
            captured_at=parse_timestamp(fields["captured_at"]),
            frame=_int("frame", fields["frame"], minimum=0),
            face=_int("face", fields["face"], minimum=0),
            bbox=(bbox[0], bbox[1], bbox[2], bbox[3]),
            score=score,
            detector=fields["detector"],
            content_type=content_type,
            track=None if track is None else _int("track", track, minimum=0),
        )

    @classmethod
    def from_properties(cls, props: Properties | None) -> FaceMeta:
        if props is None:
            raise ContractError("bad_metadata", "message has no MQTT 5 properties")
        return cls.from_user_properties(list(getattr(props, "UserProperty", [])), getattr(props, "ContentType", None))

    def storage_metadata(self) -> dict[str, str]:
        """The metadata stored with the object (S3 user metadata / directory sidecar).

        Names use hyphens (`captured-at`): S3 metadata travels as HTTP headers, where
        underscores are rewritten or dropped by some servers and proxies.
        """
        return {name.replace("_", "-"): value for name, value in self.user_properties()}

    @classmethod
    def from_storage_metadata(cls, metadata: dict[str, str]) -> FaceMeta:
        """Parse what `storage_metadata` wrote (objects are always PNG)."""
        return cls.from_user_properties([(name.replace("-", "_"), value) for name, value in metadata.items()], PNG)


def _int(name: str, text: str, minimum: int) -> int:
    if not re.fullmatch(r"[0-9]{1,12}", text):
        raise ContractError("bad_metadata", f"{name} {text!r} is not a non-negative integer")
    value = int(text)
    if value < minimum:
        raise ContractError("bad_metadata", f"{name} {value} is below {minimum}")
    return value


def _float(name: str, text: str) -> float:
    if not re.fullmatch(r"[0-9]{1,3}(\.[0-9]{1,6})?", text):
        raise ContractError("bad_metadata", f"{name} {text!r} is not a decimal number")
    return float(text)


def _time_of_day(moment: datetime) -> str:
    utc = moment.astimezone(UTC)
    return f"{utc.hour:02d}{utc.minute:02d}{utc.second:02d}.{utc.microsecond // 1000:03d}"


def object_key(prefix: str, meta: FaceMeta) -> str:
    """`<prefix>/<device>/<YYYY>/<MM>/<DD>/<HHMMSS.mmm>_<camera>_<boot>_<seq>.png`."""
    name = f"{_time_of_day(meta.captured_at)}_{meta.camera}_{meta.boot}_{meta.seq}.png"
    return day_prefix(prefix, meta.device, meta.captured_at.astimezone(UTC).date()) + name


def anonymous_key(prefix: str, device: str, arrived_at: datetime, payload: bytes) -> str:
    """Key for a face without metadata (an MQTT 3.1.1 publisher): arrival time + payload SHA-256."""
    digest = hashlib.sha256(payload).hexdigest()
    return f"{day_prefix(prefix, device, arrived_at.astimezone(UTC).date())}{_time_of_day(arrived_at)}_sha256-{digest}.png"


# The name part of a key: `<HHMMSS.mmm>_<camera>_<boot>_<seq>.png`, or `<HHMMSS.mmm>_sha256-<hex>.png` without metadata.
_KEY_NAME = re.compile(
    r"(?P<time>[0-9]{6}\.[0-9]{3})_(?:sha256-(?P<sha256>[0-9a-f]{64})|(?P<camera>[A-Za-z0-9._-]+)_(?P<boot>[A-Za-z0-9.-]+)_(?P<seq>[0-9]{1,12}))\.png"
)
_KEY_DATE = re.compile(r"[0-9]{4}/[0-9]{2}/[0-9]{2}")


@dataclass(frozen=True)
class KeyFacts:
    """What an object key tells without reading the object. `camera`, `boot`, `seq` are None for a face
    stored without metadata (keyed by its payload's hash). The boot id is taken to hold no `_`
    (cameras make it hex), so a camera id may."""

    device: str
    captured_at: datetime
    name: str
    camera: str | None = None
    boot: str | None = None
    seq: int | None = None


def device_prefix(prefix: str, device: str) -> str:
    """`<prefix>/<device>/`: everything stored for one device."""
    return "/".join(p for p in (prefix.strip("/"), device) if p) + "/"


def day_prefix(prefix: str, device: str, day: date) -> str:
    """`<prefix>/<device>/<YYYY>/<MM>/<DD>/`: one device's faces of one UTC day."""
    return f"{device_prefix(prefix, device)}{day.year:04d}/{day.month:02d}/{day.day:02d}/"


def parse_object_key(prefix: str, key: str) -> KeyFacts:
    """The facts of a key written by `object_key` or `anonymous_key` under `prefix`; ContractError (bad_key) otherwise."""
    root = prefix.strip("/")
    relative = key[len(root) + 1 :] if root and key.startswith(root + "/") else key if not root else None
    parts = relative.split("/") if relative is not None else []
    if len(parts) != 5 or not ID_PATTERN.fullmatch(parts[0]) or not _KEY_DATE.fullmatch("/".join(parts[1:4])):
        raise ContractError("bad_key", f"{key!r} is not {root + '/' if root else ''}<device>/<YYYY>/<MM>/<DD>/<name>.png")
    name = _KEY_NAME.fullmatch(parts[4])
    if name is None:
        raise ContractError("bad_key", f"{parts[4]!r} is not <HHMMSS.mmm>_<camera>_<boot>_<seq>.png or <HHMMSS.mmm>_sha256-<hex>.png")
    t = name["time"]
    try:
        captured = datetime(int(parts[1]), int(parts[2]), int(parts[3]), int(t[0:2]), int(t[2:4]), int(t[4:6]), int(t[7:10]) * 1000, UTC)
    except ValueError as exc:
        raise ContractError("bad_key", f"{key!r}: {exc}") from None
    seq = name["seq"]
    return KeyFacts(parts[0], captured, parts[4], name["camera"], name["boot"], None if seq is None else int(seq))


# --- status -------------------------------------------------------------------------------------

STATUS_SCHEMA = "facepipe-status/1"
STATUS_CONTENT_TYPE = "application/json"
STATUS_COMPONENTS = ("camera", "logger", "forwarder")  # the edge components that announce themselves
STATUS_STATES = ("online", "offline")
# The camera's video source: opening (first attempt under way), opened (frames coming), retrying
# (a live source that does not open or stopped; retried), failed (gave up: the camera exits),
# ended (a file or folder read to its end).
SOURCE_STATES = ("opening", "opened", "retrying", "failed", "ended")
MAX_STATUS_BYTES = 4096


def status_topic(base: str, component: str) -> str:
    """A component's status topic on the edge broker: `<base>/status/<component>`."""
    return f"{base}/status/{component}"


def remote_status_topic(base: str, device: str, component: str) -> str:
    """Where the forwarder relays it in the cloud, in the device's subtree: `<base>/<device>/status/<component>`."""
    return f"{base}/{device}/status/{component}"


def remote_status_subscription(base: str) -> str:
    """Every device's status (never shared: retained messages are not sent to shared subscriptions)."""
    return remote_status_topic(base, "+", "+")


def status_from_topic(base: str, topic: str) -> tuple[str, str] | None:
    """(device, component) of a cloud status topic; None for any other topic."""
    parts = topic[len(base) + 1 :].split("/") if topic.startswith(base + "/") else []
    if len(parts) == 3 and parts[1] == "status" and parts[2] in STATUS_COMPONENTS and ID_PATTERN.fullmatch(parts[0]):
        return parts[0], parts[2]
    return None


@dataclass(frozen=True)
class Capture:
    """The camera's part of its status: is it seeing anything, and is anybody there."""

    camera: str
    source: str  # one of SOURCE_STATES
    frames_read: int  # since the camera started (boot)
    frames_analysed: int
    faces: int  # detected
    fps: float  # frames read per second since the previous status


@dataclass(frozen=True)
class Status:
    """One component's status: `online` on connect and every `interval` seconds, `offline` on a
    clean stop and as the MQTT last will (a will carries no capture: it was armed at connect)."""

    device: str
    component: str
    state: str  # one of STATUS_STATES
    boot: str  # random per process run
    sent_at: datetime  # a will's is the time it was armed
    interval: float  # seconds to the next status while online; 0: none
    capture: Capture | None = None

    def to_json(self) -> bytes:
        doc: dict[str, object] = {
            "schema": STATUS_SCHEMA, "device": self.device, "component": self.component, "state": self.state,
            "boot": self.boot, "sent_at": format_timestamp(self.sent_at), "interval": self.interval,
        }  # fmt: skip
        if self.capture is not None:
            doc.update(vars(self.capture))
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, payload: bytes) -> Status:
        """Parse and validate a status payload; raise ContractError("bad_status", ...) naming the bad field."""
        if len(payload) > MAX_STATUS_BYTES:
            raise ContractError("bad_status", f"status of {len(payload)} bytes (at most {MAX_STATUS_BYTES})")
        try:
            doc = json.loads(payload)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ContractError("bad_status", f"not JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("schema") != STATUS_SCHEMA:
            raise ContractError("bad_status", f"not a {STATUS_SCHEMA} object")
        try:
            component = _choice(doc, "component", STATUS_COMPONENTS)
            capture = None
            if component == "camera" and "source" in doc:
                capture = Capture(
                    camera=check_id("camera", _text(doc, "camera")),
                    source=_choice(doc, "source", SOURCE_STATES),
                    frames_read=_count(doc, "frames_read"),
                    frames_analysed=_count(doc, "frames_analysed"),
                    faces=_count(doc, "faces"),
                    fps=_number(doc, "fps"),
                )
            return cls(
                device=check_id("device", _text(doc, "device")),
                component=component,
                state=_choice(doc, "state", STATUS_STATES),
                boot=check_id("boot", _text(doc, "boot")),
                sent_at=parse_timestamp(_text(doc, "sent_at")),
                interval=_number(doc, "interval"),
                capture=capture,
            )
        except ContractError as exc:
            raise ContractError("bad_status", exc.detail) from None


def _text(doc: dict[str, object], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str):
        raise ContractError("bad_status", f"{name} {value!r} is not a string")
    return value


def _choice(doc: dict[str, object], name: str, choices: tuple[str, ...]) -> str:
    value = doc.get(name)
    if value not in choices:
        raise ContractError("bad_status", f"{name} {value!r} is not one of {', '.join(choices)}")
    return str(value)


def _count(doc: dict[str, object], name: str) -> int:
    value = doc.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
        raise ContractError("bad_status", f"{name} {value} is not a count")
    return value


def _number(doc: dict[str, object], name: str) -> float:
    value = doc.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not 0 <= value < 1e9:
        raise ContractError("bad_status", f"{name} {value!r} is not a non-negative number")
    return float(value)
