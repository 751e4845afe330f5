"""One verified TLS context per process, shared by every HTTP client the tasks build.

``httpx.Client()`` builds a new ``ssl.SSLContext`` each time and loads the whole CA bundle into
it (tens of milliseconds of CPU). Releases build a client per Prometheus query and per smoke
test, so the product shares one context instead; it is the context httpx would build (certifi's
bundle, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when set) and ``SSLContext`` is thread-safe.
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def verified_context() -> ssl.SSLContext:
    """The process's shared TLS context, built on first use.

    Returns:
        A context that verifies certificates, as ``httpx.Client(verify=True)`` would.
    """
    return httpx.create_ssl_context()
