"""A real git repository served over smart HTTP on loopback, for Argo CD to read.

`GitHttpServer` serves the bare repositories under a folder with git's own CGI program,
`git http-backend` (the same program behind most self-hosted git servers' HTTP side), from a
threaded HTTP server on a free loopback port. Clients clone and fetch with the normal git smart
HTTP protocol, v2 included. Pushing over HTTP is off (as for anonymous users of any server):
`Checkout` pushes to the bare repository through its path, and the server then serves that.

`Checkout` is a working copy made from this project's working tree (tracked and untracked files
that .gitignore does not exclude; symlinks stay symlinks, as the charts' committed facepipe-common
link), committed once, with `git`, `commit_all` and `push` for the test's own commits.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

from facepipe_dev.processes import free_port

HOST = "127.0.0.1"
IDENTITY = (("user.name", "facepipe tests"), ("user.email", "tests@facepipe.invalid"))


def git_env() -> dict[str, str]:
    """os.environ without the user's or the system's git configuration (the checkout has its own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    return {**env, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}


def git(*args: str, cwd: Path) -> str:
    """Run git in cwd; raise with its stderr on failure; return stdout."""
    result = subprocess.run(["git", *args], cwd=cwd, env=git_env(), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} (in {cwd}) failed: {result.stderr.strip()}")
    return result.stdout


def _http_backend() -> str:
    exec_path = subprocess.run(["git", "--exec-path"], capture_output=True, text=True, check=True).stdout.strip()
    return str(Path(exec_path) / "git-http-backend")


class _CGIHandler(BaseHTTPRequestHandler):
    """One request through `git http-backend` (RFC 3875 CGI: environment in, headers + body out)."""

    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._run_backend()

    def do_POST(self) -> None:
        self._run_backend()

    def log_message(self, format: str, *args: object) -> None:
        self.server.requests.append(f"{self.command} {self.path} -> {args[1] if len(args) > 1 else '?'}")

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _run_backend(self) -> None:
        path, _, query = self.path.partition("?")
        body = self._body() if self.command == "POST" else b""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.server.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REMOTE_ADDR": self.client_address[0],
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
        }
        for header, variable in (("Git-Protocol", "GIT_PROTOCOL"), ("Content-Encoding", "HTTP_CONTENT_ENCODING")):
            if self.headers.get(header):
                env[variable] = self.headers[header]
        result = subprocess.run([self.server.backend], input=body, env=env, capture_output=True, check=False)
        head, _, payload = result.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = result.stdout.partition(b"\n\n")
        status = 200 if result.returncode == 0 else 500
        headers: list[tuple[str, str]] = []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        if result.returncode != 0 and not headers:
            payload = result.stderr
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], root: Path) -> None:
        super().__init__(address, _CGIHandler)
        self.root = root
        self.backend = _http_backend()
        self.requests: list[str] = []


class GitHttpServer:
    """Bare repositories under `root`, served at http://127.0.0.1:<port>/<name>.git; a context manager."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://{HOST}:{self._server.server_address[1]}"

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    @property
    def requests(self) -> list[str]:
        """Every request served so far ("GET /facepipe.git/info/refs?service=... -> 200")."""
        return self._server.requests if self._server else []

    def create(self, name: str) -> Path:
        """A new empty bare repository `name` (e.g. "facepipe.git") whose default branch is main."""
        path = self.root / name
        path.mkdir(parents=True)
        git("init", "--bare", "--quiet", "--initial-branch=main", cwd=path)
        return path

    def start(self) -> Self:
        self.root.mkdir(parents=True, exist_ok=True)
        self._server = _Server((HOST, free_port(HOST)), self.root)
        self._thread = threading.Thread(target=self._server.serve_forever, name="git-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Checkout:
    """A working copy whose first commit is a snapshot of a source tree, pushing to a bare repository."""

    def __init__(self, path: Path, remote: Path) -> None:
        self.path = path
        self.remote = remote

    @classmethod
    def snapshot(cls, source: Path, path: Path, remote: Path, message: str = "snapshot of the working tree") -> Checkout:
        """Copy source's tracked and not-ignored untracked files into a new repository at path,
        commit them on main and push to remote (a bare repository)."""
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=source,
            capture_output=True,
            check=True,
        ).stdout
        path.mkdir(parents=True)
        for rel in sorted({name for name in listed.decode().split("\0") if name}):
            src = source / rel
            if not (src.is_file() or src.is_symlink()):
                continue  # deleted in the working tree but still in the index
            dest = path / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest, follow_symlinks=False)
        checkout = cls(path, remote)
        checkout.git("init", "--quiet", "--initial-branch=main")
        for key, value in IDENTITY:
            checkout.git("config", key, value)
        checkout.git("remote", "add", "origin", str(remote))
        checkout.commit_all(message)
        checkout.git("push", "--quiet", "--set-upstream", "origin", "main")
        return checkout

    def git(self, *args: str) -> str:
        return git(*args, cwd=self.path)

    def commit_all(self, message: str) -> str:
        """`git add -A && git commit`; returns the new commit's sha."""
        self.git("add", "-A")
        self.git("commit", "--quiet", "-m", message)
        return self.head()

    def push(self, refspec: str = "HEAD:main") -> None:
        self.git("push", "--quiet", "origin", refspec)

    def head(self) -> str:
        return self.git("rev-parse", "HEAD").strip()
