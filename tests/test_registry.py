"""A third-party format plugs in through the ``metaextract.extractors`` entry point group."""

from __future__ import annotations

import sys
import textwrap

import pytest

from tests.catalog_helpers import files_by_name, read_table, run_catalog
from transforms import formats

PLUGIN = textwrap.dedent(
    '''
    import pyarrow as pa
    from transforms.formats.base import Extractor

    SCHEMA = pa.schema([("path", pa.string()), ("greeting", pa.string())])

    def extract(source, out):
        with source.open() as f:
            text = f.read(64).decode()
        out.format_version = "TOY1"
        out.metadata = {"text": text}
        out.add_row("toy", {"greeting": text[4:].strip()})

    EXTRACTOR = Extractor(format="toy", extract=extract, tables={"toy": SCHEMA},
                          sniff=lambda head: head.startswith(b"TOY1"))
    '''
)


def install_plugin(tmp_path, monkeypatch, package: str, source: str, entry: str):
    """Install ``package`` (one module of ``source``) with the metaextract entry point ``entry``
    on sys.path for one test (the extraction process inherits sys.path), then remove it."""
    site = tmp_path / "site"
    (site / package).mkdir(parents=True)
    (site / package / "__init__.py").write_text(source)
    dist = site / f"{package}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package.replace('_', '-')}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[metaextract.extractors]\n{entry} = {package}:EXTRACTOR\n")
    monkeypatch.syspath_prepend(str(site))
    formats.registry.cache_clear()
    yield
    formats.registry.cache_clear()
    sys.modules.pop(package, None)


@pytest.fixture
def toy_plugin(tmp_path, monkeypatch):
    yield from install_plugin(tmp_path, monkeypatch, "toy_format", PLUGIN, "toy")


def test_builtins_are_registered():
    assert {"dicom", "fits", "hdf5", "netcdf"} <= set(formats.registry())


def test_builtin_tables_are_the_extractors_own():
    for name, tables in formats.BUILTIN_TABLES.items():
        assert dict(tables) == dict(formats.registry()[name].tables)


def test_a_format_library_loads_only_when_its_format_is_used():
    """The Beam process knows every table without pydicom, astropy, h5py or netCDF4; the
    extraction process reading only HDF5 loads h5py, and never pyarrow."""
    import subprocess

    script = textwrap.dedent(
        """
        import sys
        from pipelines.catalog import catalog_tables
        assert {"dicom", "fits", "hdf5", "netcdf"} <= set(catalog_tables())
        heavy = ("pydicom", "astropy", "h5py", "netCDF4")
        assert not [m for m in heavy if m in sys.modules], sys.modules.keys()
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    script = textwrap.dedent(
        """
        import sys
        from transforms import child
        from transforms.formats import registry
        child.start({})
        registry()["hdf5"]
        assert "h5py" in sys.modules
        assert not [m for m in ("pydicom", "astropy", "pyarrow") if m in sys.modules]
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def test_plugin_extends_detection_extraction_and_tables(toy_plugin, tmp_path):
    assert "toy" in formats.registry()
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "hello.bin").write_bytes(b"TOY1 hello world\n")
    (corpus / "other.bin").write_bytes(b"nothing to see")
    out = tmp_path / "out"
    run_catalog([corpus], out)
    rows = files_by_name(out)
    assert (rows["hello.bin"]["format"], rows["hello.bin"]["status"], rows["hello.bin"]["format_version"]) == (
        "toy", "ok", "TOY1",
    )
    assert rows["other.bin"]["status"] == "unsupported"
    assert read_table(out, "toy").to_pylist() == [{"path": str(corpus / "hello.bin"), "greeting": "hello world"}]


HOSTILE_PLUGIN = textwrap.dedent(
    '''
    import ctypes
    import pyarrow as pa
    from transforms.formats.base import Extractor

    def sniff(head):
        if head.startswith(b"HANG"):
            ctypes.CDLL(None).sleep(1000)  # a hang inside C code, as a broken parser's
        if head.startswith(b"CRSH"):
            ctypes.string_at(0)  # segfault
        return head.startswith(b"NICE")

    def extract(source, out):
        out.format_version = "NICE1"

    EXTRACTOR = Extractor(format="nice", extract=extract, tables={}, sniff=sniff)
    '''
)


@pytest.fixture
def hostile_plugin(tmp_path, monkeypatch):
    yield from install_plugin(tmp_path, monkeypatch, "hostile_format", HOSTILE_PLUGIN, "nice")


def test_detection_that_hangs_or_crashes_costs_one_row(hostile_plugin, tmp_path):
    """Detection runs in the extraction process too: a sniffer that hangs in C or segfaults
    becomes an error row, and the run goes on."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "hang.bin").write_bytes(b"HANG forever")
    (corpus / "crash.bin").write_bytes(b"CRSH now")
    (corpus / "nice.bin").write_bytes(b"NICE file")
    out = tmp_path / "out"
    run_catalog([corpus], out, "--file_timeout_s", "2", "--checksum", "none")
    rows = files_by_name(out)
    assert rows["hang.bin"]["status"] == "error" and rows["hang.bin"]["error"].startswith("TimeoutError")
    assert rows["hang.bin"]["format"] == "unknown"  # detection alone timed out as well
    assert rows["crash.bin"]["status"] == "error" and rows["crash.bin"]["error"].startswith("WorkerCrashed")
    assert (rows["nice.bin"]["status"], rows["nice.bin"]["format_version"]) == ("ok", "NICE1")
