"""The gallery's credentials: scrypt hashes, the users file, signed sessions that end with a password change."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from facepipe.gallery import auth

N = 2**14  # the smallest cost the users file accepts: quick tests


def test_a_hash_checks_its_password_and_no_other() -> None:
    hashed = auth.hash_password("correct horse", n=N)
    assert hashed.startswith(f"scrypt${N}$8$1$") and auth.check_hash(hashed) is None
    assert auth.verify_password("correct horse", hashed)
    assert not auth.verify_password("correct horsE", hashed)
    assert auth.hash_password("correct horse", n=N) != hashed, "a new salt each time"
    assert auth.hash_password("x").startswith(f"scrypt${auth.SCRYPT_N}$"), "the default cost is OWASP's minimum"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("ann:admin:plaintext", "line 1: the hash is not scrypt"),
        ("ann:root:HASH", "line 1: the role 'root' is not one of viewer, admin"),
        ("a n:viewer:HASH", "line 1: the user name"),
        ("ann:viewer:scrypt$1024$8$1$c2FsdA$a2V5", "line 1: the hash needs N a power of two of at least 16384"),
        ("ann:viewer:HASH\nann:admin:HASH", "line 2: user 'ann' appears twice"),
    ],
)
def test_a_users_file_names_its_bad_line(line: str, message: str) -> None:
    with pytest.raises(auth.AuthError, match=message):
        auth.parse_users(line.replace("HASH", auth.hash_password("pw", n=N)))


def test_comments_and_blank_lines_are_skipped() -> None:
    users = auth.parse_users(f"# the gallery's users\n\nann:viewer:{auth.hash_password('pw', n=N)}\n")
    assert list(users) == ["ann"] and users["ann"].role == "viewer"


def test_sessions_are_signed_expire_and_end_when_the_password_changes(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text(f"ann:admin:{auth.hash_password('one', n=N)}\n")
    users = auth.UserFile(str(path))
    sessions = auth.Sessions("a secret", lifetime_seconds=3600)
    ann = users.get("ann")
    assert ann is not None
    cookie = sessions.issue(ann)
    found = sessions.read(cookie, users)
    assert found is not None and found[0].name == "ann"
    body, _, signature = cookie.partition(".")
    assert sessions.read(body + "." + signature[::-1], users) is None, "a forged signature"
    assert auth.Sessions("another secret", 3600).read(cookie, users) is None, "another key"
    assert sessions.csrf("session:" + found[1]) != sessions.csrf("session:other")
    assert auth.Sessions("a secret", lifetime_seconds=-1).read(auth.Sessions("a secret", -1).issue(ann), users) is None, "expired"
    path.write_text(f"ann:admin:{auth.hash_password('two', n=N)}\n")
    users.reload()
    assert sessions.read(cookie, users) is None, "a new password ends the old sessions"


def test_a_changed_users_file_is_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "RELOAD_SECONDS", 0.0)
    path = tmp_path / "users"
    path.write_text(f"ann:viewer:{auth.hash_password('pw', n=N)}\n")
    users = auth.UserFile(str(path))
    path.write_text(f"ann:admin:{auth.hash_password('pw', n=N)}\nbob:viewer:{auth.hash_password('pw', n=N)}\n")
    time.sleep(0.01)
    assert users.get("bob") is not None and users.get("ann").role == "admin"  # type: ignore[union-attr]
    path.write_text("broken")
    assert users.get("bob") is not None, "a broken file keeps the users we had"


def test_failed_logins_are_throttled_per_client() -> None:
    throttle = auth.LoginThrottle(attempts=3, window=60)
    for _ in range(3):
        assert not throttle.blocked("10.0.0.1")
        throttle.failed("10.0.0.1")
    assert throttle.blocked("10.0.0.1") and not throttle.blocked("10.0.0.2")
