"""A TLS-terminating nginx in front of moto on loopback, for clients that speak S3 over TLS only."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

import httpx

from sandbox.k8s.tls import make_certificate
from sandbox.procs import SandboxError, free_port, spawn, stop_pid, wait_until

_CONF = """\
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 512; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/tmp/client_body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name 127.0.0.1 localhost;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        client_max_body_size 0;
        proxy_request_buffering off;
        proxy_buffering off;
        proxy_http_version 1.1;
        proxy_set_header Host $http_host;
        proxy_set_header Connection "";
        proxy_read_timeout 300s;
        proxy_send_timeout 300s;
        location / {{
            proxy_pass http://{upstream};
        }}
    }}
}}
"""


def nginx_path() -> str | None:
    """Find nginx (Debian puts it in /usr/sbin, which a non-root PATH may lack).

    Returns:
        The executable's path, or None when nginx is not installed.
    """
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


@dataclass
class S3TlsFront:
    """A running nginx terminating TLS for an S3 endpoint (moto, or the fault proxy)."""

    url: str
    ca_file: Path
    root: Path
    pid: int
    _removable: bool = field(default=True, repr=False)

    def stop(self) -> None:
        """Stop nginx (by pid, with its worker) and remove its private directory."""
        stop_pid(self.pid)
        if self._removable:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> S3TlsFront:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def write_config(root: Path, upstream: str, port: int) -> tuple[Path, Path]:
    """Write the certificate and nginx's configuration into ``root``.

    Args:
        root: the private directory (pid file, logs and temp paths all go inside).
        upstream: the plain-HTTP S3 endpoint, e.g. ``http://127.0.0.1:5000``.
        port: the loopback port nginx listens on.

    Returns:
        (configuration path, CA file: the self-signed certificate for 127.0.0.1/localhost).
    """
    host = urlsplit(upstream).netloc
    if not host or urlsplit(upstream).scheme != "http":
        raise SandboxError(f"upstream must be http://HOST:PORT, not {upstream!r}")
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    cert, key = make_certificate(root)
    conf = root / "nginx.conf"
    conf.write_text(_CONF.format(dir=root, port=port, cert=cert, key=key, upstream=host))
    return conf, cert


def start_s3_tls(
    upstream: str,
    *,
    root: Path | None = None,
    port: int | None = None,
    timeout: float = 30,
) -> S3TlsFront:
    """Start nginx as a child process, serving HTTPS on loopback and proxying to ``upstream``.

    Requests and responses are streamed (no buffering, no body size limit) and the client's
    Host header is passed on unchanged, so SigV4 signatures stay valid.

    Args:
        upstream: the plain-HTTP S3 endpoint (moto's URL, or the fault proxy's).
        root: the private directory (a fresh temp dir, removed on stop, when None).
        port: the HTTPS port (a free one when None).
        timeout: seconds to wait for nginx to answer.

    Returns:
        The running front: ``url`` (``https://127.0.0.1:PORT``) and ``ca_file``.

    Raises:
        SandboxError: when nginx is missing, fails to start or does not answer in time.
    """
    exe = nginx_path()
    if exe is None:
        raise SandboxError("nginx not found: apt-get install nginx-light (or nginx)")
    removable = root is None
    root = Path(tempfile.mkdtemp(prefix="veza-s3-tls-")) if root is None else root
    port = port or free_port()
    conf, ca_file = write_config(root, upstream, port)
    check = subprocess.run([exe, "-t", "-q", "-c", str(conf), "-p", str(root), "-e",
                            str(root / "error.log")], capture_output=True, text=True, check=False)
    if check.returncode != 0:
        raise SandboxError(f"nginx rejected {conf}: {check.stderr.strip()}")
    proc = spawn([exe, "-c", str(conf), "-p", str(root), "-e", str(root / "error.log")],
                 log_path=root / "nginx.out")
    front = S3TlsFront(url=f"https://127.0.0.1:{port}", ca_file=ca_file, root=root,
                       pid=proc.pid, _removable=removable)
    context = ssl.create_default_context(cafile=str(ca_file))

    def _ready() -> bool:
        if proc.poll() is not None:
            raise SandboxError(f"nginx exited with {proc.returncode}; see {root}/error.log")
        try:
            httpx.get(front.url + "/", verify=context, timeout=2)  # any answer: nginx is up
        except httpx.HTTPError:
            return False
        return True

    try:
        wait_until(_ready, timeout=timeout, what=f"nginx (TLS) on {front.url}")
    except BaseException:
        front.stop()
        raise
    return front
