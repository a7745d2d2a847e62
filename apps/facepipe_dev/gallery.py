"""A real `facepipe gallery` process for tests, users with known passwords, and a client that talks to it
as a script does (HTTP Basic) or as a browser does (a login, a session cookie, the CSRF token)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

from facepipe.config import BrokerSettings, CommonSettings, GallerySettings, StoreSettings
from facepipe.gallery.auth import hash_password
from facepipe_dev.components import ComponentProcess
from facepipe_dev.processes import free_port

# The smallest scrypt cost a users file accepts: logins in tests take milliseconds, not a third of a second.
TEST_SCRYPT_N = 2**14
PASSWORDS = {"admin": "admin-password", "viewer": "viewer-password"}


def write_users(path: Path) -> Path:
    """A users file with one admin (`admin`) and one viewer (`viewer`)."""
    path.write_text("".join(f"{name}:{name}:{hash_password(password, n=TEST_SCRYPT_N)}\n" for name, password in PASSWORDS.items()))
    return path


def unreachable_store() -> tuple[StoreSettings, dict[str, str]]:
    """An S3 store on a loopback port nobody listens on, and the credentials env a gallery needs to try it."""
    storage = StoreSettings(store="s3://faces/x", s3_endpoint_url=f"http://127.0.0.1:{free_port()}")
    env = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    return storage, env


def start_gallery(
    workdir: Path,
    storage: StoreSettings,
    broker: BrokerSettings | None = None,
    extra_env: dict[str, str] | None = None,
    **options: Any,
) -> ComponentProcess:
    """A gallery on free loopback ports (live updates from `broker` when given), started and ready; `.gallery_url` set."""
    if "users_file" not in options:
        options["users_file"] = str(write_users(workdir / "gallery-users"))
    settings = GallerySettings(
        common=CommonSettings(device_id="cloud"), storage=storage, broker=broker or BrokerSettings(),
        live=broker is not None, host="127.0.0.1", port=free_port(), secure_cookies=False, **options,
    )  # fmt: skip
    process = ComponentProcess("gallery", settings, workdir, extra_env).start().wait_ready()
    process.gallery_url = f"http://127.0.0.1:{settings.port}"  # type: ignore[attr-defined]
    return process


class GalleryClient:
    """HTTP to a gallery: `user` with its test password as Basic credentials, or `login()` for a session cookie."""

    def __init__(self, base: str, user: str | None = None) -> None:
        self.base = base
        self.user = user
        self.cookies = CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))
        self.csrf = ""

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        sent = dict(headers or {})
        if self.user and not self.csrf:
            token = base64.b64encode(f"{self.user}:{PASSWORDS[self.user]}".encode()).decode()
            sent.setdefault("Authorization", f"Basic {token}")
        request = urllib.request.Request(self.base + path, data=body, method=method, headers=sent)
        try:
            with self.opener.open(request, timeout=60) as response:
                return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()

    def json(self, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        status, _headers, body = self.request(method, path, headers=headers)
        return status, json.loads(body) if body else None

    def get(self, path: str) -> Any:
        status, body = self.json("GET", path)
        assert status == 200, f"GET {path}: {status} {body}"
        return body

    def login(self, user: str) -> GalleryClient:
        """Log in as a browser does; afterwards requests carry the session cookie (and deletes the CSRF token)."""
        self.user = None
        payload = json.dumps({"user": user, "password": PASSWORDS[user]}).encode()
        status, _headers, body = self.request("POST", "/api/login", payload, {"Content-Type": "application/json"})
        assert status == 200, f"login {user}: {status} {body!r}"
        self.csrf = self.get("/api/session")["csrf"]
        return self

    def delete(self, path: str, csrf: bool = True, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        sent = dict(headers or {})
        if csrf and self.csrf:
            sent["X-CSRF-Token"] = self.csrf
        return self.json("DELETE", path, sent)
