"""A throwaway local PKI made with the `openssl` CLI: a CA, a server certificate and client certificates.

For `facepipe run --secure-uplink` and the tests; production certificates come from Kubernetes Secrets.

Keys are EC P-256 (fast to make); certificates are valid for two days. The server certificate
names 127.0.0.1 and localhost, so clients connecting to the loopback address verify the host.

    pki = LocalPKI(tmp_path / "pki")          # makes the CA
    server = pki.server()                    # Issued(cert, key) for 127.0.0.1 / localhost
    client = pki.client("edge-a")            # Issued(cert, key) with CN=edge-a, clientAuth
    pki.ca_file                              # what clients and the broker trust
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

DAYS = 2
EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def openssl_available() -> str | None:
    """None when the openssl CLI is on PATH, else what to install."""
    return None if shutil.which("openssl") else "openssl CLI not found: apt-get install openssl"


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key (PEM files)."""

    cert_file: Path
    key_file: Path


class LocalPKI:
    """One CA in `workdir` that issues server and client certificates on demand."""

    def __init__(self, workdir: Path, name: str = "facepipe local CA") -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ca_file = workdir / "ca.crt"
        self.ca_key = workdir / "ca.key"
        _openssl(
            "req", "-x509", *EC_KEY, "-keyout", str(self.ca_key), "-out", str(self.ca_file), "-days", str(DAYS),
            "-subj", f"/O=facepipe/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-addext", "subjectKeyIdentifier=hash",
            cwd=workdir,
        )  # fmt: skip

    def _issue(self, stem: str, common_name: str, extensions: list[str]) -> Issued:
        key, csr, cert, ext = (self.workdir / f"{stem}{suffix}" for suffix in (".key", ".csr", ".crt", ".ext"))
        ext.write_text(
            "\n".join(
                [
                    "basicConstraints=critical,CA:FALSE",
                    "keyUsage=critical,digitalSignature,keyEncipherment",
                    "subjectKeyIdentifier=hash",
                    "authorityKeyIdentifier=keyid,issuer",
                    *extensions,
                ]
            )
            + "\n"
        )
        _openssl("req", "-new", *EC_KEY, "-keyout", str(key), "-out", str(csr), "-subj", f"/O=facepipe/CN={common_name}", cwd=self.workdir)
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.ca_file), "-CAkey", str(self.ca_key), "-CAcreateserial",
            "-out", str(cert), "-days", str(DAYS), "-sha256", "-extfile", str(ext),
            cwd=self.workdir,
        )  # fmt: skip
        return Issued(cert, key)

    def server(self, name: str = "server") -> Issued:
        """A broker certificate for 127.0.0.1 and localhost."""
        return self._issue(name, "localhost", ["extendedKeyUsage=serverAuth", "subjectAltName=IP:127.0.0.1,DNS:localhost"])

    def client(self, user: str) -> Issued:
        """A client certificate with CN=<user> (mutual TLS)."""
        return self._issue(f"client-{user}", user, ["extendedKeyUsage=clientAuth"])
