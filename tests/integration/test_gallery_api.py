"""The gallery's API as a real process over a real store (Ceph RGW and a directory): listing, paging, roles,
erasure with its audit line, and bad input (clear 4xx, a clear 503 when the store is down, nothing crashes)."""

from __future__ import annotations

import base64
import json
import socket
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from facepipe import contract
from facepipe.config import BrokerSettings, StoreSettings
from facepipe.contract import Capture, FaceMeta, Status
from facepipe.probe import synthetic_face
from facepipe.storage import ObjectNotFound, Store, open_store
from facepipe_dev.brokers import MosquittoBroker
from facepipe_dev.components import ComponentProcess
from facepipe_dev.gallery import GalleryClient, start_gallery, unreachable_store, write_users
from facepipe_dev.processes import free_port, wait_until
from facepipe_dev.rgw import RadosGateway

NOW = datetime.now(UTC).replace(microsecond=0)
YESTERDAY = NOW - timedelta(days=1)


def big_png(size: int = 400) -> bytes:
    """A valid grey PNG of size x size (larger than a thumbnail)."""
    raw = b"".join(b"\0" + bytes([128]) * size for _ in range(size))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def put_face(store: Store, device: str, seq: int, moment: datetime, camera: str = "cam0", png: bytes | None = None) -> str:
    meta = FaceMeta(device, camera, "b0", seq, moment, seq, 0, (10, 20, 30, 40), 0.875, "yunet/2023mar", track=seq // 2)
    key = contract.object_key(store.prefix, meta)
    store.put(key, png or synthetic_face(), meta.storage_metadata())
    store.sync()
    return key


class Fleet:
    """A store with known faces and a gallery over it."""

    def __init__(self, store: Store, gallery: ComponentProcess, env: dict[str, str]) -> None:
        self.store, self.gallery, self.env = store, gallery, env
        self.url: str = gallery.gallery_url  # type: ignore[attr-defined]
        self.keys: dict[str, list[str]] = {}

    def add(self, device: str, moments: list[datetime], cameras: tuple[str, ...] = ("cam0",)) -> list[str]:
        keys = self.keys.setdefault(device, [])
        for moment in moments:
            keys.append(put_face(self.store, device, len(keys), moment, cameras[len(keys) % len(cameras)]))
        return keys

    def client(self, user: str | None = None) -> GalleryClient:
        return GalleryClient(self.url, user)

    def audit(self) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.gallery.process.log_path.read_text().splitlines() if line.startswith("{")]
        return [line for line in lines if line["event"].startswith("audit.")]


def store_settings(kind: str, tmp: Path, request: pytest.FixtureRequest) -> tuple[StoreSettings, dict[str, str]]:
    if kind == "directory":
        return StoreSettings(store=f"file://{tmp / 'faces'}"), {}
    rgw: RadosGateway = request.getfixturevalue("rgw")
    bucket = "g-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-") + f"-{free_port()}"
    rgw.client().create_bucket(Bucket=bucket)
    return rgw.store_settings(f"s3://{bucket}/faces"), rgw.env()


@pytest.fixture(params=["directory", "s3"])
def fleet(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fleet]:
    storage, env = store_settings(request.param, tmp_path, request)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    gallery = start_gallery(tmp_path, storage, extra_env=env)
    try:
        yield Fleet(open_store(storage), gallery, env)
    finally:
        gallery.stop()


def test_nothing_without_credentials(fleet: Fleet) -> None:
    fleet.add("edge-1", [NOW])
    anonymous = fleet.client()
    for path in ("/api/devices", "/api/faces?device=edge-1", "/api/session", f"/api/faces/{fleet.keys['edge-1'][0].split('/', 1)[1]}/image"):
        status, body = anonymous.json("GET", path)
        assert status == 401 and body["error"] == "not signed in", path
    wrong = anonymous.request("GET", "/api/devices", headers={"Authorization": "Basic " + base64.b64encode(b"admin:guess").decode()})
    assert wrong[0] == 401
    assert "basic" not in wrong[1]["www-authenticate"].lower(), "browsers are never asked for Basic credentials"
    status, _headers, page = anonymous.request("GET", "/")
    assert status == 200 and b"edge-1" not in page, "the page shell is public; it holds no data"


def test_devices_with_todays_counts_and_last_seen(fleet: Fleet) -> None:
    fleet.add("edge-1", [YESTERDAY, NOW - timedelta(seconds=30), NOW - timedelta(seconds=20), NOW - timedelta(seconds=10)])
    fleet.add("edge-2", [YESTERDAY])
    devices = {d["device"]: d for d in fleet.client("viewer").get("/api/devices")["devices"]}
    today_faces = 3 if (NOW - timedelta(seconds=30)).date() == NOW.date() else 0
    assert devices["edge-1"]["faces_today"] == today_faces or NOW.hour == 0
    assert devices["edge-1"]["last_seen"] == contract.format_timestamp(NOW - timedelta(seconds=10))
    assert devices["edge-2"]["faces_today"] == 0 and devices["edge-2"]["last_seen"] == contract.format_timestamp(YESTERDAY)
    assert devices["edge-1"]["online"] is None, "without live updates the gallery has no status to go by"


def test_faces_newest_first_paged_by_cursor_and_filtered(fleet: Fleet) -> None:
    moments = [NOW - timedelta(days=2) + timedelta(minutes=37 * i) for i in range(40)]
    keys = fleet.add("edge-1", moments, cameras=("cam0", "cam1"))
    client = fleet.client("viewer")

    def walk(query: str, limit: int) -> tuple[list[str], int]:
        found, pages, cursor = [], 0, None
        while True:
            page = client.get(f"/api/faces?device=edge-1&limit={limit}{query}" + (f"&cursor={cursor}" if cursor else ""))
            found += [face["key"] for face in page["faces"]]
            pages += 1
            cursor = page["next"]
            if cursor is None:
                return found, pages

    everything, pages = walk("", 7)
    assert everything == sorted(keys, reverse=True) and pages == 6
    cam1, _ = walk("&camera=cam1", 5)
    assert cam1 == sorted(keys[1::2], reverse=True)
    day = moments[20].date()
    on_day, _ = walk(f"&day={day.isoformat()}", 100)
    assert on_day == sorted((k for k, m in zip(keys, moments, strict=True) if m.date() == day), reverse=True)
    since, until = moments[5], moments[9]
    ranged, _ = walk(f"&since={since.isoformat().replace('+00:00', 'Z')}&until={until.isoformat().replace('+00:00', 'Z')}", 2)
    assert ranged == sorted(keys[5:9], reverse=True)


def test_one_face_its_image_thumbnail_and_caching(fleet: Fleet) -> None:
    (key,) = fleet.add("edge-1", [NOW])
    big = put_face(fleet.store, "edge-1", 99, NOW - timedelta(seconds=1), png=big_png())
    client = fleet.client("viewer")
    face_id = key.split("/", 1)[1] if fleet.store.prefix else key
    face = client.get(f"/api/faces/{face_id}")
    assert (face["camera"], face["seq"], face["score"], face["bbox"], face["detector"], face["track"]) == ("cam0", 0, 0.875, [10, 20, 30, 40], "yunet/2023mar", 0)
    assert face["key"] == key and face["captured_at"] == contract.format_timestamp(NOW)
    status, headers, image = client.request("GET", f"/api/faces/{face_id}/image")
    assert (status, headers["content-type"], image) == (200, "image/png", synthetic_face())
    assert headers["cache-control"].startswith("private") and headers["etag"]
    assert client.request("GET", f"/api/faces/{face_id}/image", headers={"If-None-Match": headers["etag"]})[0] == 304
    _, download_headers, _ = client.request("GET", f"/api/faces/{face_id}/image?download=1")
    assert download_headers["content-disposition"].startswith("attachment;")
    big_id = big.split("/", 1)[1] if fleet.store.prefix else big
    status, headers, thumb = client.request("GET", f"/api/faces/{big_id}/thumbnail")
    assert status == 200 and headers["content-type"] == "image/jpeg" and thumb[:2] == b"\xff\xd8" and len(thumb) < len(big_png())
    assert client.request("GET", f"/api/faces/{big_id}/thumbnail", headers={"If-None-Match": headers["etag"]})[0] == 304


@pytest.mark.parametrize(
    ("path", "status", "error"),
    [
        ("/api/faces?device=no-such-device", 404, "unknown device"),
        ("/api/faces", 400, "device is required"),
        ("/api/faces?device=../etc", 400, "bad device"),
        ("/api/faces?device=edge-1&cursor=%%%not-base64", 400, "malformed cursor"),
        ("/api/faces?device=edge-1&cursor=" + base64.urlsafe_b64encode(b"edge-2/2026/01/02/000000.000_c_b_1.png").decode(), 400, "malformed cursor"),
        ("/api/faces?device=edge-1&cursor=" + base64.urlsafe_b64encode(b"../../etc/passwd").decode(), 400, "malformed cursor"),
        ("/api/faces?device=edge-1&limit=1000000", 400, "bad limit"),
        ("/api/faces?device=edge-1&limit=0", 400, "bad limit"),
        ("/api/faces?device=edge-1&limit=-3", 400, "bad limit"),
        ("/api/faces?device=edge-1&since=yesterday", 400, "bad since"),
        ("/api/faces?device=edge-1&day=2026-02-30", 400, "bad day"),
        ("/api/faces?device=edge-1&camera=a/b", 400, "bad camera"),
        ("/api/faces/../../../etc/passwd", 400, "bad face id"),
        ("/api/faces/edge-1/2026/01/02/..%2F..%2Fsecret.png", 400, "bad path"),
        ("/api/faces/edge-1/2026/01/02/%2e%2e/000000.000_c_b_1.png", 400, "bad face id"),
        ("/api/faces/faces/edge-1/2026/01/02/000000.000_c_b_1.png", 400, "bad face id"),
        ("/api/faces/other-prefix/2026/01/02/notaface.txt", 400, "bad face id"),
        ("/api/faces/edge-1/2026/01/02/000000.000_c_b_1.png", 404, "no such face"),
        ("/api/devices/no-such-device/days", 404, "unknown device"),
        ("/api/nothing-here", 404, "no such route"),
    ],
)
def test_bad_input_gets_a_clear_error(fleet: Fleet, path: str, status: int, error: str) -> None:
    fleet.add("edge-1", [NOW])
    got_status, body = fleet.client("admin").json("GET", path)
    assert (got_status, body["error"]) == (status, error), body
    assert fleet.gallery.process.running()


def test_a_viewer_cannot_delete(fleet: Fleet) -> None:
    (key,) = fleet.add("edge-1", [NOW])
    face_id = key.split("/", 1)[1] if fleet.store.prefix else key
    for client in (fleet.client("viewer"), fleet.client().login("viewer")):
        assert client.get("/api/session")["role"] == "viewer"
        assert client.delete(f"/api/faces/{face_id}")[0] == 403
        assert client.delete(f"/api/devices/edge-1/faces?day={NOW.date()}")[0] == 403
    assert fleet.store.head(key).size > 0, "still stored"
    assert fleet.audit() == []


def test_an_admin_erases_a_face_and_a_day_and_each_is_audited(fleet: Fleet) -> None:
    keys = fleet.add("edge-1", [YESTERDAY, YESTERDAY + timedelta(seconds=1), NOW - timedelta(seconds=2), NOW])
    admin = fleet.client().login("admin")
    face_id = keys[3].split("/", 1)[1] if fleet.store.prefix else keys[3]
    assert admin.delete(f"/api/faces/{face_id}", csrf=False)[0] == 403, "a session's delete needs its CSRF token"
    assert admin.delete(f"/api/faces/{face_id}", headers={"Origin": "http://elsewhere.example"})[0] == 403, "cross-site"
    assert admin.delete(f"/api/faces/{face_id}") == (200, {"deleted": 1})
    assert admin.delete(f"/api/faces/{face_id}")[0] == 404
    assert admin.delete("/api/devices/edge-1/faces")[0] == 400, "no range and no all=true: nothing is deleted by accident"
    assert admin.delete(f"/api/devices/edge-1/faces?day={YESTERDAY.date()}") == (200, {"deleted": 2})
    for key in (keys[0], keys[1], keys[3]):
        with pytest.raises(ObjectNotFound):
            fleet.store.head(key)
    assert fleet.store.head(keys[2]).size > 0
    if fleet.store.url.startswith("file://"):
        root = Path(fleet.store.url[len("file://") :])
        assert not list(root.rglob(Path(keys[3]).name + "*")), "the sidecar went with the face"
    audit = fleet.audit()
    assert [(a["event"], a["user"], a["role"], a["via"], a["deleted"]) for a in audit] == [
        ("audit.erased", "admin", "admin", "session", 1),
        ("audit.erased", "admin", "admin", "session", 2),
    ]
    assert audit[0]["what"] == {"face": face_id, "device": "edge-1"} and audit[1]["what"]["device"] == "edge-1"
    basic = fleet.client("admin")
    assert basic.delete("/api/devices/edge-1/faces?all=true") == (200, {"deleted": 1}), "a script's Basic credentials need no CSRF token"
    assert basic.json("GET", "/api/faces?device=edge-1")[0] == 404, "a device with no faces left is unknown"


def test_pages_carry_a_strict_content_security_policy(fleet: Fleet) -> None:
    client = fleet.client()
    status, headers, html = client.request("GET", "/devices/edge-1")
    csp = headers["content-security-policy"]
    assert status == 200 and "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"
    assert b"<script>" not in html and b"style=" not in html and b'src="/static/gallery.js"' in html
    for name in ("gallery.js", "gallery.css"):
        status, headers, _ = client.request("GET", f"/static/{name}")
        assert status == 200 and headers["etag"]
    assert client.request("GET", "/static/../server.py")[0] == 404


def test_a_store_that_is_down_is_a_clear_503(tmp_path: Path) -> None:
    storage, env = unreachable_store()
    gallery = start_gallery(tmp_path, storage, extra_env=env)
    try:
        client = GalleryClient(gallery.gallery_url, "viewer")  # type: ignore[attr-defined]
        for path in ("/api/devices", "/api/faces?device=edge-1", "/api/faces/edge-1/2026/01/02/000000.000_c_b_1.png/image"):
            status, body = client.json("GET", path)
            assert status == 503 and body["error"] == "store unavailable" and body["detail"], (path, body)
        status, body = client.json("GET", "/api/status")
        assert status == 200 and body["store"]["ok"] is False and body["store"]["error"]
        assert gallery.is_ready() and gallery.process.running(), "the gallery stays up and says what is wrong"
        assert gallery.metrics()["facepipe_gallery_store_up"] == 0
    finally:
        gallery.stop()


def test_the_trusted_header_counts_on_the_proxy_port_only(tmp_path: Path) -> None:
    storage = StoreSettings(store=f"file://{tmp_path / 'faces'}")
    key = put_face(open_store(storage), "edge-1", 0, NOW)
    proxy_port = free_port()
    gallery = start_gallery(tmp_path, storage, proxy_port=proxy_port, admin_groups="gallery-admins", viewer_groups="staff,gallery-admins")
    try:
        direct = GalleryClient(gallery.gallery_url)  # type: ignore[attr-defined]
        forged = {"X-Forwarded-User": "mallory", "X-Forwarded-Groups": "gallery-admins"}
        assert direct.json("GET", "/api/devices", forged)[0] == 401, "the gallery port never believes the header"
        proxied = GalleryClient(f"http://127.0.0.1:{proxy_port}")
        assert proxied.json("GET", "/api/devices")[0] == 401, "no header: the proxy did not vouch for anyone"
        assert proxied.json("GET", "/api/devices", {"X-Forwarded-User": "eve", "X-Forwarded-Groups": "visitors"})[0] == 401
        status, session = proxied.json("GET", "/api/session", {"X-Forwarded-User": "ann", "X-Forwarded-Groups": "staff"})
        assert (status, session["role"], session["via"]) == (200, "viewer", "proxy")
        admin = {"X-Forwarded-User": "bob", "X-Forwarded-Groups": "staff, gallery-admins"}
        _, session = proxied.json("GET", "/api/session", admin)
        assert session["role"] == "admin"
        assert proxied.delete(f"/api/faces/{key}", csrf=False, headers=admin)[0] == 403, "the proxy's cookie is ambient: CSRF token needed"
        assert proxied.delete(f"/api/faces/{key}", csrf=False, headers={**admin, "X-CSRF-Token": session["csrf"]}) == (200, {"deleted": 1})
    finally:
        gallery.stop()


def test_anonymous_access_only_where_a_setting_allows_it(tmp_path: Path) -> None:
    storage = StoreSettings(store=f"file://{tmp_path / 'faces'}")
    key = put_face(open_store(storage), "edge-1", 0, NOW)
    gallery = start_gallery(tmp_path, storage, anonymous="viewer", users_file="")
    try:
        client = GalleryClient(gallery.gallery_url)  # type: ignore[attr-defined]
        assert client.get("/api/session") | {"csrf": ""} == {"user": "anonymous", "role": "viewer", "via": "anonymous", "csrf": ""}
        assert [face["key"] for face in client.get("/api/faces?device=edge-1")["faces"]] == [key]
        assert client.delete(f"/api/faces/{key}")[0] == 403
    finally:
        gallery.stop()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "the gallery lets nobody in"),
        (["--users-file", "USERS", "--proxy-port", "8081"], "must differ from FACEPIPE_GALLERY_PORT"),
        (["--users-file", "BAD"], "line 2: the role 'root' is not one of viewer, admin"),
    ],
)
def test_check_config_names_what_is_wrong(tmp_path: Path, args: list[str], message: str) -> None:
    users = write_users(tmp_path / "users")
    bad = tmp_path / "bad"
    bad.write_text(users.read_text().splitlines()[0] + "\nroot:root:" + users.read_text().split(":", 2)[2])
    paths = {"USERS": str(users), "BAD": str(bad)}
    argv = [paths.get(a, a) for a in args]
    result = subprocess.run([sys.executable, "-m", "facepipe", "gallery", "--check-config", *argv], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    ok = subprocess.run([sys.executable, "-m", "facepipe", "gallery", "--check-config", "--users-file", str(users)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and json.loads(ok.stdout)["config"]["FACEPIPE_GALLERY_USERS_FILE"] == str(users)


def test_a_missing_users_file_stops_the_gallery_with_one_line(tmp_path: Path) -> None:
    argv = ["gallery", "--users-file", str(tmp_path / "missing"), "--http-port", "0", "--port", str(free_port()), "--live", "false"]
    result = subprocess.run([sys.executable, "-m", "facepipe", *argv], capture_output=True, text=True, timeout=60)
    plain = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert result.returncode == 2 and len(plain) == 1 and "cannot read the users file" in plain[0] and "FACEPIPE_GALLERY_USERS_FILE" in plain[0], result.stderr


def test_a_taken_gallery_port_stops_it_with_one_line(tmp_path: Path) -> None:
    users = write_users(tmp_path / "users")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["gallery", "--users-file", str(users), "--host", "127.0.0.1", "--port", str(port), "--http-port", "0", "--live", "false"]
        result = subprocess.run([sys.executable, "-m", "facepipe", *argv], capture_output=True, text=True, timeout=60)
    plain = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert result.returncode == 2 and "Traceback" not in result.stderr and len(plain) == 1, result.stderr
    assert f"port {port} on 127.0.0.1 for the gallery is already in use" in plain[0] and "FACEPIPE_GALLERY_PORT" in plain[0]


def test_devices_say_who_is_alive_from_their_retained_status(tmp_path: Path, cloud_broker: MosquittoBroker) -> None:
    storage = StoreSettings(store=f"file://{tmp_path / 'faces'}")
    put_face(open_store(storage), "edge-1", 0, NOW)
    publisher = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    publisher.connect(cloud_broker.host, cloud_broker.port)
    publisher.loop_start()

    def announce(device: str, component: str, state: str, capture: Capture | None = None) -> None:
        status = Status(device, component, state, "b00f", datetime.now(UTC), 30.0, capture)
        topic = contract.remote_status_topic("cam_bin_remote", device, component)
        publisher.publish(topic, status.to_json(), qos=1, retain=True).wait_for_publish(10)

    announce("edge-1", "forwarder", "online")
    announce("edge-1", "camera", "online", Capture("cam0", "opened", 900, 300, 4, 9.5))
    announce("edge-2", "forwarder", "offline")
    announce("edge-3", "forwarder", "online")  # alive, nothing stored yet
    cloud = BrokerSettings(host=cloud_broker.host, port=cloud_broker.port, topic="cam_bin_remote")
    gallery = start_gallery(tmp_path, storage, broker=cloud)
    try:
        client = GalleryClient(gallery.gallery_url, "viewer")  # type: ignore[attr-defined]

        def devices() -> dict[str, Any]:
            return {d["device"]: d for d in client.get("/api/devices")["devices"]}

        wait_until(lambda: {"edge-1", "edge-2", "edge-3"} <= set(devices()), what="the retained statuses")
        seen = devices()
        assert (seen["edge-1"]["online"], seen["edge-2"]["online"], seen["edge-3"]["online"]) == (True, False, True)
        assert seen["edge-1"]["status"]["cameras"]["cam0"] == {"source": "opened", "fps": 9.5, "faces": 4}
        assert seen["edge-3"]["faces_today"] == 0 and seen["edge-3"]["newest"] is None
        announce("edge-1", "forwarder", "offline")  # a clean stop, or its last will
        wait_until(lambda: devices()["edge-1"]["online"] is False, what="edge-1 offline")
        assert devices()["edge-1"]["status"]["components"]["forwarder"]["state"] == "offline"
    finally:
        gallery.stop()
        publisher.loop_stop()
        publisher.disconnect()
