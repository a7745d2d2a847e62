"""The gallery's JSON API: devices, faces (newest first, filtered, paged by cursor), one face, its image, erasure.

Every page of the gallery uses these routes, as a script would. Face ids are keys relative to the
store's prefix (`<device>/<YYYY>/<MM>/<DD>/<name>.png`), checked against the contract's key form,
so no request can name an object outside the prefix.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import parse_qs, quote

from facepipe import contract, imaging
from facepipe.config import MAX_PAGE_SIZE, GallerySettings
from facepipe.contract import ContractError, FaceMeta
from facepipe.gallery.auth import Identity
from facepipe.gallery.catalog import Catalog, FaceQuery, day_range
from facepipe.storage import ObjectNotFound, Store, StoredObject, StoreUnavailable

SCAN_BUDGET = 5000  # keys one faces request may look at (a rare camera's page may come back short, with a cursor)
THUMBNAIL_BOX = 160
THUMBNAIL_CACHE_BYTES = 16 * 1024 * 1024
IMAGE_CACHE = "private, max-age=3600"


@dataclass
class Request:
    method: str
    path: str  # decoded segments joined by '/'
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    client: str
    identity: Identity | None


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str = "") -> None:
        super().__init__(error)
        self.status, self.error, self.detail = status, error, detail


def json_response(status: int, value: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, json.dumps(value, separators=(",", ":")).encode(), "application/json", dict(headers or {}))


def error_response(status: int, error: str, detail: str = "") -> Response:
    return json_response(status, {"error": error, "detail": detail} if detail else {"error": error})


def parse_query(text: str) -> dict[str, str]:
    """One value per name (the last); a name given twice is not an error."""
    return {name: values[-1] for name, values in parse_qs(text, keep_blank_values=True).items()}


def parse_moment(name: str, text: str) -> datetime:
    """RFC 3339 (an offset or Z; none means UTC) or a date (its midnight, UTC)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(400, f"bad {name}", f"{text!r} is not an RFC 3339 time or a YYYY-MM-DD date") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def encode_cursor(face_id: str) -> str:
    return base64.urlsafe_b64encode(face_id.encode()).rstrip(b"=").decode()


class Thumbnails:
    """Small JPEGs of large crops, kept in memory by (key, ETag) up to THUMBNAIL_CACHE_BYTES."""

    def __init__(self) -> None:
        self._cache: OrderedDict[tuple[str, str], tuple[bytes, str]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str, etag: str, read: Callable[[], bytes]) -> tuple[bytes, str]:
        with self._lock:
            hit = self._cache.get((key, etag))
            if hit is not None:
                self._cache.move_to_end((key, etag))
                return hit
        made = self.make(read())
        with self._lock:
            self._cache[(key, etag)] = made
            self._bytes += len(made[0])
            while self._bytes > THUMBNAIL_CACHE_BYTES and self._cache:
                _, (old, _) = self._cache.popitem(last=False)
                self._bytes -= len(old)
        return made

    @staticmethod
    def make(png: bytes) -> tuple[bytes, str]:
        """(bytes, content type): the crop itself when it fits the box, else a JPEG scaled to fit."""
        try:
            width, height = imaging.png_size(png)
        except ContractError:
            return png, contract.PNG
        if max(width, height) <= THUMBNAIL_BOX:
            return png, contract.PNG
        import cv2  # only here: the rest of the gallery runs without OpenCV's memory
        import numpy as np

        image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            return png, contract.PNG
        scale = THUMBNAIL_BOX / max(width, height)
        small = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
        ok, encoded = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 85])
        return (encoded.tobytes(), contract.JPEG) if ok else (png, contract.PNG)


Handler = Callable[[Request, dict[str, str]], Response]


class Api:
    """Routes API requests; `Identity` comes from the server, which knows the port and the credentials."""

    def __init__(
        self,
        settings: GallerySettings,
        store: Store,
        catalog: Catalog,
        log: logging.Logger,
        on_erased: Callable[[int, dict[str, Any] | None], None],
        device_status: Callable[[], dict[str, dict[str, Any]] | None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.device_status = device_status
        self.store = store
        self.catalog = catalog
        self.log = log
        self.on_erased = on_erased
        self.thumbnails = Thumbnails()
        face = r"(?P<face>[^?#]+?)"
        self.routes: list[tuple[str, str, re.Pattern[str], Handler]] = [
            ("GET", "devices", re.compile(r"/api/devices"), self.devices),
            ("GET", "days", re.compile(r"/api/devices/(?P<device>[^/]+)/days"), self.days),
            ("DELETE", "erase_range", re.compile(r"/api/devices/(?P<device>[^/]+)/faces"), self.erase_range),
            ("GET", "faces", re.compile(r"/api/faces"), self.faces),
            ("GET", "image", re.compile(rf"/api/faces/{face}/image"), self.image),
            ("GET", "thumbnail", re.compile(rf"/api/faces/{face}/thumbnail"), self.thumbnail),
            ("GET", "face", re.compile(rf"/api/faces/{face}"), self.face),
            ("DELETE", "erase_face", re.compile(rf"/api/faces/{face}"), self.erase_face),
        ]

    def route(self, method: str, path: str) -> tuple[str, Handler, dict[str, str]] | None:
        """(route name, handler, path parameters); a known path with another method is ('method', ...)."""
        known = False
        for route_method, name, pattern, handler in self.routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if route_method == method or (method == "HEAD" and route_method == "GET"):
                return name, handler, match.groupdict()
            known = True
        return ("method_not_allowed", self._not_allowed, {}) if known else None

    @staticmethod
    def _not_allowed(_request: Request, _params: dict[str, str]) -> Response:
        return error_response(405, "method not allowed")

    def handle(self, handler: Handler, request: Request, params: dict[str, str]) -> Response:
        try:
            return handler(request, params)
        except ApiError as exc:
            return error_response(exc.status, exc.error, exc.detail)
        except StoreUnavailable as exc:
            self.log.error("store.unavailable", extra={"store": self.store.url, "error": str(exc)[:500]})
            return error_response(503, "store unavailable", str(exc)[:500])

    # --- inputs -----------------------------------------------------------------------------------

    def _device(self, text: str | None, must_exist: bool = True) -> str:
        if not text:
            raise ApiError(400, "device is required", "name one with ?device=")
        if not contract.ID_PATTERN.fullmatch(text):
            raise ApiError(400, "bad device", f"a device id matches {contract.ID_PATTERN.pattern}")
        if must_exist and not self.catalog.has_device(text):
            raise ApiError(404, "unknown device", f"no faces stored for {text!r}")
        return text

    def key_of(self, face_id: str) -> str:
        """The store key of a face id, or 400 when the id is not of the contract's form under the prefix."""
        if ".." in face_id or face_id.startswith("/") or "\\" in face_id:
            raise ApiError(400, "bad face id", "a face id is <device>/<YYYY>/<MM>/<DD>/<name>.png")
        key = f"{self.store.prefix}/{face_id}" if self.store.prefix else face_id
        try:
            contract.parse_object_key(self.store.prefix, key)
        except ContractError as exc:
            raise ApiError(400, "bad face id", exc.detail) from None
        return key

    def face_id(self, key: str) -> str:
        return key[len(self.store.prefix) + 1 :] if self.store.prefix else key

    def _range(self, query: dict[str, str]) -> tuple[datetime | None, datetime | None]:
        since = parse_moment("since", query["since"]) if query.get("since") else None
        until = parse_moment("until", query["until"]) if query.get("until") else None
        if query.get("day"):
            if since or until:
                raise ApiError(400, "bad range", "give day or since/until, not both")
            try:
                since, until = day_range(date.fromisoformat(query["day"]))
            except ValueError:
                raise ApiError(400, "bad day", f"{query['day']!r} is not YYYY-MM-DD") from None
        if since and until and since >= until:
            raise ApiError(400, "bad range", "since must be before until")
        return since, until

    def _camera(self, query: dict[str, str]) -> str | None:
        camera = query.get("camera") or None
        if camera is not None and not contract.ID_PATTERN.fullmatch(camera):
            raise ApiError(400, "bad camera", f"a camera id matches {contract.ID_PATTERN.pattern}")
        return camera

    def _cursor(self, text: str, device: str) -> str:
        try:
            face_id = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            key = self.key_of(face_id)
        except (binascii.Error, UnicodeDecodeError, ValueError, ApiError):
            raise ApiError(400, "malformed cursor", "pass back the `next` value of the previous page unchanged") from None
        if contract.parse_object_key(self.store.prefix, key).device != device:
            raise ApiError(400, "malformed cursor", "the cursor belongs to another device")
        return key

    def _limit(self, query: dict[str, str]) -> int:
        text = query.get("limit", "")
        if not text:
            return self.settings.page_size
        if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE_SIZE:
            raise ApiError(400, "bad limit", f"limit must be 1..{MAX_PAGE_SIZE}")
        return int(text)

    # --- reading ------------------------------------------------------------------------------------

    def face_item(self, key: str) -> dict[str, Any]:
        """A face as the listing and the live events show it (what its key tells)."""
        facts = contract.parse_object_key(self.store.prefix, key)
        face_id = self.face_id(key)
        url = quote(face_id)
        return {
            "id": face_id, "key": key, "device": facts.device, "camera": facts.camera, "boot": facts.boot, "seq": facts.seq,
            "captured_at": contract.format_timestamp(facts.captured_at),
            "image": f"/api/faces/{url}/image", "thumbnail": f"/api/faces/{url}/thumbnail", "page": f"/faces/{url}",
        }  # fmt: skip

    def devices(self, _request: Request, _params: dict[str, str]) -> Response:
        """Every device with faces stored or a status announced: today's count, the newest face, and what its
        status says (`online`; null when the gallery has no status to go by, live updates off)."""
        statuses = self.device_status()
        devices = {}
        for summary in self.catalog.summaries():
            newest = self.face_item(summary.newest) if summary.newest else None
            devices[summary.device] = {
                "device": summary.device, "faces_today": summary.faces_today, "faces_today_complete": summary.today_complete,
                "last_seen": newest["captured_at"] if newest else None, "newest": newest,
            }  # fmt: skip
        for device in sorted(set(statuses or {}) - set(devices)):  # alive, but nothing stored yet
            devices[device] = {"device": device, "faces_today": 0, "faces_today_complete": True, "last_seen": None, "newest": None}
        for device, entry in devices.items():
            status = (statuses or {}).get(device)
            entry["online"] = None if statuses is None else bool(status and status["online"])
            entry["status"] = status
        body = {"day": self.catalog.clock().date().isoformat(), "status_known": statuses is not None, "devices": list(devices.values())}
        return json_response(200, body, {"Cache-Control": "no-store"})

    def days(self, request: Request, params: dict[str, str]) -> Response:
        device = self._device(params["device"])
        limit = self._limit(request.query)
        found = []
        for day in self.catalog.days(device):
            found.append(day.isoformat())
            if len(found) == limit:
                break
        return json_response(200, {"device": device, "days": found}, {"Cache-Control": "no-store"})

    def faces(self, request: Request, _params: dict[str, str]) -> Response:
        query = request.query
        device = self._device(query.get("device"))
        since, until = self._range(query)
        before = self._cursor(query["cursor"], device) if query.get("cursor") else None
        limit = self._limit(query)
        page = self.catalog.page(FaceQuery(device, self._camera(query), since, until, before), limit, SCAN_BUDGET)
        body = {
            "device": device,
            "faces": [self.face_item(key) for key in page.keys],
            "next": encode_cursor(self.face_id(page.next)) if page.next else None,
            "scanned": page.scanned,
        }
        return json_response(200, body, {"Cache-Control": "no-store"})

    def _stored(self, face_id: str, with_body: bool = False) -> tuple[str, StoredObject]:
        """(key, object) of a face id; 400 for an id of another form, 404 for a face not (or no longer) stored."""
        key = self.key_of(face_id)
        try:
            return key, self.store.get(key) if with_body else self.store.head(key)
        except ObjectNotFound:
            raise ApiError(404, "no such face") from None

    def face(self, _request: Request, params: dict[str, str]) -> Response:
        key, stored = self._stored(params["face"])
        item = self.face_item(key)
        item.update(size=stored.size, etag=stored.etag, stored_at=contract.format_timestamp(stored.modified), metadata=stored.metadata)
        try:
            meta = FaceMeta.from_storage_metadata(stored.metadata)
            item.update(
                frame=meta.frame, face=meta.face, bbox=list(meta.bbox), score=meta.score, detector=meta.detector, track=meta.track,
                captured_at=contract.format_timestamp(meta.captured_at),
            )  # fmt: skip
        except ContractError:
            pass  # a face stored without metadata: what its key tells is all there is
        return json_response(200, item, {"Cache-Control": "no-store"})

    def _not_modified(self, request: Request, etag: str) -> bool:
        wanted = request.headers.get("if-none-match", "")
        return etag in (tag.strip().removeprefix("W/") for tag in wanted.split(","))

    def image(self, request: Request, params: dict[str, str]) -> Response:
        key, stored = self._stored(params["face"], with_body=True)
        headers = {"ETag": stored.etag, "Cache-Control": IMAGE_CACHE}
        if self._not_modified(request, stored.etag):
            return Response(304, headers=headers)
        if request.query.get("download"):
            facts = contract.parse_object_key(self.store.prefix, key)
            headers["Content-Disposition"] = f'attachment; filename="{facts.device}_{facts.name}"'
        return Response(200, stored.body or b"", contract.PNG, headers)

    def thumbnail(self, request: Request, params: dict[str, str]) -> Response:
        key, stored = self._stored(params["face"])
        etag = f'"t{stored.etag.strip(chr(34))}"'
        headers = {"ETag": etag, "Cache-Control": IMAGE_CACHE}
        if self._not_modified(request, etag):
            return Response(304, headers=headers)

        body, content_type = self.thumbnails.get(key, stored.etag, lambda: self._stored(params["face"], with_body=True)[1].body or b"")
        return Response(200, body, content_type, headers)

    # --- erasure ------------------------------------------------------------------------------------

    def _admin(self, request: Request) -> Identity:
        identity = request.identity
        assert identity is not None  # the server answers 401 before a route runs without one
        if not identity.admin:
            raise ApiError(403, "only an admin may delete faces")
        if identity.csrf and request.headers.get("x-csrf-token", "") != identity.csrf:
            raise ApiError(403, "missing or wrong CSRF token", "send the csrf value of GET /api/session as X-CSRF-Token")
        return identity

    def _audit(self, identity: Identity, request: Request, what: dict[str, Any], deleted: int, error: str = "") -> None:
        """The audit line, and `on_erased(deleted, what)` (what: None when the store failed midway: which faces went is unknown)."""
        fields = {
            "user": identity.user,
            "role": identity.role,
            "via": identity.via,
            "client": request.client,
            "what": what,
            "deleted": deleted,
        }
        if error:
            fields["error"] = error[:500]
            self.log.error("audit.erase_failed", extra=fields)
        else:
            self.log.info("audit.erased", extra=fields)
        self.on_erased(deleted, None if error else what)

    def erase_face(self, request: Request, params: dict[str, str]) -> Response:
        identity = self._admin(request)
        key, _stored = self._stored(params["face"])
        try:
            self.store.delete([key])
        except StoreUnavailable as exc:
            self._audit(identity, request, {"face": self.face_id(key)}, 0, str(exc))
            raise
        self.catalog.forget()
        self._audit(identity, request, {"face": self.face_id(key), "device": contract.parse_object_key(self.store.prefix, key).device}, 1)
        return json_response(200, {"deleted": 1})

    def erase_range(self, request: Request, params: dict[str, str]) -> Response:
        identity = self._admin(request)
        device = self._device(params["device"])
        query = request.query
        since, until = self._range(query)
        camera = self._camera(query)
        if since is None and until is None and query.get("all") != "true":
            raise ApiError(400, "say which faces", "give day, since and/or until, or all=true for every face of the device")
        what: dict[str, Any] = {
            "device": device,
            "since": since and since.isoformat(),
            "until": until and until.isoformat(),
            "camera": camera,
        }
        done = [0]
        try:
            deleted = self.catalog.erase(FaceQuery(device, camera, since, until), on_batch=lambda n: done.__setitem__(0, n))
        except StoreUnavailable as exc:
            self._audit(identity, request, what, done[0], str(exc))
            raise ApiError(503, "store unavailable", f"{done[0]} faces were deleted before: {exc}"[:500]) from None
        self._audit(identity, request, what, deleted)
        return json_response(200, {"deleted": deleted})
