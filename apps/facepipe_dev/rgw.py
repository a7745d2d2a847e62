"""A real S3 server for tests and benchmarks: a single-node Ceph RADOS Gateway on loopback.

One monitor, one OSD on the in-memory `memstore` object store and radosgw with the `beast`
frontend, all on 127.0.0.1 free ports, with every file (config, data, logs) under one work
directory. Auth is off inside the cluster; S3 requests are signed with a per-run test user.

    with RadosGateway(tmp_path) as rgw:
        s3 = rgw.client()
        s3.create_bucket(Bucket="faces")

Needs Debian's `ceph-mon ceph-osd radosgw ceph-common` (see `rgw_available()`) and boto3.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import secrets
import shutil
import string
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from facepipe.config import StoreSettings
from facepipe_dev.processes import ChildProcess, free_port, port_open

__all__ = ["RadosGateway", "rgw_available"]

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
APT_INSTALL = "apt-get install --no-install-recommends ceph-mon ceph-osd radosgw ceph-common uuid-runtime"

# Binary -> Debian package that ships it.
_BINARIES = {
    "ceph-mon": "ceph-mon",
    "ceph-osd": "ceph-osd",
    "radosgw": "radosgw",
    "radosgw-admin": "ceph-common",
    "ceph": "ceph-common",
    "monmaptool": "ceph-base",
}


def rgw_available() -> str | None:
    """None when a RadosGateway can be started here, else why not (for `pytest.skip`)."""
    for binary, package in _BINARIES.items():
        if shutil.which(binary) is None:
            return f"{binary} not found on PATH (Debian package {package}); install: {APT_INSTALL}"
    if importlib.util.find_spec("boto3") is None:
        return "boto3 is not importable; install with: python3 -m pip install boto3"
    return None


def _random_key(length: int, alphabet: str) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _ceph_env() -> dict[str, str]:
    """This process's environment without the variables that would point ceph tools elsewhere."""
    dropped = ("CEPH_ARGS", "CEPH_CONF", "CEPH_KEYRING")
    return {key: value for key, value in os.environ.items() if key not in dropped}


def _left(deadline: float) -> float:
    """Seconds until `deadline`, at least one (so a last attempt still gets a chance)."""
    return max(1.0, deadline - time.monotonic())


class RadosGateway:
    """A throwaway single-node Ceph cluster with an S3 gateway; a context manager.

    After `start()` (or `__enter__`): `endpoint_url`, `access_key`, `secret_key`, `region`,
    `client()` and `env()`. `stop_gateway()` / `start_gateway()` take only radosgw down and up on
    the same port; the objects survive because they live in the OSD process.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        region: str = "us-east-1",
        start_timeout: float = 120.0,
        conf_overrides: Mapping[str, str] | None = None,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.region = region
        self.start_timeout = start_timeout
        self.conf_overrides = dict(conf_overrides or {})
        self.conf_path = self.workdir / "ceph.conf"
        self.log_dir = self.workdir / "log"
        self.fsid = str(uuid.uuid4())
        self.osd_uuid = str(uuid.uuid4())
        self.mon_port = 0
        self.port = 0
        self.access_key = _random_key(20, string.ascii_uppercase + string.digits)
        self.secret_key = _random_key(40, string.ascii_letters + string.digits)
        self.user_id = "facepipe-test"
        self._mon: ChildProcess | None = None
        self._osd: ChildProcess | None = None
        self._rgw: ChildProcess | None = None
        self._started = False

    # -- public API -------------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        """The S3 endpoint, http://127.0.0.1:PORT."""
        return f"http://{HOST}:{self.port}"

    def start(self) -> Self:
        """Start the cluster and the gateway; on any failure stop what started, then raise."""
        if self._started:
            raise RuntimeError("RadosGateway already started")
        reason = rgw_available()
        if reason is not None:
            raise RuntimeError(reason)
        t0 = time.monotonic()
        deadline = t0 + self.start_timeout
        try:
            self._prepare()
            self._start_mon(deadline)
            self._start_osd(deadline)
            self._wait_osd_up(deadline)
            self._launch_rgw()
            self._create_user(deadline)
            self._wait_rgw(deadline)
        except BaseException as exc:
            tails = self._log_tails()
            self._stop_all()
            if not isinstance(exc, Exception):
                raise
            raise RuntimeError(f"RadosGateway failed to start: {exc}\n{tails}") from exc
        self._started = True
        log.info("radosgw ready at %s in %.1fs", self.endpoint_url, time.monotonic() - t0)
        return self

    def stop(self) -> None:
        """Stop radosgw, the OSD and the monitor (SIGTERM + wait each); safe to call twice."""
        self._stop_all()
        self._started = False

    def stop_gateway(self) -> None:
        """Stop only radosgw (S3 goes down); the monitor and the OSD, and so the data, stay."""
        if self._rgw is not None:
            self._rgw.stop()
            self._rgw = None

    def start_gateway(self, timeout: float = 60.0) -> None:
        """Start radosgw again on the same port and wait until S3 requests work."""
        if self._osd is None or not self._osd.running():
            raise RuntimeError("the cluster is not running; use start()")
        if self._rgw is not None and self._rgw.running():
            return
        deadline = time.monotonic() + timeout
        try:
            self._launch_rgw()
            self._wait_rgw(deadline)
        except BaseException as exc:
            tails = self._log_tails()
            self.stop_gateway()
            if not isinstance(exc, Exception):
                raise
            raise RuntimeError(f"radosgw failed to restart: {exc}\n{tails}") from exc

    def gateway_running(self) -> bool:
        """True while the radosgw process is alive."""
        return self._rgw is not None and self._rgw.running()

    def client(self, **kwargs: Any) -> Any:
        """A boto3 S3 client for this gateway (path-style addressing); kwargs override."""
        import boto3
        from botocore.config import Config

        options: dict[str, Any] = {
            "endpoint_url": self.endpoint_url,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "region_name": self.region,
            "config": Config(s3={"addressing_style": "path"}),
        }
        options.update(kwargs)
        return boto3.client("s3", **options)

    def store_settings(self, store: str) -> StoreSettings:
        """Settings of a store `s3://bucket/prefix` on this gateway. It serves plain http, where RGW refuses
        server-side encryption, so SSE is off (the app's default is AES256)."""
        return StoreSettings(store=store, s3_endpoint_url=self.endpoint_url, s3_region=self.region, s3_sse="none")

    def env(self) -> dict[str, str]:
        """AWS_* variables that point a child process's boto3 at this gateway."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def add_user(self, uid: str) -> dict[str, str]:
        """Create another S3 user (no rights on others' buckets until a bucket policy grants them) and return
        `env()` with its keys; its ARN for a bucket policy is `arn:aws:iam:::user/<uid>`."""
        access, secret = _random_key(20, string.ascii_uppercase + string.digits), _random_key(40, string.ascii_letters + string.digits)
        self.admin("user", "create", "--uid", uid, "--display-name", uid, "--access-key", access, "--secret-key", secret)
        return {**self.env(), "AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret}

    def admin(self, *args: str, timeout: float = 30.0) -> str:
        """Run `radosgw-admin ARGS` against this cluster and return its stdout."""
        return self._run(["radosgw-admin", "-c", str(self.conf_path), *args], timeout)

    def pids(self) -> dict[str, int]:
        """Process ids of the running daemons (for RSS measurements and the like)."""
        found = {"mon": self._mon, "osd": self._osd, "rgw": self._rgw}
        return {name: p.pid for name, p in found.items() if p is not None and p.running()}

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- start-up steps ---------------------------------------------------------------------

    def _prepare(self) -> None:
        """Fresh directories, ceph.conf and the monitor's store."""
        for sub in ("mon", "osd", "rgw", "run", "crash", "log"):
            path = self.workdir / sub
            if path.exists():
                shutil.rmtree(path)
        for sub in ("mon/a", "osd/0", "rgw", "run", "crash", "log"):
            (self.workdir / sub).mkdir(parents=True)
        self.mon_port = free_port(HOST)
        self.port = free_port(HOST)
        self.conf_path.write_text(self._conf_text())
        monmap = self.workdir / "monmap"
        self._run(
            ["monmaptool", "--create", "--clobber", "--fsid", self.fsid, "--addv", "a", f"[v2:{HOST}:{self.mon_port}]", str(monmap)],
            30,
        )
        conf = ["-c", str(self.conf_path)]
        self._run(["ceph-mon", *conf, "--mkfs", "-i", "a", "--monmap", str(monmap)], 60)

    def _start_mon(self, deadline: float) -> None:
        self._mon = self._daemon("mon", ["ceph-mon", "-c", str(self.conf_path), "-d", "-i", "a"])
        self._mon.wait_for_port(HOST, self.mon_port, timeout=_left(deadline))

    def _start_osd(self, deadline: float) -> None:
        """Make osd.0's store, register it and start it (radosgw waits for it to come up).

        `ceph-osd --mkfs` asks the monitor for the cluster maps, so it runs after the monitor.
        """
        conf = ["-c", str(self.conf_path)]
        mkfs = ["ceph-osd", *conf, "--mkfs", "-i", "0", "--osd-uuid", self.osd_uuid]
        self._run(mkfs, _left(deadline))
        self._ceph(["osd", "new", self.osd_uuid, "0"], timeout=_left(deadline))
        self._osd = self._daemon("osd", ["ceph-osd", "-c", str(self.conf_path), "-d", "-i", "0"])

    def _launch_rgw(self) -> None:
        argv = ["radosgw", "-c", str(self.conf_path), "-d", "-n", "client.rgw"]
        self._rgw = self._daemon("rgw", argv, stop_timeout=15.0)

    def _create_user(self, deadline: float) -> None:
        """Create the S3 test user (radosgw-admin talks to RADOS, not to the gateway)."""
        argv = [
            "radosgw-admin",
            "-c",
            str(self.conf_path),
            "user",
            "create",
            "--uid",
            self.user_id,
            "--display-name",
            "facepipe test user",
            "--access-key",
            self.access_key,
            "--secret-key",
            self.secret_key,
        ]
        self._run(argv, _left(deadline), watch=("mon", "osd", "rgw"))

    def _wait_osd_up(self, deadline: float) -> None:
        """Poll the OSD map until osd.0 is up (the OSD needs ~0.3 s)."""
        while True:
            self._check_alive("mon", "osd")
            out = self._ceph(["osd", "dump", "--format", "json"], timeout=_left(deadline))
            osds = json.loads(out).get("osds", [])
            if any(o.get("osd") == 0 and o.get("up") == 1 for o in osds):
                return
            if time.monotonic() > deadline:
                raise TimeoutError("osd.0 did not come up")
            time.sleep(0.1)

    def _wait_rgw(self, deadline: float) -> None:
        """Poll with boto3 list_buckets until the gateway answers as the test user."""
        from botocore.config import Config

        s3 = self.client(
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                connect_timeout=1,
                read_timeout=5,
            )
        )
        last: Exception | None = None
        while time.monotonic() < deadline:
            self._check_alive("mon", "osd", "rgw")
            if port_open(HOST, self.port):
                try:
                    s3.list_buckets()
                    return
                except Exception as exc:
                    last = exc
            time.sleep(0.05)
        raise TimeoutError(f"radosgw did not serve S3 on {self.endpoint_url} in time: {last}")

    # -- helpers ----------------------------------------------------------------------------

    def _conf_text(self) -> str:
        w = self.workdir
        settings: dict[str, str] = {
            "fsid": self.fsid,
            "mon_host": f"[v2:{HOST}:{self.mon_port}]",
            "public_addr": HOST,
            "cluster_addr": HOST,
            "ms_bind_ipv6": "false",
            "ms_bind_msgr1": "false",
            # Auth none: "secure" connection modes need cephx session keys, so use crc everywhere
            # (radosgw otherwise fails with "get_initial_auth_request returned -13").
            "auth_cluster_required": "none",
            "auth_service_required": "none",
            "auth_client_required": "none",
            "ms_mon_client_mode": "crc",
            "ms_mon_cluster_mode": "crc",
            "ms_mon_service_mode": "crc",
            "ms_client_mode": "crc",
            "ms_cluster_mode": "crc",
            "ms_service_mode": "crc",
            # Every path under the work directory: nothing in /etc/ceph or /var/lib/ceph.
            "keyring": str(w / "keyring"),
            "run_dir": str(w / "run"),
            # No admin sockets: unused here, and pytest's long tmp paths overflow sun_path.
            "admin_socket": "",
            "pid_file": "",
            "log_file": "",
            "log_to_stderr": "true",
            "err_to_stderr": "true",
            "crash_dir": str(w / "crash"),
            "mon_data": str(w / "mon" / "$id"),
            "osd_data": str(w / "osd" / "$id"),
            "rgw_data": str(w / "rgw"),
            # One OSD, one copy.
            "osd_pool_default_size": "1",
            "osd_pool_default_min_size": "1",
            "mon_allow_pool_size_one": "true",
            "mon_warn_on_pool_no_redundancy": "false",
            "osd_pool_default_pg_num": "8",
            "osd_pool_default_pgp_num": "8",
            "osd_pool_default_pg_autoscale_mode": "off",
            "mon_max_pg_per_osd": "1000",
            "osd_crush_chooseleaf_type": "0",
            # The monitor batches map changes for paxos_propose_interval (1 s): every pool that
            # radosgw creates costs two of them. Commit at once instead (cold start ~12 s -> ~1 s).
            "paxos_propose_interval": "0.01",
            "paxos_min_wait": "0.01",
            # A client whose op waits for a newer OSD map asks again only on its objecter tick
            # (5 s): radosgw's start-up sometimes stalled that long. Ask sooner.
            "objecter_tick_interval": "0.5",
            # A nearly full CI disk must not stop the monitor (default: shut down below 5% free).
            "mon_data_avail_crit": "0",
            "mon_data_avail_warn": "0",
            "osd_objectstore": "memstore",
            "memstore_device_bytes": str(4 << 30),
            "rgw_frontends": f"beast endpoint={HOST}:{self.port} tcp_nodelay=1",
        }
        settings.update(self.conf_overrides)
        return "[global]\n" + "".join(f"{key} = {value}\n" for key, value in settings.items())

    def _daemon(self, name: str, argv: Sequence[str], stop_timeout: float = 10.0) -> ChildProcess:
        log_path = self.log_dir / f"{name}.log"
        proc = ChildProcess(name, argv, log_path, env=_ceph_env(), cwd=self.workdir, stop_timeout=stop_timeout)
        return proc.start()

    def _ceph(self, args: Sequence[str], timeout: float) -> str:
        conf = ["-c", str(self.conf_path), "--connect-timeout", str(int(max(1, timeout)))]
        return self._run(["ceph", *conf, *args], timeout)

    def _run(self, argv: Sequence[str], timeout: float, watch: Sequence[str] = ("mon", "osd")) -> str:
        """Run a one-shot tool; raise with its output if it fails, times out or a daemon dies."""
        log.debug("run %s", " ".join(argv))
        command = " ".join(argv)
        deadline = time.monotonic() + timeout
        proc = subprocess.Popen(
            list(argv),
            cwd=self.workdir,
            env=_ceph_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            while True:
                try:
                    stdout, stderr = proc.communicate(timeout=0.1)
                    break
                except subprocess.TimeoutExpired:
                    # A dead daemon can make the tool wait forever (or for a 30 s watch timeout).
                    self._check_alive(*watch)
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{command} timed out after {timeout:.0f}s") from None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        if proc.returncode != 0:
            output = (stdout + stderr).strip().splitlines()[-20:]
            raise RuntimeError(f"{command} exited {proc.returncode}:\n" + "\n".join(output))
        return stdout

    def _check_alive(self, *names: str) -> None:
        procs = {"mon": self._mon, "osd": self._osd, "rgw": self._rgw}
        for name in names:
            proc = procs[name]
            if proc is not None and not proc.running():
                raise RuntimeError(f"{name} exited early (code {proc.returncode()})")

    def _log_tails(self, lines: int = 25) -> str:
        parts = []
        for proc in (self._mon, self._osd, self._rgw):
            if proc is not None:
                # `-d` output has a blank line after every entry.
                text = [line for line in proc.log_tail(3 * lines).splitlines() if line.strip()]
                parts.append(f"--- {proc.name} ({proc.log_path}) ---\n" + "\n".join(text[-lines:]))
        return "\n".join(parts)

    def _stop_all(self) -> None:
        """Stop in reverse order of start; every daemon is reaped even if another stop fails."""
        errors: list[BaseException] = []
        for attr in ("_rgw", "_osd", "_mon"):
            proc: ChildProcess | None = getattr(self, attr)
            setattr(self, attr, None)
            if proc is not None:
                try:
                    proc.stop()
                except BaseException as exc:
                    errors.append(exc)
        if errors:
            raise errors[0]
