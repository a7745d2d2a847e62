"""Who is asking, and may they: users from a file of scrypt hashes, signed session cookies, a trusted
proxy header, CSRF tokens. Roles: `viewer` (read) and `admin` (read and erase).

A users file (a Kubernetes Secret) holds one `name:role:hash` line per user; `facepipe hash-password`
makes the hash (`scrypt$N$r$p$salt$key`, base64). `sha256$<hex>` is accepted for random machine
tokens only (the chart's `helm test` user: 32 random characters need no slow hash, and Helm can
compute SHA-256 but not scrypt); never use it for a password a person chose. A session cookie carries the user, an expiry and a
fingerprint of the user's hash, signed with HMAC-SHA256: changing or removing a password ends its sessions.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROLES = ("viewer", "admin")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**17, 8, 1  # OWASP's minimum for scrypt: 128 MiB, ~0.3 s per check
BASIC_CACHE_SECONDS = 300.0
RELOAD_SECONDS = 5.0


class AuthError(ValueError):
    """A users file or hash that cannot be used; the message says which line."""


@dataclass(frozen=True)
class Identity:
    user: str
    role: str
    via: str  # session, basic, proxy, anonymous
    csrf: str = ""  # the token a delete must echo (empty: none needed)

    @property
    def admin(self) -> bool:
        return self.role == "admin"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=32)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(key)}"


_checking = threading.Semaphore(1)  # one scrypt at a time: each takes 128 MiB


def verify_password(password: str, stored: str) -> bool:
    if stored.startswith("sha256$"):
        return hmac.compare_digest(hashlib.sha256(password.encode()).hexdigest(), stored[len("sha256$") :])
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        with _checking:
            derived = hashlib.scrypt(
                password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), maxmem=512 * 1024 * 1024, dklen=len(_unb64(key))
            )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(derived, _unb64(key))


def check_hash(text: str) -> str | None:
    """Why `text` is not a usable `scrypt$N$r$p$salt$key` hash, or None."""
    parts = text.split("$")
    if parts[0] == "sha256" and len(parts) == 2:
        return None if len(parts[1]) == 64 and all(c in "0123456789abcdef" for c in parts[1]) else "is not sha256$<64 hex digits>"
    if len(parts) != 6 or parts[0] != "scrypt":
        return "is not scrypt$N$r$p$salt$key (make one with `facepipe hash-password`)"
    try:
        n, r, p = (int(v) for v in parts[1:4])
        _unb64(parts[4])
        _unb64(parts[5])
    except ValueError:
        return "has a field that is not a number or base64"
    if n < 2**14 or n & (n - 1) or r < 1 or p < 1:
        return "needs N a power of two of at least 16384, r and p at least 1"
    return None


@dataclass(frozen=True)
class User:
    name: str
    role: str
    hash: str

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.hash.encode()).hexdigest()[:16]


def parse_users(text: str, source: str = "users file") -> dict[str, User]:
    users: dict[str, User] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition(":")
        role, _, hashed = rest.partition(":")
        problem = None
        if not name or not all(c.isalnum() or c in "._@-" for c in name):
            problem = "the user name must be letters, digits and . _ @ -"
        elif role not in ROLES:
            problem = f"the role {role!r} is not one of {', '.join(ROLES)}"
        elif name in users:
            problem = f"user {name!r} appears twice"
        else:
            why = check_hash(hashed)
            problem = f"the hash {why}" if why else None
        if problem:
            raise AuthError(f"{source} line {number}: {problem}")
        users[name] = User(name, role, hashed)
    return users


class UserFile:
    """The users file, read again when it changes (a mounted Secret is updated in place)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path) if path else None
        self._users: dict[str, User] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self.reload()

    def reload(self) -> None:
        """Read the file now; AuthError when it is unreadable or wrong (the old users stay)."""
        if self.path is None:
            return
        try:
            stat = self.path.stat()
            users = parse_users(self.path.read_text(), str(self.path))
        except OSError as exc:
            raise AuthError(f"cannot read the users file {self.path}: {exc}") from exc
        with self._lock:
            self._users, self._stamp = users, (stat.st_mtime_ns, stat.st_size)

    def get(self, name: str) -> User | None:
        self._maybe_reload()
        with self._lock:
            return self._users.get(name)

    def _maybe_reload(self) -> None:
        if self.path is None or time.monotonic() - self._checked < RELOAD_SECONDS:
            return
        self._checked = time.monotonic()
        try:
            stat = self.path.stat()
            if (stat.st_mtime_ns, stat.st_size) != self._stamp:
                self.reload()
        except (OSError, AuthError):
            return  # keep the users we have; the next look tries again


class Sessions:
    """Signed, stateless session cookies and the CSRF tokens bound to them."""

    def __init__(self, secret: str, lifetime_seconds: float) -> None:
        self.key = secret.encode() if secret else secrets.token_bytes(32)
        self.lifetime = lifetime_seconds

    def _sign(self, text: str) -> str:
        return _b64(hmac.new(self.key, text.encode(), hashlib.sha256).digest())

    def issue(self, user: User) -> str:
        body = _b64(
            json.dumps({"u": user.name, "f": user.fingerprint, "e": int(time.time() + self.lifetime), "n": secrets.token_hex(8)}).encode()
        )
        return f"{body}.{self._sign(body)}"

    def read(self, cookie: str, users: UserFile) -> tuple[User, str] | None:
        """(user, session nonce) of a valid cookie whose user still has the same password; else None."""
        body, _, signature = cookie.partition(".")
        if not body or not hmac.compare_digest(signature, self._sign(body)):
            return None
        try:
            fields = json.loads(_unb64(body))
            user = users.get(str(fields["u"]))
            fresh = float(fields["e"]) > time.time()
            nonce = str(fields["n"])
        except (ValueError, KeyError, TypeError):
            return None
        if user is None or not fresh or not hmac.compare_digest(user.fingerprint, str(fields.get("f", ""))):
            return None
        return user, nonce

    def csrf(self, bound_to: str) -> str:
        return self._sign("csrf:" + bound_to)


class BasicCache:
    """Users whose Basic credentials checked out recently, so a script's every request does not cost an scrypt."""

    def __init__(self) -> None:
        self._seen: dict[bytes, tuple[float, str]] = {}
        self._lock = threading.Lock()
        self._salt = os.urandom(16)

    def _token(self, name: str, password: str, user: User) -> bytes:
        return hashlib.sha256(self._salt + f"{name}\0{password}\0{user.hash}".encode()).digest()

    def check(self, name: str, password: str, user: User) -> bool:
        token = self._token(name, password, user)
        now = time.monotonic()
        with self._lock:
            hit = self._seen.get(token)
            if hit is not None and now - hit[0] < BASIC_CACHE_SECONDS:
                return True
        if not verify_password(password, user.hash):
            return False
        with self._lock:
            if len(self._seen) > 1000:
                self._seen.clear()
            self._seen[token] = (now, name)
        return True


class LoginThrottle:
    """At most `attempts` failed logins per client in `window` seconds."""

    def __init__(self, attempts: int = 10, window: float = 300.0) -> None:
        self.attempts, self.window = attempts, window
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def blocked(self, client: str) -> bool:
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._failures.get(client, []) if now - t < self.window]
            self._failures[client] = recent
            return len(recent) >= self.attempts

    def failed(self, client: str) -> None:
        with self._lock:
            if len(self._failures) > 10_000:
                self._failures.clear()
            self._failures.setdefault(client, []).append(time.monotonic())


def split_list(text: str) -> set[str]:
    return {item.strip() for item in text.split(",") if item.strip()}
