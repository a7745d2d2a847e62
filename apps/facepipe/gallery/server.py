"""`facepipe gallery`: the pages, the JSON API and the live event stream over HTTP, with /healthz /readyz /metrics.

Two listeners can serve the same pages: the gallery port, where users log in with a name and
password (a session cookie; or HTTP Basic for scripts) or come in anonymously where a setting
allows it, and the proxy port, where an auth proxy in front (oauth2-proxy and the like) says who
the user is in a trusted header. Only the proxy port believes that header; the chart's
NetworkPolicy lets only the proxy reach it.

Standard library HTTP (ThreadingHTTPServer, as the health endpoints): the image gains no web
framework, and the gallery's own needs (routing a dozen paths, streaming server-sent events)
are small.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import queue
import threading
import time
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import unquote, urlsplit

from prometheus_client import Counter, Gauge, Histogram

from facepipe import __version__
from facepipe.config import GallerySettings
from facepipe.errors import FatalError
from facepipe.gallery import auth
from facepipe.gallery.api import Api, Request, Response, error_response, json_response, parse_query
from facepipe.gallery.catalog import Catalog
from facepipe.gallery.live import Hub, LiveFeed, device_status
from facepipe.mqtt import client_id
from facepipe.observe import counted
from facepipe.service import Component, port_error
from facepipe.storage import Store, StoreUnavailable, open_store

COOKIE = "facepipe_gallery"
MAX_BODY = 64 * 1024
STORE_PROBE_SECONDS = 10.0
KEEPALIVE_SECONDS = 15.0
MAX_STREAMS = 64
PAGES = ("/", "/login")
PAGE_PREFIXES = ("/devices/", "/faces/")
STATIC_TYPES = {
    ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
}  # fmt: skip
SECURITY_HEADERS = {
    # No inline script or style anywhere: the pages load /static/gallery.js and /static/gallery.css.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def _static_files() -> dict[str, tuple[bytes, str, str]]:
    """/static/<name> -> (bytes, content type, ETag), read once from the package."""
    files = {}
    for entry in resources.files("facepipe.gallery").joinpath("static").iterdir():
        suffix = entry.name[entry.name.rfind(".") :]
        if suffix in STATIC_TYPES:
            data = entry.read_bytes()
            files[entry.name] = (data, STATIC_TYPES[suffix], '"' + hashlib.sha256(data).hexdigest()[:20] + '"')
    return files


class Gallery(Component):
    name = "gallery"

    def __init__(self, settings: GallerySettings, log: logging.Logger, store: Store | None = None) -> None:
        super().__init__(settings.common, log)
        self.settings = settings
        self.store = store or open_store(settings.storage)
        self.catalog = Catalog(self.store)
        try:
            self.users = auth.UserFile(settings.users_file)
        except auth.AuthError as exc:
            raise FatalError(f"{exc} (FACEPIPE_GALLERY_USERS_FILE, --users-file)") from None
        self.sessions = auth.Sessions(settings.session_secret, settings.session_hours * 3600)
        self.basic = auth.BasicCache()
        self.throttle = auth.LoginThrottle()
        self.admin_users = auth.split_list(settings.admin_users)
        self.admin_groups = auth.split_list(settings.admin_groups)
        self.viewer_groups = auth.split_list(settings.viewer_groups)
        self.static = _static_files()
        self.store_error = ""
        reg = self.registry
        self.requests = Counter("facepipe_gallery_requests_total", "HTTP requests, by route and status", ["route", "status"], registry=reg)
        self.seconds = Histogram(
            "facepipe_gallery_request_seconds", "time to answer, by route", ["route"], registry=reg,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )  # fmt: skip
        self.erased = Counter("facepipe_gallery_erased_total", "faces deleted through the gallery", registry=reg)
        self.logins = Counter("facepipe_gallery_logins_total", "password logins, by outcome", ["outcome"], registry=reg)
        self.store_up = Gauge("facepipe_gallery_store_up", "1 while the store answers listings", registry=reg)
        self.api = Api(settings, self.store, self.catalog, log, self._erased, self.device_status)
        self.hub = Hub(reg)
        self.live: LiveFeed | None = None
        if settings.live:
            self.live = LiveFeed(
                settings.broker, client_id(settings.broker, "gallery", settings.common.device_id), self.store, self.hub,
                lambda key: self.hub.publish({"event": "face", **self.api.face_item(key)}), self.link_metrics, reg, log,
            )  # fmt: skip
        self.servers = [self._server(settings.host, settings.port, trusted_proxy=False)]
        if settings.proxy_port:
            self.servers.append(self._server(settings.host, settings.proxy_port, trusted_proxy=True))
        self.port = self.servers[0].server_address[1]
        self.listening = threading.Event()
        self.stopping = threading.Event()

    def device_status(self) -> dict[str, dict[str, Any]] | None:
        """The devices' status from their retained status messages; None without live updates (nothing to know it from)."""
        return None if self.live is None else device_status(self.live.fleet, time.time())

    def _erased(self, number: int, what: dict[str, Any] | None) -> None:
        """Counted, and told to the open pages (which drop what they show of it): `erased` {"device", "face"} or
        {"device", "since", "until", "camera"}."""
        self.erased.inc(number)
        if what is not None and number:
            self.hub.publish({"event": "erased", **what})

    def _server(self, host: str, port: int, trusted_proxy: bool) -> ThreadingHTTPServer:
        class Handler(GalleryHandler):
            pass

        Handler.gallery = self
        Handler.trusted_proxy = trusted_proxy
        try:
            server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            setting = "FACEPIPE_GALLERY_PROXY_PORT (--proxy-port)" if trusted_proxy else "FACEPIPE_GALLERY_PORT (--port)"
            raise port_error(exc, host, port, "the gallery's proxy port" if trusted_proxy else "the gallery", setting) from None
        server.daemon_threads = True
        return server

    def run(self, stop: threading.Event) -> None:
        self.stopping = stop
        threads = [threading.Thread(target=s.serve_forever, name=f"gallery-http-{i}", daemon=True) for i, s in enumerate(self.servers)]
        for thread in threads:
            thread.start()
        if self.live is not None:
            self.live.start()
        addresses = [f"http://{self.settings.host}:{s.server_address[1]}" for s in self.servers]
        self.log.info("gallery.listening", extra={"addresses": addresses, "store": self.store.url, "live": self.live is not None})
        self.listening.set()
        while True:
            self._probe_store()
            if stop.wait(STORE_PROBE_SECONDS):
                break
        for server in self.servers:
            server.shutdown()
            server.server_close()
        if self.live is not None:
            self.live.stop()
        self.catalog.close()

    def _probe_store(self) -> None:
        try:
            self.store.list(self.store.prefix, "/", limit=1)
            self.store_ok()
        except StoreUnavailable as exc:
            self.store_failed(str(exc))

    def store_ok(self) -> None:
        self.store_up.set(1)
        self.store_error = ""

    def store_failed(self, error: str) -> None:
        if not self.store_error:
            self.log.error("store.unavailable", extra={"store": self.store.url, "error": error[:500]})
        self.store_up.set(0)
        self.store_error = error[:500]

    def ready(self) -> bool:
        """Serving. A store that is down keeps the gallery ready: its pages say so, which beats a proxy's bare 503."""
        return self.listening.is_set()

    def summary(self) -> dict[str, Any]:
        return {
            "requests": counted(self.requests), "erased": counted(self.erased), "logins": counted(self.logins, outcome="ok"),
            "login_failures": counted(self.logins, outcome="refused"),
        }  # fmt: skip

    # --- who is asking -------------------------------------------------------------------------------

    def identify(self, headers: dict[str, str], trusted_proxy: bool) -> auth.Identity | None:
        """The caller's identity, None without (valid) credentials; ApiError-free: a wrong password is just None."""
        if trusted_proxy:
            return self._proxy_identity(headers)
        cookie = _cookie(headers.get("cookie", ""))
        if cookie:
            found = self.sessions.read(cookie, self.users)
            if found is not None:
                user, nonce = found
                return auth.Identity(user.name, user.role, "session", self.sessions.csrf("session:" + nonce))
        authorization = headers.get("authorization", "")
        if authorization[:6].lower() == "basic ":
            try:
                name, _, password = base64.b64decode(authorization[6:].strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            user = self.users.get(name)
            if user is None or not self.basic.check(name, password, user):
                return None
            return auth.Identity(user.name, user.role, "basic")  # never ambient in a browser: no CSRF token needed
        if authorization or self.settings.anonymous == "none":
            return None
        return auth.Identity("anonymous", self.settings.anonymous, "anonymous", self.sessions.csrf("anonymous"))

    def _proxy_identity(self, headers: dict[str, str]) -> auth.Identity | None:
        user = headers.get(self.settings.proxy_user_header.lower(), "").strip()
        if not user:
            return None
        groups = auth.split_list(headers.get(self.settings.proxy_groups_header.lower(), ""))
        if user in self.admin_users or groups & self.admin_groups:
            role = "admin"
        elif not self.viewer_groups or groups & self.viewer_groups:
            role = "viewer"
        else:
            return None
        return auth.Identity(user, role, "proxy", self.sessions.csrf("proxy:" + user))

    def login(self, request: Request) -> Response:
        if self.throttle.blocked(request.client):
            return error_response(429, "too many failed logins", "wait a few minutes")
        try:
            if request.headers.get("content-type", "").startswith("application/json"):
                fields = json.loads(request.body or b"{}")
            else:
                fields = parse_query(request.body.decode())
            name, password = str(fields.get("user", "")), str(fields.get("password", ""))
        except (ValueError, AttributeError):
            return error_response(400, "bad login", 'send {"user": ..., "password": ...}')
        user = self.users.get(name)
        if user is None or not auth.verify_password(password, user.hash):
            self.throttle.failed(request.client)
            self.logins.labels("refused").inc()
            self.log.warning("login.refused", extra={"user": name[:64], "client": request.client})
            return error_response(401, "wrong user name or password")
        self.logins.labels("ok").inc()
        self.log.info("login.ok", extra={"user": name, "role": user.role, "client": request.client})
        cookie = self._cookie_header(self.sessions.issue(user), int(self.sessions.lifetime))
        return json_response(200, {"user": user.name, "role": user.role}, {"Set-Cookie": cookie})

    def _cookie_header(self, value: str, max_age: int) -> str:
        secure = "; Secure" if self.settings.secure_cookies else ""
        return f"{COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"

    def logout(self) -> Response:
        return json_response(200, {"user": None}, {"Set-Cookie": self._cookie_header("", 0)})


def _cookie(header: str) -> str:
    try:
        jar = SimpleCookie(header)
    except CookieError:
        return ""
    morsel = jar.get(COOKIE)
    return morsel.value if morsel is not None else ""


def _cross_site(headers: dict[str, str]) -> bool:
    """A state-changing request another site's page made: refused (with SameSite cookies and CSRF tokens, a third wall)."""
    if headers.get("sec-fetch-site", "") == "cross-site":
        return True
    origin = headers.get("origin", "")
    return bool(origin) and (origin == "null" or urlsplit(origin).netloc != headers.get("host", ""))


class GalleryHandler(BaseHTTPRequestHandler):
    """One HTTP request: static pages, API routes, the event stream. Every answer carries the security headers."""

    protocol_version = "HTTP/1.1"
    server_version = f"facepipe-gallery/{__version__}"

    def version_string(self) -> str:
        return self.server_version

    gallery: Gallery
    trusted_proxy: bool

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def _serve(self, method: str) -> None:
        started = time.perf_counter()
        route = "other"
        try:
            route, response = self._answer(method)
        except Exception:
            self.gallery.log.exception("http.error", extra={"method": method, "path": self.path[:200]})
            response = error_response(500, "internal error")
        if response is not None:
            self._send(response, method == "HEAD")
        self.gallery.requests.labels(route, str(response.status if response else 200)).inc()
        self.gallery.seconds.labels(route).observe(time.perf_counter() - started)

    def _answer(self, method: str) -> tuple[str, Response | None]:
        gallery = self.gallery
        raw_path, _, raw_query = self.path.partition("?")
        segments = [unquote(part) for part in raw_path.split("/")]
        if any("/" in part or "\0" in part for part in segments):
            return "bad_path", error_response(400, "bad path", "a path segment may not hold an encoded / or NUL")
        path = "/".join(segments)
        headers = {name.lower(): value for name, value in self.headers.items()}
        length = int(headers.get("content-length", "0") or 0)
        if length > MAX_BODY:
            return "too_large", error_response(413, "request too large")
        body = self.rfile.read(length) if length else b""
        if not path.startswith("/api/"):
            return "static", self._static(method, path)
        if method not in ("GET", "HEAD") and _cross_site(headers):
            return "cross_site", error_response(403, "cross-site request refused")
        identity = gallery.identify(headers, self.trusted_proxy)
        request = Request(method, path, parse_query(raw_query), headers, body, self.client_address[0], identity)
        if path == "/api/login" and method == "POST":
            if self.trusted_proxy:
                return "login", error_response(400, "the proxy logs you in", "this port trusts the auth proxy's header")
            return "login", gallery.login(request)
        if path == "/api/logout" and method == "POST":
            return "logout", gallery.logout()
        if identity is None:
            return "unauthorized", self._refused(headers)
        if path == "/api/session" and method in ("GET", "HEAD"):
            body_json = {"user": identity.user, "role": identity.role, "via": identity.via, "csrf": identity.csrf}
            return "session", json_response(200, body_json, {"Cache-Control": "no-store"})
        if path == "/api/status" and method in ("GET", "HEAD"):
            return "status", self._status()
        if path == "/api/events" and method == "GET":
            self._stream(request)
            return "events", None
        found = gallery.api.route(method, path)
        if found is None:
            return "not_found", error_response(404, "no such route")
        route, handler, params = found
        response = gallery.api.handle(handler, request, params)
        if response.status == 503:
            gallery.store_failed(json.loads(response.body).get("detail", ""))
        elif response.status < 500:
            gallery.store_ok()
        return route, response

    def _refused(self, headers: dict[str, str]) -> Response:
        if self.trusted_proxy:
            return error_response(401, "not signed in", "the auth proxy sent no user (or none allowed to view)")
        response = error_response(401, "not signed in", "log in at /login, or send HTTP Basic credentials")
        # A scheme browsers do not answer with a password dialog: Basic credentials stay explicit, never ambient.
        response.headers["WWW-Authenticate"] = 'FacepipeLogin realm="facepipe gallery"'
        return response

    def _status(self) -> Response:
        gallery = self.gallery
        live = gallery.live.link.connected.is_set() if gallery.live is not None else None
        body = {
            "version": __version__,
            "store": {"url": gallery.store.url, "ok": not gallery.store_error, "error": gallery.store_error},
            "live": live,
        }
        return json_response(200, body, {"Cache-Control": "no-store"})

    def _static(self, method: str, path: str) -> Response:
        if method not in ("GET", "HEAD"):
            return error_response(405, "method not allowed")
        if path == "/favicon.ico":
            path = "/static/favicon.svg"
        if path in PAGES or path.startswith(PAGE_PREFIXES):
            name = "index.html"
        elif path.startswith("/static/") and path[len("/static/") :] in self.gallery.static:
            name = path[len("/static/") :]
        else:
            return Response(404, b"not found\n", "text/plain; charset=utf-8")
        data, content_type, etag = self.gallery.static[name]
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if self.headers.get("If-None-Match", "") == etag:
            return Response(304, headers=headers)
        return Response(200, data, content_type, headers)

    def _send(self, response: Response, head_only: bool) -> None:
        self.send_response(response.status, HTTPStatus(response.status).phrase)
        for name, value in {**SECURITY_HEADERS, **response.headers}.items():
            self.send_header(name, value)
        if response.status != 304:
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if not head_only and response.status != 304:
            self.wfile.write(response.body)

    def _stream(self, request: Request) -> None:
        """Server-sent events (of ?device= when given): `face` for each new face stored, `status` when a device's
        status changes, a comment every 15 s."""
        gallery = self.gallery
        device = request.query.get("device") or None
        if gallery.hub.count() >= MAX_STREAMS:
            self._send(error_response(503, "too many live streams"), False)
            return
        self.send_response(200)
        for name, value in {**SECURITY_HEADERS, "Content-Type": "text/event-stream", "Cache-Control": "no-store",
                            "Connection": "close", "X-Accel-Buffering": "no"}.items():  # fmt: skip
            self.send_header(name, value)
        self.end_headers()
        self.close_connection = True
        stream = gallery.hub.subscribe()
        try:
            self.wfile.write(f"retry: 2000\nevent: hello\ndata: {json.dumps({'live': gallery.live is not None})}\n\n".encode())
            self.wfile.flush()
            quiet_since = time.monotonic()
            while not gallery.stopping.is_set():
                try:
                    event = stream.get(timeout=1.0)
                except queue.Empty:
                    if time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
                        self.wfile.write(b": keepalive\n\n")
                        self.wfile.flush()
                        quiet_since = time.monotonic()
                    continue
                if device is None or event.get("device") == device:
                    kind = event.get("event", "face")  # the event is shared by every stream: read, never change it
                    body = {k: v for k, v in event.items() if k != "event"}
                    self.wfile.write(f"event: {kind}\ndata: {json.dumps(body, separators=(',', ':'))}\n\n".encode())
                    self.wfile.flush()
                    quiet_since = time.monotonic()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        finally:
            gallery.hub.unsubscribe(stream)

    def log_message(self, format: str, *args: Any) -> None:  # requests are counted in /metrics, not logged one by one
        return
