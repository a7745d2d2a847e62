"""Podman for the container tier (tests/container): build the application image, run containers.

Setup: `bash .ci/install-podman.sh` installs podman, runc and debootstrap, writes the private
containers.conf these machines need (runc, lower ulimits) into
`${FACEPIPE_TOOLS_CACHE:-/var/cache/facepipe-tools}/podman/`, and makes the local base image
`localhost/facepipe-base:bookworm` (debootstrap + podman import; no registry is reachable here).
Every podman command below runs with CONTAINERS_CONF pointing at that file (unless set already).

The image is built from the real `apps/Dockerfile` with `--build-arg BASE_IMAGE=<local base>`,
the models mirror as the `model-mirror` build context, and the host's pip settings: index
variables as build arguments and pip's CA bundle as the `pip_cert` secret (where TLS to the
package index is intercepted, pip inside the build needs the host's CA bundle to verify it).

Containers run with `--network host` on free loopback ports only; each is removed when done.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from facepipe_dev.paths import REPO, SHARED

DOCKERFILE = REPO / "apps" / "Dockerfile"
MOSQUITTO_CONTAINERFILE = REPO / "tests" / "container" / "mosquitto.Containerfile"
INSTALLER = REPO / ".ci" / "install-podman.sh"
BASE_IMAGE = os.environ.get("FACEPIPE_BASE_IMAGE", "localhost/facepipe-base:bookworm")
APP_IMAGE = "localhost/facepipe:test"
MOSQUITTO_IMAGE = "localhost/facepipe-test-mosquitto:bookworm"
APP_UID = 10001
INSTALL_HINT = "run `bash .ci/install-podman.sh` (apt-get install podman runc debootstrap, containers.conf, base image)"
PIP_INDEX_VARIABLES = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST")


def tools_dir() -> Path:
    return Path(os.environ.get("FACEPIPE_TOOLS_CACHE", "/var/cache/facepipe-tools")) / "podman"


def find_podman() -> str | None:
    return shutil.which("podman")


class PodmanError(RuntimeError):
    def __init__(self, argv: Sequence[str], result: subprocess.CompletedProcess[str]) -> None:
        tail = "\n".join((result.stderr + result.stdout).splitlines()[-60:])
        super().__init__(f"{' '.join(argv)} exited {result.returncode}:\n{tail}")
        self.result = result


@dataclass(frozen=True)
class Built:
    image: str
    seconds: float
    size_bytes: int
    steps: int
    cached_steps: int
    log: str

    @property
    def size_mb(self) -> float:
        return self.size_bytes / 1e6

    def describe(self) -> str:
        cache = "warm cache" if self.cached_steps == self.steps else f"{self.cached_steps}/{self.steps} steps cached"
        return f"{self.image}: built in {self.seconds:.1f}s ({cache}), {self.size_mb:.0f} MB"


@dataclass
class Podman:
    """The podman binary with the private containers.conf of these machines."""

    binary: str
    conf: Path | None = None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.conf is not None and "CONTAINERS_CONF" not in os.environ:
            env["CONTAINERS_CONF"] = str(self.conf)
        return env

    def run(self, *args: str, check: bool = True, timeout: float = 120, input: str | None = None) -> subprocess.CompletedProcess[str]:
        argv = [self.binary, *args]
        result = subprocess.run(argv, capture_output=True, text=True, env=self.env(), timeout=timeout, input=input, check=False)
        if check and result.returncode != 0:
            raise PodmanError(argv, result)
        return result

    def image_exists(self, image: str) -> bool:
        return self.run("image", "exists", image, check=False).returncode == 0

    def image_id(self, image: str) -> str | None:
        result = self.run("image", "inspect", "--format", "{{.Id}}", image, check=False)
        return result.stdout.strip() or None if result.returncode == 0 else None

    def image_size(self, image: str) -> int:
        return int(self.run("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())

    def build(
        self,
        tag: str,
        containerfile: Path,
        context: Path,
        build_args: Mapping[str, str] = {},
        extra: Sequence[str] = (),
        timeout: float = 1800,
    ) -> Built:
        args = ["build", "--tag", tag, "--file", str(containerfile)]
        for name, value in build_args.items():
            args += ["--build-arg", f"{name}={value}"]
        previous = self.image_id(tag)
        started = time.monotonic()
        result = self.run(*args, *extra, str(context), timeout=timeout)
        seconds = time.monotonic() - started
        if previous and previous != self.image_id(tag):
            # The image this tag named before (and its untagged parents) would only fill the disk.
            self.run("rmi", previous, check=False)
        log = result.stdout + result.stderr
        steps = len(re.findall(r"STEP \d+/\d+: (?!FROM )", log))
        cached = len(re.findall(r"^--> Using cache", log, flags=re.MULTILINE))
        return Built(tag, seconds, self.image_size(tag), steps, min(cached, steps), log)

    def start(
        self,
        name: str,
        image: str,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] = {},
        options: Sequence[str] = (),
        entrypoint: str | None = None,
    ) -> Container:
        """`podman run -d` on the host network; the Container remembers when it was asked for."""
        argv = ["run", "--detach", "--name", name, "--network", "host", *options]
        for key, value in env.items():
            argv += ["--env", f"{key}={value}"]
        if entrypoint is not None:
            argv += ["--entrypoint", entrypoint]
        started = time.monotonic()
        self.run(*argv, image, *args, timeout=60)
        return Container(self, name, started, time.monotonic())

    def remove(self, name: str) -> None:
        self.run("rm", "--force", "--time", "5", name, check=False, timeout=60)


@dataclass
class Container:
    podman: Podman
    name: str
    requested: float  # time.monotonic() when `podman run` was called
    created: float  # ... and when it returned (the container is running)
    ready_seconds: float | None = field(default=None)

    def inspect(self) -> dict:
        return json.loads(self.podman.run("inspect", "--type", "container", self.name).stdout)[0]

    def running(self) -> bool:
        return bool(self.inspect()["State"]["Running"])

    def exit_code(self) -> int | None:
        state = self.inspect()["State"]
        return None if state["Running"] else int(state["ExitCode"])

    def logs(self, tail: int = 60) -> str:
        result = self.podman.run("logs", "--tail", str(tail), self.name, check=False)
        return (result.stdout + result.stderr).strip()

    def wait(self, timeout: float) -> int:
        """Wait for the container to exit; its exit code."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.exit_code()
            if code is not None:
                return code
            time.sleep(0.25)
        raise TimeoutError(f"{self.name} still running after {timeout:.0f}s:\n{self.logs()}")

    def stop(self, timeout: int = 15) -> int:
        """SIGTERM, up to `timeout` seconds, then SIGKILL; the exit code."""
        self.podman.run("stop", "--time", str(timeout), self.name, timeout=timeout + 60)
        return int(self.inspect()["State"]["ExitCode"])

    def wait_ready(self, port: int, timeout: float = 60.0) -> float:
        """Poll http://127.0.0.1:port/readyz until 200; seconds from `podman run` to ready."""
        url = f"http://127.0.0.1:{port}/readyz"
        deadline = time.monotonic() + timeout
        next_check = 0.0
        while time.monotonic() < deadline:
            if http_status(url) == 200:
                self.ready_seconds = time.monotonic() - self.requested
                return self.ready_seconds
            if time.monotonic() >= next_check:
                if not self.running():
                    raise RuntimeError(f"{self.name} exited ({self.exit_code()}) before it was ready:\n{self.logs()}")
                next_check = time.monotonic() + 1.0
            time.sleep(0.02)
        raise TimeoutError(f"{self.name}: {url} not 200 within {timeout:.0f}s:\n{self.logs()}")


def http_status(url: str, timeout: float = 1.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


def http_text(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def metric_value(metrics_text: str, name: str) -> float:
    """The sum of every sample of `name` (any labels) in Prometheus text output."""
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def unique_name(role: str) -> str:
    return f"facepipe-test-{uuid.uuid4().hex[:8]}-{role}"


# --- setup ----------------------------------------------------------------------------------------


def setup(podman_binary: str) -> Podman:
    """A Podman with the private containers.conf and the local base image, made if missing
    (by .ci/install-podman.sh, which skips what is already there)."""
    conf = tools_dir() / "containers.conf"
    podman = Podman(podman_binary, conf if conf.is_file() else None)
    if podman.conf is None or not podman.image_exists(BASE_IMAGE):
        started = time.monotonic()
        result = subprocess.run(["bash", str(INSTALLER)], capture_output=True, text=True, timeout=1200, check=False)
        if result.returncode != 0:
            raise RuntimeError(
                f"{INSTALLER} failed ({result.returncode}) after {time.monotonic() - started:.0f}s:\n{result.stderr[-4000:]}"
            )
        podman = Podman(podman_binary, Path(result.stdout.strip().splitlines()[-1]))
    return podman


def pip_config() -> dict[str, str]:
    """pip's effective settings on this host (`pip config list`: files and PIP_* variables)."""
    result = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60, check=False)
    settings: dict[str, str] = {}
    for line in result.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            settings[key.split(".", 1)[-1]] = value.strip().strip("'\"")
    return settings


def pip_build_options(environ: Mapping[str, str] | None = None) -> tuple[dict[str, str], list[str]]:
    """(build args, extra podman options) that give pip inside the build the host's index settings:
    PIP_INDEX_URL / PIP_EXTRA_INDEX_URL / PIP_TRUSTED_HOST and pip's CA bundle as the pip_cert secret."""
    env = os.environ if environ is None else environ
    config = pip_config()
    build_args: dict[str, str] = {}
    for name in PIP_INDEX_VARIABLES:
        value = env.get(name) or config.get(name[len("PIP_") :].lower().replace("_", "-"), "")
        if value:
            build_args[name] = value
    extra: list[str] = []
    for candidate in (env.get("PIP_CERT"), config.get("cert"), env.get("REQUESTS_CA_BUNDLE"), env.get("SSL_CERT_FILE")):
        if candidate and Path(candidate).is_file():
            extra += ["--secret", f"id=pip_cert,src={candidate}"]
            break
    return build_args, extra


def build_app_image(podman: Podman, tag: str = APP_IMAGE, mirror: Path | None = None) -> Built:
    """apps/Dockerfile from the repository root, FROM the local base, models from the mirror."""
    build_args, extra = pip_build_options()
    build_args = {"BASE_IMAGE": BASE_IMAGE, **build_args}
    mirror = mirror if mirror is not None else SHARED / "models"
    if mirror.is_dir():
        extra += ["--build-context", f"model-mirror={mirror}"]
    return podman.build(tag, DOCKERFILE, REPO, build_args, extra)


def build_mosquitto_image(podman: Podman, tag: str = MOSQUITTO_IMAGE) -> Built:
    """A small Mosquitto image from the same local base (Debian's mosquitto package)."""
    return podman.build(tag, MOSQUITTO_CONTAINERFILE, MOSQUITTO_CONTAINERFILE.parent, {"BASE_IMAGE": BASE_IMAGE})


# --- running what the charts render ---------------------------------------------------------------


def security_options(pod_spec: Mapping, container: Mapping) -> list[str]:
    """podman run options for a container's security context as Kubernetes would apply it:
    user and group, supplemental groups (and fsGroup), read-only root, dropped capabilities,
    no privilege escalation."""
    pod_ctx = pod_spec.get("securityContext", {}) or {}
    ctx = container.get("securityContext", {}) or {}
    uid = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
    gid = ctx.get("runAsGroup", pod_ctx.get("runAsGroup"))
    options: list[str] = []
    if uid is not None:
        options += ["--user", f"{uid}:{gid}" if gid is not None else str(uid)]
    for group in [*pod_ctx.get("supplementalGroups", []), *([pod_ctx["fsGroup"]] if "fsGroup" in pod_ctx else [])]:
        options += ["--group-add", str(group)]
    if ctx.get("readOnlyRootFilesystem"):
        options.append("--read-only")
    capabilities = ctx.get("capabilities", {}) or {}
    for cap in capabilities.get("drop", []):
        options += ["--cap-drop", cap]
    for cap in capabilities.get("add", []):
        options += ["--cap-add", cap]
    if ctx.get("privileged"):
        options.append("--privileged")
    if ctx.get("allowPrivilegeEscalation") is False:
        options += ["--security-opt", "no-new-privileges"]
    return options


def volume_options(container: Mapping, skip: Iterable[str] = ("/dev/",)) -> list[str]:
    """A writable tmpfs for each volume mount of the container (emptyDir, PVC, secret, ...): the
    paths exist and are writable as in the pod; device mounts are left out."""
    options: list[str] = []
    for mount in container.get("volumeMounts", []):
        path = mount["mountPath"]
        if any(path.startswith(prefix) for prefix in skip):
            continue
        mode = "ro," if mount.get("readOnly") else "rw,"
        options += ["--tmpfs", f"{path}:{mode}mode=1777,size=64m"]
    return options


def run_once(
    podman: Podman, image: str, args: Sequence[str], env: Mapping[str, str], options: Sequence[str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`podman run --rm` to completion (stdout, stderr, exit code of the container)."""
    argv = ["run", "--rm", "--network", "none", *options]
    for key, value in env.items():
        argv += ["--env", f"{key}={value}"]
    return podman.run(*argv, image, *args, check=False, timeout=timeout)


# --- Mosquitto in a container ---------------------------------------------------------------------


def mosquitto_config(port: int) -> str:
    """A plain broker on 127.0.0.1:port; queue limits raised (Mosquitto's default 1000 drops QoS 1
    messages for a slow subscriber); no persistence, logs to stdout (`podman logs`)."""
    return "\n".join(
        [
            "per_listener_settings false",
            "allow_anonymous true",
            "persistence false",
            "max_queued_messages 1000000",
            "max_inflight_messages 1000",
            "log_dest stdout",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "connection_messages true",
            f"listener {port} 127.0.0.1",
            "",
        ]
    )


def start_mosquitto(podman: Podman, workdir: Path, role: str, port: int, image: str = MOSQUITTO_IMAGE) -> Container:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "mosquitto.conf").write_text(mosquitto_config(port))
    (workdir / "mosquitto.conf").chmod(0o644)
    workdir.chmod(0o755)
    options = ["--read-only", "--user", "10002:10002", "--cap-drop", "ALL", "--volume", f"{workdir}:/mosquitto/config:ro"]
    return podman.start(unique_name(role), image, ["-c", "/mosquitto/config/mosquitto.conf"], options=options)
