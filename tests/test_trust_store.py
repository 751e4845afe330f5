"""The suite's one-certificate trust store reaches this process and Prefect's client settings."""

from __future__ import annotations

import os
import ssl
from pathlib import Path


def test_the_suite_trusts_one_certificate_of_its_own():
    from prefect.settings import PREFECT_API_SSL_CERT_FILE

    path = Path(os.environ["SSL_CERT_FILE"])
    assert path.read_text().count("BEGIN CERTIFICATE") == 1
    assert PREFECT_API_SSL_CERT_FILE.value() == str(path)
    context = ssl.create_default_context()  # OpenSSL reads SSL_CERT_FILE
    assert len(context.get_ca_certs()) == 1
