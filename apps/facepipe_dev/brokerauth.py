"""Mosquitto password and ACL files for the cloud broker: one identity per device, one for the processor.

Each device user may only publish its faces to `<base>/<its user name>` and its components' status
to `<base>/<its user name>/status/+` (contract.device_topics); the processor user may only read `<base>/#`. The ACL lists every user explicitly (no `pattern` lines, which would also
apply to the processor), so anything not listed is denied.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from facepipe import contract


def mosquitto_passwd_binary() -> str | None:
    return shutil.which("mosquitto_passwd") or shutil.which("mosquitto_passwd", path="/usr/bin:/usr/sbin:/usr/local/bin")


def mosquitto_passwd_available() -> str | None:
    """None when mosquitto_passwd exists, else what to install."""
    return None if mosquitto_passwd_binary() else "mosquitto_passwd not found: apt-get install mosquitto"


def write_password_file(path: Path, users: dict[str, str]) -> Path:
    """A Mosquitto password file (hashed by `mosquitto_passwd -b`) holding `users`."""
    binary = mosquitto_passwd_binary()
    if binary is None:
        raise FileNotFoundError("mosquitto_passwd not found")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    for i, (user, password) in enumerate(users.items()):
        args = [binary, "-b", *(["-c"] if i == 0 else []), str(path), user, password]
        done = subprocess.run(args, capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"mosquitto_passwd failed for {user!r}: {done.stdout}{done.stderr}")
    path.chmod(0o600)
    return path


def acl_text(devices: list[str], processor_user: str, base: str = contract.DEFAULT_REMOTE_TOPIC, readers: tuple[str, ...] = ()) -> str:
    """Devices publish only their own topics; the processor, and each of `readers` (the gallery), only read."""
    lines = ["# facepipe cloud broker: devices publish only their own topics; the processor and the gallery only read."]
    for device in devices:
        lines += ["", f"user {device}", *(f"topic write {topic}" for topic in contract.device_topics(base, device))]
    for reader in (processor_user, *readers):
        lines += ["", f"user {reader}", f"topic read {base}/#"]
    return "\n".join(lines) + "\n"


@dataclass
class CloudAuth:
    """The users of one cloud broker and the files that describe them."""

    devices: dict[str, str]
    processor: tuple[str, str] = ("processor", "processor-secret")
    base: str = contract.DEFAULT_REMOTE_TOPIC
    readers: dict[str, str] = field(default_factory=dict)  # users that may only read, like the processor: the gallery
    password_file: Path = field(init=False)
    acl_file: Path = field(init=False)

    def write(self, workdir: Path) -> CloudAuth:
        workdir.mkdir(parents=True, exist_ok=True)
        users = {**self.devices, self.processor[0]: self.processor[1], **self.readers}
        self.password_file = write_password_file(workdir / "passwords", users)
        self.acl_file = workdir / "acl"
        self.acl_file.write_text(acl_text(list(self.devices), self.processor[0], self.base, tuple(self.readers)))
        return self
