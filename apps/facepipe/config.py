"""Configuration of every component, in one place: environment variables with matching flags.

Each setting is a dataclass field carrying its environment variable, help text and check: its limits as
data (`Limits`, `choices`), from which `python -m facepipe_dev.generate` writes the charts'
values.schema.json entries and the README's configuration table, or a function for what no limit says.
A value comes from the command-line flag if given, else from the environment, else the default.
`--check-config` prints the effective configuration (secrets masked) and exits; a bad value
exits with status 2 and a message naming the flag and the variable.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import socket
import sys
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from facepipe import contract

T = TypeVar("T")
Check = Callable[[Any], str | None]


class ConfigError(ValueError):
    """One or more settings are invalid; the message lists each with its flag and variable."""


def setting(
    default: Any,
    env: str | tuple[str, ...],
    help: str,
    *,
    choices: tuple[str, ...] | None = None,
    check: Check | None = None,
    secret: bool = False,
) -> Any:
    """Declare a setting. `env` is the variable name (or names: the first one wins)."""
    names = (env,) if isinstance(env, str) else env
    meta = {"env": names, "help": help, "choices": choices, "check": check, "secret": secret}
    return field(default=default, metadata=meta)


def group(prefix_env: str, prefix_flag: str, factory: Callable[[], Any], help: str) -> Any:
    """Declare a nested group whose variables are `<prefix_env><NAME>` and flags `--<prefix_flag>-<name>`."""
    meta = {"group": (prefix_env, prefix_flag), "help": help}
    return field(default_factory=factory, metadata=meta)


@dataclass(frozen=True)
class Limits:
    """A setting's allowed values as data: the app checks a value against them (`limits(value)` is the problem or
    None) and `python -m facepipe_dev.generate` writes them into each chart's values.schema.json."""

    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False  # the minimum itself is not allowed
    off: float | None = None  # one value allowed outside the range, meaning "off"
    pattern: str | None = None  # a regular expression the whole value must match
    message: str = ""  # how the problem is said (default: from the limits)

    def __call__(self, value: Any) -> str | None:
        if self.pattern is not None:
            return None if re.fullmatch(self.pattern, value) else self.message or f"must match {self.pattern}"
        if self.off is not None and value == self.off:
            return None
        low = self.minimum is None or (value > self.minimum if self.exclusive_minimum else value >= self.minimum)
        high = self.maximum is None or value <= self.maximum
        return None if low and high else self.message or self.describe()

    def describe(self) -> str:
        """The limits in words: "must be between 0 and 3600", "must be 0 (off) or between 1 and 1000"."""
        if self.pattern is not None:
            return f"must match {self.pattern}"
        off = f"{self.off:g} (off) or " if self.off is not None else ""
        if self.minimum is not None and self.maximum is not None and not self.exclusive_minimum:
            return f"must be {off}between {self.minimum:g} and {self.maximum:g}"
        parts = []
        if self.minimum is not None:
            parts.append(f"greater than {self.minimum:g}" if self.exclusive_minimum else f"{self.minimum:g} or more")
        if self.maximum is not None:
            parts.append(f"at most {self.maximum:g}")
        return f"must be {off}{' and '.join(parts)}"


port = Limits(1, 65535, message="must be a TCP port (1..65535)")
http_port = Limits(0, 65535, message="must be 0 (disabled) or a TCP port (1..65535)")
qos = Limits(0, 1, message="must be 0 or 1")
positive = Limits(0, exclusive_minimum=True, message="must be greater than 0")
non_negative = Limits(0, message="must be 0 or more")
fraction = Limits(0.0, 1.0, message="must be between 0 and 1")
identifier = Limits(pattern=contract.ID_PATTERN.pattern)
keepalive = Limits(1, 65535, message="must be 1..65535 seconds (MQTT's limit)")
retry_seconds = Limits(0.1, 3600)


def device_identifier(value: str) -> str | None:
    try:
        contract.check_device_id(value)
    except contract.ContractError as exc:
        return exc.detail
    return None


def topic_name(value: str) -> str | None:
    if not value or any(c in value for c in "+#\0") or value.startswith("$") or value.endswith("/"):
        return "must be a non-empty MQTT topic name without wildcards, a leading $ or a trailing /"
    return None


def store_url(value: str) -> str | None:
    if value.startswith("file://") and len(value) > len("file://"):
        return None
    if value.startswith("s3://") and value[len("s3://") :].split("/", 1)[0]:
        return None
    return "must be file:///path/to/dir or s3://bucket[/prefix]"


DEFAULT_SPOOL_DIR = "/var/lib/facepipe/spool"
# The user name and password of a URL (`rtsp://user:pass@host/...`): masked wherever settings or sources are shown.
URL_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/@]*@)")


def redact_url(text: str) -> str:
    """`text` as it may be shown: a URL's user name and password replaced by `***`."""
    return URL_USERINFO.sub(r"\1***@", text)


def default_device_id() -> str:
    """The host name, made into a valid id (pods get their pod name)."""
    name = "".join(c if c.isalnum() or c in "._-" else "-" for c in socket.gethostname())
    return name.strip("-._")[:63] or "device"


@dataclass(frozen=True)
class BrokerSettings:
    """One MQTT broker connection; used with the LOCAL_MQTT_ or REMOTE_MQTT_ prefix."""

    host: str = setting("localhost", "HOST", "broker host name or address")
    port: int = setting(contract.MQTT_PORT, "PORT", f"broker port ({contract.MQTT_PORT} plain, {contract.MQTTS_PORT} TLS)", check=port)
    topic: str = setting(contract.DEFAULT_LOCAL_TOPIC, "TOPIC", "topic (the base topic for the cloud)", check=topic_name)
    qos: int = setting(1, "QOS", "MQTT QoS for this hop (0 or 1)", check=qos)
    username: str = setting("", "USERNAME", "user name (empty: anonymous)")
    password: str = setting("", "PASSWORD", "password", secret=True)
    tls: bool = setting(False, "TLS", "connect with TLS")
    ca_file: str = setting("", "CA_FILE", "CA bundle that signs the broker's certificate (TLS)")
    cert_file: str = setting("", "CERT_FILE", "client certificate for mutual TLS")
    key_file: str = setting("", "KEY_FILE", "client key for mutual TLS", secret=True)
    client_id: str = setting("", "CLIENT_ID", "MQTT client id (empty: facepipe-<component>-<device>)")
    keepalive: int = setting(30, "KEEPALIVE", "keepalive seconds", check=keepalive)

    @property
    def address(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def remote_broker() -> BrokerSettings:
    return BrokerSettings(topic=contract.DEFAULT_REMOTE_TOPIC)


@dataclass(frozen=True)
class CommonSettings:
    """What every long-running component shares: identity, HTTP endpoint, logging."""

    device_id: str = setting(default_device_id(), "FACEPIPE_DEVICE_ID", "this device's id (topics, keys)", check=device_identifier)
    http_host: str = setting("0.0.0.0", "FACEPIPE_HTTP_HOST", "address of the /healthz /readyz /metrics server")
    http_port: int = setting(8080, "FACEPIPE_HTTP_PORT", "port of the /healthz /readyz /metrics server (0: off)", check=http_port)
    log_level: str = setting("info", "FACEPIPE_LOG_LEVEL", "log level", choices=("debug", "info", "warning", "error"))
    log_format: str = setting("json", "FACEPIPE_LOG_FORMAT", "log line format", choices=("json", "text"))
    summary_file: str = setting("", "FACEPIPE_SUMMARY_FILE", "write a JSON summary of the counters here on exit")


def common() -> CommonSettings:
    return CommonSettings()


@dataclass(frozen=True)
class StatusSettings:
    """The retained status an edge component keeps on its broker (contract.Status)."""

    status_interval: float = setting(
        30.0,
        "FACEPIPE_STATUS_INTERVAL_SECONDS",
        "seconds between refreshes of the component's retained status (the camera's heartbeat; 0: only on connect and stop)",
        check=non_negative,
    )


@dataclass(frozen=True)
class DetectorSettings:
    """Face detection on the camera."""

    detector: str = setting("yunet", "FACEPIPE_DETECTOR", "face detector", choices=("yunet", "haar"))
    model: str = setting("", "FACEPIPE_MODEL", "model name from models/manifest.json (empty: the detector's default, yunet-n-320 or haar)")
    model_dir: str = setting("", "FACEPIPE_MODEL_DIR", "directory of fetched model files (empty: the default cache)")
    score_threshold: float = setting(0.5, "FACEPIPE_SCORE_THRESHOLD", "minimum detector score (yunet)", check=fraction)
    detect_width: int = setting(
        320, "FACEPIPE_DETECT_WIDTH", "width of the downscaled copy detection runs on (0: full size)", check=Limits(0, 7680)
    )
    min_face: int = setting(20, "FACEPIPE_MIN_FACE", "smallest face kept, in source pixels", check=non_negative)
    full_detect_seconds: float = setting(
        4.0,
        "FACEPIPE_FULL_DETECT_SECONDS",
        "seconds between full-resolution detection passes on a video (the first frame gets one), for faces too small "
        "for the FACEPIPE_DETECT_WIDTH copy; each image of a folder gets one (0: never, the copy only)",
        check=non_negative,
    )
    full_detect_width: int = setting(
        640,
        "FACEPIPE_FULL_DETECT_WIDTH",
        "widest copy a video's full pass searches (never upscaled; 0: the frame's own resolution); "
        "each image of a folder is searched at its own resolution",
        check=Limits(0, 7680),
    )
    confirm_below: float = setting(
        0.7,
        "FACEPIPE_CONFIRM_BELOW",
        "yunet detections scoring below this get a second look at their neighbourhood, cut from the full frame, and "
        "are dropped unless it finds the face again (rejects hands and fists; 0: no second look)",
        check=fraction,
    )


@dataclass(frozen=True)
class CameraSettings:
    common: CommonSettings = group("", "", common, "common")
    broker: BrokerSettings = group("LOCAL_MQTT_", "local", BrokerSettings, "edge broker the camera publishes to")
    status: StatusSettings = group("", "", StatusSettings, "status")
    detect: DetectorSettings = group("", "", DetectorSettings, "detector")
    source: str = setting(
        "/dev/video0",
        "FACEPIPE_SOURCE",
        "V4L2 device (path or index), rtsp:// or http(s):// URL (credentials: FACEPIPE_SOURCE_USERNAME/_PASSWORD), video file, "
        "or image directory",
    )
    source_username: str = setting("", "FACEPIPE_SOURCE_USERNAME", "user name for a stream source (from a Secret; never logged)")
    source_password: str = setting(
        "", "FACEPIPE_SOURCE_PASSWORD", "password for a stream source (from a Secret; never logged)", secret=True
    )
    camera_id: str = setting("cam0", "FACEPIPE_CAMERA_ID", "this camera's id (properties, keys)", check=identifier)
    crop_margin: float = setting(
        0.2,
        "FACEPIPE_CROP_MARGIN",
        f"margin added around each face, as a fraction of its size (at most {contract.MAX_CROP_MARGIN:g}: the processor "
        "refuses crops larger than their face box allows with that margin)",
        check=Limits(0, contract.MAX_CROP_MARGIN),
    )
    image_format: str = setting("png", "FACEPIPE_IMAGE_FORMAT", "encoding of the published crops", choices=("png", "jpeg"))
    jpeg_quality: int = setting(90, "FACEPIPE_JPEG_QUALITY", "JPEG quality (1..100)", check=Limits(1, 100, message="must be 1..100"))
    png_compression: int = setting(
        1, "FACEPIPE_PNG_COMPRESSION", "PNG compression level (0..9)", check=Limits(0, 9, message="must be 0..9")
    )
    realtime: bool = setting(False, "FACEPIPE_REALTIME", "play a file at its own frame rate and drop frames like a live camera")
    loop: bool = setting(False, "FACEPIPE_LOOP", "start a file or image directory again when it ends")
    max_fps: float = setting(0.0, "FACEPIPE_MAX_FPS", "cap on frames analysed per second (0: no cap)", check=Limits(0, 1000))
    publish_policy: str = setting(
        "track",
        "FACEPIPE_PUBLISH_POLICY",
        "every: each face of each frame (the original); track: a face's first crop, a better one at most every "
        "FACEPIPE_TRACK_REPUBLISH_SECONDS, the best when it leaves",
        choices=("track", "every"),
    )
    track_republish_seconds: float = setting(
        10.0,
        "FACEPIPE_TRACK_REPUBLISH_SECONDS",
        "with the track policy, the shortest time between two crops of one face",
        check=Limits(0, 86400),
    )
    motion_gate: bool = setting(False, "FACEPIPE_MOTION_GATE", "skip detection on frames without motion (a cheap frame difference)")
    motion_threshold: float = setting(
        0.005, "FACEPIPE_MOTION_THRESHOLD", "fraction of changed pixels that counts as motion", check=fraction
    )
    motion_max_skip_seconds: float = setting(
        2.0,
        "FACEPIPE_MOTION_MAX_SKIP_SECONDS",
        "detect at least this often even without motion",
        check=Limits(0, 3600, exclusive_minimum=True),
    )
    stable_max_fps: float = setting(
        0.0,
        "FACEPIPE_STABLE_MAX_FPS",
        "with the track policy, cap on frames analysed per second while the faces in view are stable: tracked, none new "
        "for FACEPIPE_STABLE_AFTER_SECONDS (0: no such cap)",
        check=Limits(1, 1000, off=0, message="must be 0 (off) or between 1 (a track ends after a second unseen) and 1000"),
    )
    stable_after_seconds: float = setting(
        0.0,
        "FACEPIPE_STABLE_AFTER_SECONDS",
        "the faces in view count as stable once no new one has appeared for this long (0: as soon as they are tracked)",
        check=Limits(0, 3600),
    )
    reconnect_seconds: float = setting(
        5.0, "FACEPIPE_SOURCE_RETRY_SECONDS", "wait before reopening a live source that failed", check=retry_seconds
    )


@dataclass(frozen=True)
class LoggerSettings:
    common: CommonSettings = group("", "", common, "common")
    broker: BrokerSettings = group("LOCAL_MQTT_", "local", BrokerSettings, "edge broker the logger subscribes to")
    status: StatusSettings = group("", "", StatusSettings, "status")
    loss_grace_seconds: float = setting(
        5.0,
        "FACEPIPE_LOSS_GRACE_SECONDS",
        "a missing seq counts as lost if it has not arrived this long after its gap showed",
        check=non_negative,
    )


@dataclass(frozen=True)
class ForwarderSettings:
    common: CommonSettings = group("", "", common, "common")
    local: BrokerSettings = group("LOCAL_MQTT_", "local", BrokerSettings, "edge broker to read faces from")
    remote: BrokerSettings = group("REMOTE_MQTT_", "remote", remote_broker, "cloud broker to forward faces to")
    status: StatusSettings = group("", "", StatusSettings, "status")
    max_inflight: int = setting(
        100, "FACEPIPE_MAX_INFLIGHT", "unacknowledged QoS 1 messages in flight to the cloud", check=Limits(1, 65535)
    )
    spool_dir: str = setting(
        DEFAULT_SPOOL_DIR,
        "FACEPIPE_SPOOL_DIR",
        "on-disk spool of faces not yet acknowledged by the cloud (a volume that survives restarts)",
    )
    spool_max_bytes: int = setting(
        1024**3, "FACEPIPE_SPOOL_MAX_BYTES", "spool size limit; beyond it the oldest faces are dropped and counted", check=positive
    )
    spool_max_age_seconds: float = setting(
        7 * 86400.0,
        "FACEPIPE_SPOOL_MAX_AGE_SECONDS",
        "faces older than this are dropped from the spool and counted (0: no limit)",
        check=non_negative,
    )


@dataclass(frozen=True)
class StoreSettings:
    """Where processed faces go."""

    store: str = setting("file:///var/lib/facepipe/faces", "FACEPIPE_STORE", "file:///dir or s3://bucket/prefix", check=store_url)
    s3_endpoint_url: str = setting("", "AWS_ENDPOINT_URL", "S3 endpoint for S3-compatible stores (empty: AWS)")
    s3_region: str = setting("", ("AWS_REGION", "AWS_DEFAULT_REGION"), "S3 region (empty: the AWS default chain)")
    directory_sync: str = setting(
        "files",
        "FACEPIPE_STORE_SYNC",
        "how a directory store makes a batch durable: files (fsync each file and folder written) or filesystem "
        "(one syncfs of the store's filesystem: fastest on a volume of its own, but it flushes every writer's data on a shared disk)",
        choices=("files", "filesystem"),
    )
    s3_sse: str = setting(
        "AES256",
        "FACEPIPE_S3_SSE",
        "server-side encryption of the faces (Ceph RGW takes it only over https; none: the bucket's default)",
        choices=("none", "AES256", "aws:kms"),
    )
    s3_kms_key_id: str = setting("", "FACEPIPE_S3_KMS_KEY_ID", "KMS key for aws:kms encryption (empty: the bucket's default key)")
    retention_days: int = setting(
        30,
        "FACEPIPE_RETENTION_DAYS",
        "delete faces older than this many days: a directory store is pruned by the processor, an S3 prefix gets a lifecycle "
        "rule from `facepipe retention` (0: keep)",
        check=Limits(0, 36500),
    )


@dataclass(frozen=True)
class ProcessorSettings:
    common: CommonSettings = group("", "", common, "common")
    broker: BrokerSettings = group("REMOTE_MQTT_", "remote", remote_broker, "cloud broker the processor subscribes to")
    storage: StoreSettings = group("", "", StoreSettings, "storage")
    share_group: str = setting("", "FACEPIPE_SHARE_GROUP", "shared-subscription group, for several replicas (empty: none)")
    workers: int = setting(4, "FACEPIPE_WORKERS", "threads validating and storing faces", check=Limits(1, 256))
    max_bytes: int = setting(contract.DEFAULT_MAX_PAYLOAD_BYTES, "FACEPIPE_MAX_BYTES", "largest accepted payload in bytes", check=positive)
    max_pixels: int = setting(
        contract.DEFAULT_MAX_PIXELS, "FACEPIPE_MAX_PIXELS", "largest accepted image in pixels (a face crop, not a frame)", check=positive
    )
    max_queued_bytes: int = setting(
        64 * 1024**2,
        "FACEPIPE_MAX_QUEUED_BYTES",
        "payload bytes received and not yet acknowledged (queued, being checked or stored); at the limit the "
        "processor reads nothing more from the broker until some are done",
        check=positive,
    )
    max_check_bytes: int = setting(
        32 * 1024**2,
        "FACEPIPE_MAX_CHECK_BYTES",
        "working memory of the payload checks running at once (a JPEG's decoded pixels, a PNG's inflate buffers); a check waits for room",
        check=positive,
    )
    session_expiry: int = setting(
        86400,
        "FACEPIPE_SESSION_EXPIRY",
        "seconds the broker keeps this processor's session and queued faces (0: clean session)",
        check=Limits(0, 2**32 - 1, message="must be 0..4294967295 (MQTT's session expiry limit)"),
    )
    store_retry_max_seconds: float = setting(
        30.0, "FACEPIPE_STORE_RETRY_MAX_SECONDS", "longest wait between retries of a failed store", check=retry_seconds
    )


@dataclass(frozen=True)
class RetentionSettings:
    """`facepipe retention`: apply FACEPIPE_RETENTION_DAYS to the store once (an S3 lifecycle rule), with keys
    allowed to set it; the processors' keys then need nothing but s3:PutObject on their prefix."""

    common: CommonSettings = group("", "", common, "common")
    storage: StoreSettings = group("", "", StoreSettings, "storage")


@dataclass(frozen=True)
class ProbeSettings:
    """`facepipe probe`: publish one synthetic face and wait until a component's counter shows it (helm test)."""

    common: CommonSettings = group("", "", common, "common")
    broker: BrokerSettings = group("LOCAL_MQTT_", "local", BrokerSettings, "broker to publish the test face to")
    metrics_url: str = setting(
        "", "FACEPIPE_PROBE_METRICS_URL", "/metrics URL of the component that must see the face (comma-separated: one per replica, summed)"
    )
    metric: str = setting("", "FACEPIPE_PROBE_METRIC", "counter that must increase, e.g. facepipe_processor_stored_total")
    timeout: float = setting(60.0, "FACEPIPE_PROBE_TIMEOUT", "seconds to wait for the counter", check=positive)
    gallery_url: str = setting(
        "", "FACEPIPE_PROBE_GALLERY_URL", "base URL of a gallery whose API must answer, signed in (instead of publishing a face)"
    )
    gallery_user: str = setting("", "FACEPIPE_PROBE_GALLERY_USER", "user the probe signs in to the gallery as")
    gallery_password: str = setting("", "FACEPIPE_PROBE_GALLERY_PASSWORD", "its password", secret=True)


def header_name(value: str) -> str | None:
    return None if value and all(c.isalnum() or c == "-" for c in value) else "must be an HTTP header name (letters, digits, -)"


MAX_PAGE_SIZE = 500
page_size = Limits(1, MAX_PAGE_SIZE, message=f"must be 1..{MAX_PAGE_SIZE}")


@dataclass(frozen=True)
class GallerySettings:
    """`facepipe gallery`: pages and a JSON API over the store, live updates from the cloud broker."""

    common: CommonSettings = group("", "", common, "common")
    storage: StoreSettings = group("", "", StoreSettings, "storage")
    broker: BrokerSettings = group(
        "REMOTE_MQTT_", "remote", remote_broker, "cloud broker the gallery subscribes to for live updates (its own read-only user)"
    )
    live: bool = setting(
        True, "FACEPIPE_GALLERY_LIVE", "show new faces on open pages as they are stored (a subscription to the cloud topic)"
    )
    host: str = setting("0.0.0.0", "FACEPIPE_GALLERY_HOST", "address of the gallery's pages and API")
    port: int = setting(8081, "FACEPIPE_GALLERY_PORT", "port of the pages and API (users from FACEPIPE_GALLERY_USERS_FILE)", check=port)
    proxy_port: int = setting(
        0,
        "FACEPIPE_GALLERY_PROXY_PORT",
        "port whose requests say who the user is in FACEPIPE_GALLERY_PROXY_USER_HEADER, for an auth proxy in front; "
        "only the proxy may reach it (0: off)",
        check=http_port,
    )
    users_file: str = setting(
        "", "FACEPIPE_GALLERY_USERS_FILE", "file of name:role:hash lines, role viewer or admin, hash from `facepipe hash-password`"
    )
    anonymous: str = setting(
        "none", "FACEPIPE_GALLERY_ANONYMOUS", "role of a request without credentials (none: refused)", choices=("none", "viewer", "admin")
    )
    session_secret: str = setting(
        "",
        "FACEPIPE_GALLERY_SESSION_SECRET",
        "key that signs session cookies (empty: a random one per process; set one for several replicas)",
        secret=True,
    )
    session_hours: float = setting(12.0, "FACEPIPE_GALLERY_SESSION_HOURS", "hours a login lasts", check=positive)
    secure_cookies: bool = setting(
        True, "FACEPIPE_GALLERY_SECURE_COOKIES", "send the session cookie over HTTPS only (false for plain http on loopback)"
    )
    proxy_user_header: str = setting(
        "X-Forwarded-User", "FACEPIPE_GALLERY_PROXY_USER_HEADER", "header with the user's name on the proxy port", check=header_name
    )
    proxy_groups_header: str = setting(
        "X-Forwarded-Groups", "FACEPIPE_GALLERY_PROXY_GROUPS_HEADER", "header with the user's groups (comma-separated) on the proxy port",
        check=header_name,
    )  # fmt: skip
    admin_users: str = setting("", "FACEPIPE_GALLERY_ADMIN_USERS", "proxy users who are admins (comma-separated)")
    admin_groups: str = setting("", "FACEPIPE_GALLERY_ADMIN_GROUPS", "proxy groups whose members are admins (comma-separated)")
    viewer_groups: str = setting(
        "", "FACEPIPE_GALLERY_VIEWER_GROUPS", "proxy groups whose members may view (comma-separated; empty: whoever the proxy lets in)"
    )
    page_size: int = setting(
        60, "FACEPIPE_GALLERY_PAGE_SIZE", f"faces per page when a request names no limit (1..{MAX_PAGE_SIZE})", check=page_size
    )

    def problems(self) -> list[str]:
        """What no single setting shows: a gallery nobody can get into, a users file that cannot be used."""
        found = []
        if not self.users_file and not self.proxy_port and self.anonymous == "none":
            found.append(
                "the gallery lets nobody in: set FACEPIPE_GALLERY_USERS_FILE (--users-file), FACEPIPE_GALLERY_PROXY_PORT "
                "(--proxy-port) or FACEPIPE_GALLERY_ANONYMOUS (--anonymous)"
            )
        if self.proxy_port and self.proxy_port == self.port:
            found.append("FACEPIPE_GALLERY_PROXY_PORT must differ from FACEPIPE_GALLERY_PORT: the trusted header is honoured on it alone")
        if self.users_file and os.path.exists(self.users_file):  # a Secret not mounted here: checked when the gallery starts
            from facepipe.gallery.auth import AuthError, UserFile

            try:
                UserFile(self.users_file)
            except AuthError as exc:
                found.append(f"--users-file / FACEPIPE_GALLERY_USERS_FILE: {exc}")
        return found


@dataclass(frozen=True)
class RunSettings:
    """`facepipe run`: the whole pipeline on one machine."""

    camera: CameraSettings = group("", "", CameraSettings, "camera")
    storage: StoreSettings = group("", "", StoreSettings, "storage")
    external_brokers: bool = setting(
        False, "FACEPIPE_EXTERNAL_BROKERS", "use the LOCAL_MQTT_* / REMOTE_MQTT_* brokers instead of starting two"
    )
    remote: BrokerSettings = group("REMOTE_MQTT_", "remote", remote_broker, "cloud broker (with --external-brokers)")
    secure_uplink: bool = setting(
        False,
        "FACEPIPE_SECURE_UPLINK",
        "run's cloud broker as in production: TLS from a local CA, a password per device and for the processor, ACLs, no anonymous clients",
    )
    mosquitto: str = setting("mosquitto", "FACEPIPE_MOSQUITTO", "mosquitto binary for the brokers run starts")
    run_dir: str = setting("", "FACEPIPE_RUN_DIR", "directory for brokers' files and component logs (empty: a temporary one)")
    drain_timeout: float = setting(
        60.0, "FACEPIPE_DRAIN_TIMEOUT", "seconds without progress before run stops waiting for faces to be stored", check=positive
    )
    gallery: bool = setting(
        True, "FACEPIPE_RUN_GALLERY", "serve the gallery on 127.0.0.1 while the pipeline runs (address, user and password are printed)"
    )
    gallery_port: int = setting(0, "FACEPIPE_RUN_GALLERY_PORT", "port of that gallery (0: a free one)", check=http_port)


# --- the machinery -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One setting of a settings tree, flattened: where it sits, its names, type, default and limits."""

    path: tuple[str, ...]
    env: tuple[str, ...]
    flag: str
    kind: type
    default: Any
    help: str
    choices: tuple[str, ...] | None
    check: Check | None
    secret: bool


def _field_type(owner: type, name: str) -> Any:
    return typing.get_type_hints(owner)[name]


def settings_of(cls: type, env_prefix: str = "", flag_prefix: str = "", path: tuple[str, ...] = (), defaults: Any = None) -> list[Setting]:
    """Flatten the settings tree; `defaults` is the instance a group's factory made (its defaults win)."""
    out: list[Setting] = []
    for f in dataclasses.fields(cls):
        kind = _field_type(cls, f.name)
        if "group" in f.metadata:
            sub_env, sub_flag = f.metadata["group"]
            flag = "-".join(p for p in (flag_prefix, sub_flag) if p)
            sub_defaults = f.default_factory() if defaults is None else getattr(defaults, f.name)  # type: ignore[misc]
            out += settings_of(kind, env_prefix + sub_env, flag, (*path, f.name), sub_defaults)
            continue
        flag_name = f.name.replace("_", "-") if not flag_prefix else f"{flag_prefix}-{f.name.replace('_', '-')}"
        out.append(
            Setting(
                path=(*path, f.name),
                env=tuple(env_prefix + e for e in f.metadata["env"]),
                flag="--" + flag_name,
                kind=kind if isinstance(kind, type) else str,
                default=f.default if defaults is None else getattr(defaults, f.name),
                help=f.metadata["help"],
                choices=f.metadata["choices"],
                check=f.metadata["check"],
                secret=f.metadata["secret"],
            )
        )
    return out


def _convert(leaf: Setting, raw: str) -> Any:
    if leaf.kind is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"{raw!r} is not a boolean (true/false)")
    try:
        if leaf.kind is int:
            return int(raw.strip())
        if leaf.kind is float:
            return float(raw.strip())
    except ValueError:
        raise ValueError(f"{raw!r} is not {'an integer' if leaf.kind is int else 'a number'}") from None
    return raw


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one flag per setting of `cls` (values stay strings; `load` converts and checks them)."""
    for leaf in settings_of(cls):
        extra = f" [{'|'.join(leaf.choices)}]" if leaf.choices else ""
        shown = "(secret)" if leaf.secret else repr(leaf.default)
        parser.add_argument(
            leaf.flag,
            dest="cfg:" + ".".join(leaf.path),
            metavar=leaf.kind.__name__.upper() if leaf.kind is not bool else "BOOL",
            help=f"{leaf.help}{extra}. Env {leaf.env[0]}; default {shown}",
        )
    parser.add_argument("--check-config", action="store_true", help="validate and print the effective configuration, then exit")


def load(cls: type[T], args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None) -> T:
    """Build `cls` from flags (if given) over environment over defaults; raise ConfigError listing every bad value."""
    env = os.environ if environ is None else environ
    values: dict[tuple[str, ...], Any] = {}
    errors: list[str] = []
    for leaf in settings_of(cls):
        raw = getattr(args, "cfg:" + ".".join(leaf.path), None) if args is not None else None
        origin = leaf.flag
        if raw is None:
            origin, raw = next(((name, env[name]) for name in leaf.env if name in env), ("default", None))
        try:
            value = leaf.default if raw is None else _convert(leaf, raw)
        except ValueError as exc:
            errors.append(f"{leaf.flag} / {leaf.env[0]} (from {origin}): {exc}")
            continue
        problem = None
        if leaf.choices and value not in leaf.choices:
            problem = f"{value!r} is not one of {', '.join(leaf.choices)}"
        elif leaf.check is not None:
            problem = leaf.check(value)
        if problem:
            errors.append(f"{leaf.flag} / {leaf.env[0]} = {'***' if leaf.secret else repr(value)} (from {origin}): {problem}")
        values[leaf.path] = value
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))
    built = _build(cls, values, ())
    problems = built.problems() if hasattr(built, "problems") else []
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return built


def _build(cls: type[T], values: dict[tuple[str, ...], Any], path: tuple[str, ...]) -> T:
    kwargs = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        here = (*path, f.name)
        kwargs[f.name] = _build(_field_type(cls, f.name), values, here) if "group" in f.metadata else values[here]
    return cls(**kwargs)


def describe(settings: Any, mask_secrets: bool = True) -> dict[str, Any]:
    """The effective configuration as a dict keyed by environment variable, secrets masked."""
    out: dict[str, Any] = {}
    for leaf in settings_of(type(settings)):
        value: Any = settings
        for part in leaf.path:
            value = getattr(value, part)
        if mask_secrets and isinstance(value, str):
            value = "***" if leaf.secret and value else redact_url(value)
        out[leaf.env[0]] = value
    return out


def to_environment(settings: Any) -> dict[str, str]:
    """The environment variables that reproduce `settings` in a child process."""
    return {
        name: ("true" if value else "false") if isinstance(value, bool) else str(value)
        for name, value in describe(settings, mask_secrets=False).items()
    }


def print_effective(component: str, settings: Any) -> None:
    json.dump({"component": component, "valid": True, "config": describe(settings)}, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def environment_names(cls: type) -> list[str]:
    """Every environment variable `cls` reads (the charts' tests check theirs against this list)."""
    return [name for leaf in settings_of(cls) for name in leaf.env]


__all__ = [
    "BrokerSettings", "CameraSettings", "CommonSettings", "ConfigError", "DetectorSettings",
    "ForwarderSettings", "GallerySettings", "LoggerSettings", "ProbeSettings", "ProcessorSettings", "RetentionSettings", "RunSettings", "StatusSettings", "StoreSettings",
    "add_arguments", "describe", "environment_names", "load", "print_effective", "to_environment",
]  # fmt: skip
