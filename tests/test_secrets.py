"""Secrets never reach logs, error strings, the manifest or the catalog (issue 5)."""

from __future__ import annotations

import base64
import functools
import http.server
import io
import json
import logging
import os
import shutil
import threading

import pytest

from transforms.detect import detect
from transforms.formats.base import FileInfo
from transforms.listing import InputError, list_inputs
from transforms.redact import MASK, printable, redact_options, redact_text, redact_url, secret_values

ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
PASSWORD = "hunter2-PASSWORD-xyz"
SIGNATURE = "f00dfeed0123456789SIGNATURE"
SECRETS = (ACCESS_KEY, SECRET_KEY, PASSWORD, SIGNATURE)
SAMPLE_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pipelines", "sample_data")


# --- the functions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("https://bob:pw@host/x.fits", "https://***@host/x.fits"),
        ("ftp://bob@host/x", "ftp://***@host/x"),
        (
            f"https://b.s3.amazonaws.com/k.nc?X-Amz-Credential={ACCESS_KEY}%2F20240101&X-Amz-Date=20240101"
            f"&X-Amz-Signature={SIGNATURE}",
            "https://b.s3.amazonaws.com/k.nc?X-Amz-Credential=***&X-Amz-Date=20240101&X-Amz-Signature=***",
        ),
        ("https://a.blob.core.windows.net/c/x.h5?sv=2022&sig=abc%2Bdef&se=2030", "https://a.blob.core.windows.net/c/x.h5?sv=2022&sig=***&se=2030"),
        ("gs://bucket/x?token=abc&alt=media", "gs://bucket/x?token=***&alt=media"),
        ("/data/plain/path.fits", "/data/plain/path.fits"),
    ],
)
def test_redact_url(text, expected):
    assert redact_url(text) == expected


def test_redact_text_masks_credentials_in_free_text():
    message = (
        f"ClientResponseError: 403, url=URL('https://bob:{PASSWORD}@h/x?sig={SIGNATURE}'), "
        f"key {ACCESS_KEY}, headers Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload, secret {SECRET_KEY}"
    )
    redacted = redact_text(message, [SECRET_KEY])
    assert not any(secret in redacted for secret in SECRETS)
    assert redacted.startswith("ClientResponseError: 403, url=URL('https://***@h/x?sig=***')")
    assert "Bearer ***" in redacted and redacted.count(MASK) == 5


def test_redact_text_ignores_short_explicit_values_and_makes_text_utf8():
    assert redact_text("a b c", ["b"]) == "a b c"  # too short to mask safely
    text = redact_text("No such file: '/d/" + os.fsdecode(b"caf\xe9") + "'")
    assert text == "No such file: '/d/caf\\xe9'" and text.encode("utf-8")
    assert printable("\ud800x") == "\\ud800x"


def test_secret_values_finds_nested_secrets_only():
    options = {
        "key": ACCESS_KEY,
        "secret": SECRET_KEY,
        "anon": False,
        "client_kwargs": {"endpoint_url": "http://minio:9000", "aws_session_token": "tok-123456"},
        "connection_string": "AccountName=a;AccountKey=zzz",
        "credentials": {"client_email": "x@y", "private_key": "-----BEGIN"},
    }
    assert sorted(secret_values(options)) == sorted(
        [ACCESS_KEY, SECRET_KEY, "tok-123456", "AccountName=a;AccountKey=zzz", "x@y", "-----BEGIN"]
    )


def test_redact_options():
    options = {
        "storage_options": {"key": ACCESS_KEY, "anon": True},
        "input": [f"https://bob:{PASSWORD}@h/x", "/data"],
        "dataflow_kms_key": "projects/p/keys/k",
        "runner": "DirectRunner",
    }
    assert redact_options(options) == {
        "storage_options": {"key": MASK, "anon": MASK},
        "input": ["https://***@h/x", "/data"],
        "dataflow_kms_key": MASK,
        "runner": "DirectRunner",
    }


# --- end to end: a password-protected HTTP server -----------------------------------------------


class _AuthHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder to ``bob:PASSWORD`` only."""

    expected = "Basic " + base64.b64encode(f"bob:{PASSWORD}".encode()).decode()

    def _allowed(self) -> bool:
        if self.headers.get("Authorization") == self.expected:
            return True
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="test"')
        self.send_header("Content-Length", "0")
        self.end_headers()
        return False

    def do_GET(self):
        if self._allowed():
            super().do_GET()

    def do_HEAD(self):
        if self._allowed():
            super().do_HEAD()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_folder(tmp_path):
    """(folder served, base URL with credentials)."""
    pytest.importorskip("aiohttp")
    folder = tmp_path / "served"
    folder.mkdir()
    shutil.copy(os.path.join(SAMPLE_DATA, "dicom", "ct_chest.dcm"), folder / "ct.dcm")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_AuthHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://bob:{PASSWORD}@127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def everything_written(folder) -> bytes:
    chunks = []
    for root, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                chunks.append(f.read())
    return b"\n".join(chunks)


def assert_no_secret(data: str | bytes, where: str):
    for secret in SECRETS:
        needle = secret.encode() if isinstance(data, bytes) else secret
        assert needle not in data, f"{secret!r} leaked into {where}"


def test_url_credentials_reach_the_server_but_not_the_listing(http_folder):
    _, base = http_folder
    url = f"{base}/ct.dcm?X-Amz-Signature={SIGNATURE}"
    (info,) = list_inputs([url]).values()
    assert info.path.startswith("http://***@127.0.0.1:") and info.path.endswith("?X-Amz-Signature=***")
    assert info.open_path == url
    assert detect(info).format == "dicom"  # opened with the real credentials


def test_listing_errors_that_echo_a_url_are_redacted(http_folder):
    _, base = http_folder
    wrong = base.replace(PASSWORD, PASSWORD + "-wrong")
    with pytest.raises(InputError) as raised:
        list_inputs([f"{wrong}/ct.dcm"])
    assert_no_secret(str(raised.value), "the input error")


def test_error_rows_that_echo_a_url_are_redacted(http_folder):
    _, base = http_folder
    wrong = base.replace(PASSWORD, PASSWORD + "-wrong")
    info = FileInfo(path="http://***@host/ct.dcm", size=10, open_path=f"{wrong}/ct.dcm?sig={SIGNATURE}")
    detected = detect(info)
    assert detected.error and detected.format == "unknown"
    assert_no_secret(detected.error, "the error row")


def test_no_secret_in_logs_stdout_stderr_manifest_or_parquet(http_folder, tmp_path, caplog):
    from pipelines.catalog import run

    _, base = http_folder
    out = tmp_path / "out"
    stdout, stderr = io.StringIO(), io.StringIO()
    storage = {"headers": {"X-Api-Key": SECRET_KEY}}  # sent by HTTP, ignored by the local file system
    caplog.set_level(logging.DEBUG)  # fsspec's HTTP logger writes each URL at DEBUG
    manifest = run(
        ["--input", f"{base}/ct.dcm?X-Amz-Credential={ACCESS_KEY}&X-Amz-Signature={SIGNATURE}", "--input", os.path.join(SAMPLE_DATA, "fits"),
         "--output", str(out), "--progress", "off", "--storage_options", json.dumps(storage)],
        stdout=stdout,
        stderr=stderr,
    )
    assert manifest["files_total"] == 2
    assert manifest["options"]["storage_options"] == {"headers": MASK}
    assert_no_secret(json.dumps(manifest), "the manifest")
    assert_no_secret(everything_written(out), "the output folder")
    assert_no_secret(stdout.getvalue() + stderr.getvalue(), "stdout/stderr")
    assert_no_secret(caplog.text, "the logs")


def test_files_behind_credential_urls_are_read(http_folder, tmp_path):
    import pyarrow.parquet as pq

    from pipelines.catalog import run

    _, base = http_folder
    run(["--input", f"{base}/ct.dcm", "--output", str(tmp_path / "out"), "--progress", "off"])
    (row,) = pq.read_table(tmp_path / "out" / "files").to_pylist()
    assert (row["status"], row["path"].startswith("http://***@")) == ("ok", True)


def test_log_records_are_redacted(caplog):
    from transforms.redact import install_log_redaction

    install_log_redaction([SECRET_KEY])
    try:
        logging.getLogger("fsspec.http").warning("GET %s", f"https://bob:{PASSWORD}@h/x?sig={SIGNATURE}")
        try:
            raise OSError(f"refused for {SECRET_KEY}")
        except OSError:
            logging.getLogger("some.lib").exception("failed")
    finally:
        install_log_redaction()
    assert "GET https://***@h/x?sig=***" in caplog.text and "refused for ***" in caplog.text
    assert_no_secret(caplog.text, "the logs")


def test_local_worker_processes_neither_receive_nor_log_metaextract_options(tmp_path):
    """--direct_running_mode=multi_processing: Beam's worker processes logged the options they
    did not know ("Discarding unparseable args: [... --storage_options={...secret...}]") on
    this command's stderr. They get Beam's options only, and log at ERROR."""
    import subprocess
    import sys

    secret = "TOPSECRET" + "4711xyz"
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.catalog", "--output", str(tmp_path / "out"), "--progress", "off",
         "--storage_options", json.dumps({"password": secret}),
         "--direct_running_mode=multi_processing", "--direct_num_workers=2"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert secret not in result.stderr and secret not in result.stdout
    assert "unparseable" not in result.stderr and "INFO:apache_beam" not in result.stderr, result.stderr
