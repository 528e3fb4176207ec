"""Shared fixtures: Beam pipelines, a generated mixed corpus, a local S3 server."""

from __future__ import annotations

import os
import shutil
import socket

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline

from pipelines import make_sample_data


@pytest.fixture
def pipeline():
    """An in-process DirectRunner pipeline."""
    return TestPipeline(options=PipelineOptions(["--runner=DirectRunner"]))


@pytest.fixture
def pipeline_parallel():
    """Two worker processes: catches pickling bugs early."""
    return TestPipeline(
        options=PipelineOptions(
            ["--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]
        )
    )


@pytest.fixture(scope="session")
def mixed_corpus(tmp_path_factory):
    """A small corpus with every format, written by the real libraries, plus broken files.

    Layout: dicom/, fits/, hdf5/, netcdf/, other/ (truncated HDF5 + text), plus
    misnamed/ (right bytes, wrong extension) and empty.dat.
    """
    root = tmp_path_factory.mktemp("corpus")
    for name, writer in [
        ("dicom", make_sample_data.write_dicom),
        ("fits", make_sample_data.write_fits),
        ("hdf5", make_sample_data.write_hdf5),
        ("netcdf", make_sample_data.write_netcdf),
        ("other", make_sample_data.write_broken),
    ]:
        folder = root / name
        folder.mkdir()
        writer(str(folder))
    misnamed = root / "misnamed"
    misnamed.mkdir()
    shutil.copy(root / "fits" / "m31_sample.fits", misnamed / "really_fits.h5")
    shutil.copy(root / "dicom" / "ct_chest.dcm", misnamed / "scan.txt")
    (root / "empty.dat").write_bytes(b"")
    (root / "garbage.fits").write_bytes(b"SIMPLE  = " + os.urandom(3000))
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3-compatible server on a free local port, stopped after the session.

    Yields (endpoint_url, storage_options) for s3fs.
    """
    pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    old = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    try:
        yield endpoint, {"client_kwargs": {"endpoint_url": endpoint}, "anon": False}
    finally:
        server.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
