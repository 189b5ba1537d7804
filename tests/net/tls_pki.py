"""Throwaway test PKI for the DICOM TLS tests: a CA, a server and a client certificate, made with `openssl`.

The `cryptography` package is not a dependency, so the system `openssl` CLI does the work (EC P-256 keys:
fast to generate, and in every BCP 195 suite). Every leaf names 127.0.0.1 and localhost, so it passes a host
name check as a server and serves as a client certificate too.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

LEAF_EXTENSIONS = """basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyAgreement
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
"""


@dataclass(frozen=True)
class Pair:
    """A PEM certificate and its unencrypted PEM private key."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: Pair
    server: Pair
    client: Pair


def _openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    assert exe is not None, "the openssl command-line tool is needed to make test certificates"
    proc = subprocess.run([exe, *args], check=False, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"openssl {' '.join(args)}:\n{proc.stderr}"


def make_ca(directory: Path, name: str = "ca") -> Pair:
    """A self-signed CA certificate ``<name>.pem`` with key ``<name>.key``."""
    directory.mkdir(parents=True, exist_ok=True)
    pair = Pair(directory / f"{name}.pem", directory / f"{name}.key")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(pair.key), "-out", str(pair.cert), "-days", "2",
             "-subj", f"/CN=pacs-cae test {name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    return pair


def make_leaf(directory: Path, ca: Pair, name: str) -> Pair:
    """A certificate ``<name>.pem`` (key ``<name>.key``) signed by ``ca``."""
    pair = Pair(directory / f"{name}.pem", directory / f"{name}.key")
    csr, ext = directory / f"{name}.csr", directory / f"{name}.ext"
    ext.write_text(LEAF_EXTENSIONS)
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(pair.key), "-out", str(csr), "-subj", f"/CN={name}", cwd=directory)
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key), "-set_serial",
             str(secrets.randbits(62) + 1), "-days", "2", "-extfile", str(ext),
             "-out", str(pair.cert), cwd=directory)
    return pair


def make_pki(directory: Path) -> Pki:
    """CA + server + client certificates under ``directory``."""
    ca = make_ca(directory)
    return Pki(ca, make_leaf(directory, ca, "server"), make_leaf(directory, ca, "client"))
