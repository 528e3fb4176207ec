"""The HTML report: payload, command line, size for a large catalog, and a real headless Chromium.

The browser test drives Debian's ``chromium`` with Playwright (``executable_path``; no browser
download) and saves a screenshot of each section under ``test-artifacts/report/``.

    python -m tests.test_report 100000     # measure the report of a synthetic 100,000-file catalog
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import os
import random
import re
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import report
from pipelines.catalog import main as cli_main
from tests.catalog_helpers import run_catalog
from transforms import schemas

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "report"
CHROMIUM = os.environ.get("METAEXTRACT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def synthetic_catalog(out, n: int, seed: int = 0):
    """A catalog of ``n`` made-up files of every format (1% errors), written with the real schemas."""
    rng = random.Random(seed)
    t0 = dt.datetime(2023, 1, 1, tzinfo=dt.timezone.utc)
    files, dicom, fits, hdf5, netcdf = [], [], [], [], []
    modalities = ["CT", "MR", "US", "CR", "PT"]
    scopes = [("HST", "WFC3"), ("HST", "ACS"), ("JWST", "NIRCAM"), ("VLT", "MUSE")]
    stds = ["sea_surface_temperature", "air_temperature", "precipitation_amount", "eastward_wind", "northward_wind"]
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    for i in range(n):
        r = rng.random()
        fmt = "dicom" if r < .4 else "fits" if r < .6 else "netcdf" if r < .8 else "hdf5" if r < .97 else "unknown"
        status = "unsupported" if fmt == "unknown" else ("error" if rng.random() < 0.01 else "ok")
        path = f"/archive/{fmt}/site{i % 37:02d}/batch{i // 1000:04d}/file_{i:06d}.{ {'dicom':'dcm','fits':'fits','netcdf':'nc','hdf5':'h5','unknown':'txt'}[fmt]}"
        size = int(rng.lognormvariate(13, 1.5))
        error = None
        meta = {"n": i}
        if status == "error":
            error = rng.choice(["OSError: truncated file", "InvalidDicomError: no DICM marker", "NetCDFError: header cut short at byte 1200"])
        elif fmt == "dicom":
            study = f"1.2.3.{i // 500}"
            series = f"{study}.{i // 100}"
            mod = modalities[(i // 500) % len(modalities)]
            tags = {"00080060": {"vr": "CS", "Value": [mod]}, "0020000D": {"vr": "UI", "Value": [study]},
                    "0020000E": {"vr": "UI", "Value": [series]}, "00200013": {"vr": "IS", "Value": [i % 100]},
                    "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^J"}]}, "00280010": {"vr": "US", "Value": [512]}}
            meta = {"transfer_syntax": {"name": "Explicit VR Little Endian"}, "element_count": 110}
            dicom.append({"path": path, "sop_instance_uid": f"{series}.{i}", "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
                          "study_instance_uid": study, "series_instance_uid": series, "modality": mod, "patient_id": f"P{i // 500}",
                          "study_date": dt.date(2023, 1 + (i // 500) % 12, 1 + i % 28), "rows": 512, "columns": 512,
                          "number_of_frames": None, "transfer_syntax_uid": "1.2.840.10008.1.2.1", "tags": json.dumps(tags)})
        elif fmt == "fits":
            tel, ins = scopes[i % len(scopes)]
            for h in range(2):
                cards = [{"keyword": "SIMPLE" if h == 0 else "XTENSION", "value": True if h == 0 else "IMAGE", "comment": ""},
                         {"keyword": "TELESCOP", "value": tel, "comment": "telescope"}, {"keyword": "INSTRUME", "value": ins, "comment": ""},
                         {"keyword": "OBJECT", "value": f"NGC{i % 900}", "comment": ""}]
                fits.append({"path": path, "hdu_index": h, "hdu_type": "PRIMARY" if h == 0 else "IMAGE", "extname": None if h == 0 else "SCI",
                             "bitpix": 16, "naxis": 2, "shape": [1024, 1024], "header": json.dumps(cards)})
        elif fmt == "netcdf":
            for j, std in enumerate([stds[i % 5], stds[(i + 1) % 5], "latitude"]):
                netcdf.append({"path": path, "group": "/", "variable": f"v{j}", "dimensions": ["time", "lat"], "shape": [12, 180],
                               "dtype": "float32", "attributes": json.dumps({"units": "K", "standard_name": std}),
                               "units": "K", "standard_name": std, "long_name": None})
        elif fmt == "hdf5":
            for j in range(4):
                hdf5.append({"path": path, "object_path": f"/entry/data{j}", "kind": "dataset" if j else "group", "link_target": None,
                             "shape": [100] if j else None, "dtype": ["float32", "int64", "<u2"][j % 3] if j else None,
                             "chunks": None, "compression": "gzip" if j % 2 else None, "attributes": json.dumps({"units": "counts"})})
        files.append({"path": path, "format": fmt, "format_version": None, "size_bytes": size,
                      "modified": t0 + dt.timedelta(seconds=rng.randrange(3 * 365 * 86400)), "status": status, "error": error,
                      "metadata": json.dumps(meta), "extracted_at": now, "extractor_version": "0.1.0"})
    tables = {"files": (schemas.FILES, files), "dicom": (schemas.DICOM, dicom), "fits": (schemas.FITS, fits),
              "hdf5": (schemas.HDF5, hdf5), "netcdf": (schemas.NETCDF, netcdf)}
    for name, (schema, rows) in tables.items():
        os.makedirs(os.path.join(out, name), exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), os.path.join(out, name, "part-00000.parquet"))
    manifest = {"run_id": "synthetic", "started_at": "2026-01-01T00:00:00+00:00", "finished_at": "2026-01-01T00:03:20+00:00",
                "duration_s": 200.0, "files_total": n, "bytes_total": sum(f["size_bytes"] for f in files),
                "files_per_s": n / 200.0}
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    return out


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalog_with_report(mixed_corpus, tmp_path_factory):
    """The mixed corpus catalogued with ``--report`` (the run writes OUT/report.html)."""
    out = tmp_path_factory.mktemp("report-catalog")
    result = run_catalog([mixed_corpus], out, "--report")
    return out, result


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return synthetic_catalog(str(tmp_path_factory.mktemp("synthetic")), 20_000)


def _page_and_details(html: str) -> tuple[dict, dict]:
    import base64
    import gzip

    blobs = dict(re.findall(r'<script id="([a-z-]+)" type="application/octet-stream">([^<]*)</script>', html))
    unpack = lambda b: json.loads(gzip.decompress(base64.b64decode(b)))  # noqa: E731
    return unpack(blobs["page-data"]), unpack(blobs["details-data"])


# --- the report file -------------------------------------------------------------------------


def test_run_with_report_flag_writes_a_self_contained_file(catalog_with_report, capsys):
    out, result = catalog_with_report
    path = Path(result["report"])
    assert path == out / "report.html" and path.stat().st_size > 100_000
    html = path.read_text(encoding="utf-8")
    # Everything inlined: no external script, style, image or font.
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", html)
    assert "sourceMappingURL" not in html and "@@" not in html.split("<script id=\"page-data\"")[0]
    assert "Chart.js v4.6.1" in html and "Tabulator v6.5.3" in html
    page, details = _page_and_details(html)
    assert page["run"]["files_total"] == result["files_total"]
    assert sum(n for _, _, n, _ in page["status_counts"]) == result["files_total"]
    assert len(page["files"]["n"]) == result["files_total"]
    assert set(page["rollups"]) == {"dicom_series", "dicom_studies", "variables"}
    # Every file's full metadata is there for a small catalog, with its format rows.
    assert len(details) == result["files_total"]
    paths = [page["files"]["dirs"][d] + n for d, n in zip(page["files"]["d"], page["files"]["n"])]
    ct = details[str(paths.index(next(p for p in paths if p.endswith("dicom/ct_chest.dcm"))))]
    assert ct["file"]["metadata"]["transfer_syntax"]["name"] == "Explicit VR Little Endian"
    assert ct["rows"]["dicom"][0]["tags"]["00100010"]["Value"][0]["Alphabetic"] == "Müller^Jürgen"


def test_errors_are_grouped_by_type_with_examples(catalog_with_report):
    out, result = catalog_with_report
    page, _ = _page_and_details((out / "report.html").read_text(encoding="utf-8"))
    errors = sum(by.get("error", 0) for by in result["counts"].values())
    assert sum(g["count"] for g in page["errors"]) == errors > 0
    for group in page["errors"]:
        assert group["examples"] and all(e["message"].startswith(group["type"]) for e in group["examples"])
    assert dict(page["plots"]["error_types"]) == {g["type"]: g["count"] for g in page["errors"]}


def test_report_subcommand_prints_the_path(catalog_with_report, tmp_path, capsys):
    out, _ = catalog_with_report
    target = tmp_path / "elsewhere" / "r.html"
    assert cli_main(["report", str(out), "--html", str(target)]) == 0
    assert capsys.readouterr().out.strip() == str(target)
    assert target.stat().st_size > 100_000


@pytest.mark.parametrize(
    "argv, message",
    [
        (["report"], "required: OUT"),
        (["report", "{missing}"], "is not a metaextract catalog"),
        (["report", "{out}", "--bogus"], "unrecognized arguments: --bogus"),
        (["report", "{out}", "--html"], "expected one argument"),
        (["report", "{out}", "--max_details", "-5"], "must be >= 0"),
        (["report", "{damaged}"], "manifest.json is not valid JSON"),
    ],
)
def test_report_bad_usage_is_one_line_and_exit_2(argv, message, catalog_with_report, tmp_path, capsys):
    out, _ = catalog_with_report
    damaged = tmp_path / "damaged"
    shutil.copytree(out, damaged)
    (damaged / "manifest.json").write_text("{not json")
    argv = [a.format(out=out, missing=tmp_path / "nope", damaged=damaged) for a in argv]
    with pytest.raises(SystemExit) as exc:
        cli_main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("metaextract: error: ") and message in err


def test_report_tolerates_a_minimal_catalog(tmp_path):
    """Only a files table, without manifest or the columns other issues add: still a report."""
    rows = [{"path": "/x/a.bin", "format": "unknown", "format_version": None, "size_bytes": 0, "modified": None,
             "status": "error", "error": "EmptyFileError: empty file", "metadata": "{}",
             "extracted_at": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), "extractor_version": "0.1.0"}]
    schema = pa.schema([f for f in schemas.FILES if f.name in rows[0]]
                       + [pa.field("checksum", pa.binary()), pa.field("mean", pa.float64())])
    rows[0].update(checksum=b"\x01\xff", mean=float("nan"))  # columns some other version may add
    (tmp_path / "files").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp_path / "files" / "part-0.parquet")
    path = report.write_report(str(tmp_path))
    page, details = _page_and_details(Path(path).read_text(encoding="utf-8"))
    assert page["errors"][0]["type"] == "EmptyFileError" and page["rollups"] == {}
    assert page["files"]["changes"] == [None] and list(details) == ["0"]
    assert details["0"]["file"]["checksum"] == "01ff" and details["0"]["file"]["mean"] == "nan"


def test_large_catalog_report_is_small_and_quick(synthetic, tmp_path):
    """20,000 files: the page stays compact (the README quotes the 100,000-file figures)."""
    start = time.perf_counter()
    path = report.write_report(synthetic, str(tmp_path / "big.html"), max_details=2_000)
    elapsed = time.perf_counter() - start
    size = os.path.getsize(path)
    page, details = _page_and_details(Path(path).read_text(encoding="utf-8"))
    assert len(page["files"]["n"]) == 20_000 and len(details) == 2_000
    # Errors come first in the click-through details.
    errors = [i for i, t in enumerate(page["files"]["t"]) if page["files"]["statuses"][t] == "error"]
    assert errors and all(str(i) in details for i in errors)
    assert size < 2_000_000, size  # ~0.7 MB of libraries + ~50 bytes a file
    assert elapsed < 20, elapsed


# --- a real browser --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _open(browser, path):
    """A page with ``path`` loaded; returns (page, problems, load seconds)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("request", lambda r: None if r.url.startswith(("file:", "data:", "blob:")) else problems.append(f"request {r.url}"))
    start = time.perf_counter()
    page.goto(Path(path).as_uri())
    page.wait_for_function("document.body.dataset.ready === 'true'", timeout=30_000)
    return page, problems, time.perf_counter() - start


def _sizes(page) -> list[int]:
    return page.evaluate("metaextractFilesTable.getRows('active').map(r => r.getData().size)")


def test_report_in_headless_chromium(browser, catalog_with_report):
    out, result = catalog_with_report
    page, problems, _ = _open(browser, out / "report.html")
    total = result["files_total"]
    assert page.locator("#files-count").inner_text() == f"{total} files"
    assert page.locator("#fatal").is_hidden()
    assert page.locator("#plot-grid canvas").count() >= 8

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for section in ("run", "plots", "files", "rollups", "errors"):
        page.locator(f"#{section}").screenshot(path=str(ARTIFACTS / f"{section}.png"))

    # Search filters the table.
    page.fill("#files-search", "mr_brain")
    page.wait_for_function("document.getElementById('files-count').textContent.startsWith('1 of')")
    assert page.locator("#files-table .tabulator-row").count() == 1
    assert "mr_brain_implicit.dcm" in page.locator("#files-table .tabulator-row").first.inner_text()
    # A header filter too.
    page.fill("#files-search", "")
    page.wait_for_function(f"document.getElementById('files-count').textContent.startsWith('{total} of')")
    page.locator("#files-table .tabulator-col[tabulator-field=path] input").press_sequentially("/fits/")
    page.wait_for_function("!document.getElementById('files-count').textContent.startsWith('%d of')" % total)
    assert all("/fits/" in t for t in page.locator("#files-table .tabulator-row").all_inner_texts())
    page.locator("#files-table .tabulator-col[tabulator-field=path] input").fill("")
    page.locator("#files-table .tabulator-col[tabulator-field=path] input").press("Backspace")
    page.wait_for_function(f"document.getElementById('files-count').textContent.startsWith('{total} of')")

    # Clicking a header sorts, ascending then descending.
    header = page.locator("#files-table .tabulator-col[tabulator-field=size] .tabulator-col-title")
    header.click()
    assert _sizes(page) == sorted(_sizes(page)) and len(_sizes(page)) == total
    header.click()
    assert _sizes(page) == sorted(_sizes(page), reverse=True)
    first = page.locator("#files-table .tabulator-row").first.inner_text()
    assert str(max(_sizes(page)) // 1024) in first.replace(",", "")  # the biggest file is on top

    # Clicking a row opens that file's full metadata.
    page.fill("#files-search", "ct_chest")
    page.wait_for_function("document.getElementById('files-count').textContent.startsWith('1 of')")
    page.locator("#files-table .tabulator-row").first.click()
    page.wait_for_function("document.getElementById('details-body').textContent.includes('transfer_syntax')")
    details = page.locator("#details-body").inner_text()
    assert "Müller^Jürgen" in details and '"dicom"' in details
    assert page.locator("#details-title").inner_text().endswith("ct_chest.dcm")
    page.locator("#files").screenshot(path=str(ARTIFACTS / "file-details.png"))
    assert problems == []


def test_large_report_stays_fast_in_chromium(browser, synthetic, tmp_path):
    path = report.write_report(synthetic, str(tmp_path / "big.html"), max_details=2_000)
    page, problems, load = _open(browser, path)
    assert page.locator("#files-count").inner_text() == "20,000 files"
    start = time.perf_counter()
    page.fill("#files-search", "batch0007")
    page.wait_for_function("document.getElementById('files-count').textContent.startsWith('1,000 of')")
    search = time.perf_counter() - start
    start = time.perf_counter()
    page.locator("#files-table .tabulator-col[tabulator-field=size] .tabulator-col-title").click()
    sizes = _sizes(page)
    sort = time.perf_counter() - start
    assert sizes == sorted(sizes) and len(sizes) == 1_000
    page.locator("#files-table .tabulator-row").first.click()
    page.wait_for_function("document.getElementById('details-body').textContent.length > 100")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "large-catalog.png"))
    assert problems == []
    assert load < 15 and search < 5 and sort < 5, (load, search, sort)


# --- measurement ---------------------------------------------------------------------------


def measure(n: int) -> dict:
    """Build the report of a synthetic ``n``-file catalog; its size and timings (and in Chromium)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        synthetic_catalog(os.path.join(tmp, "cat"), n)
        start = time.perf_counter()
        path = report.write_report(os.path.join(tmp, "cat"), os.path.join(tmp, "report.html"))
        result = {"files": n, "build_s": round(time.perf_counter() - start, 2), "html_bytes": os.path.getsize(path)}
        page, details = _page_and_details(Path(path).read_text(encoding="utf-8"))
        result["details_embedded"] = len(details)
        if os.path.exists(CHROMIUM):
            from playwright.sync_api import sync_playwright

            with sync_playwright() as p:
                b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page, problems, load = _open(b, path)
                start = time.perf_counter()
                page.fill("#files-search", "batch0007")
                page.wait_for_function("!document.getElementById('files-count').textContent.endsWith(' files') || "
                                       "document.getElementById('files-count').textContent.includes(' of ')")
                result.update(load_s=round(load, 2), search_s=round(time.perf_counter() - start, 2))
                page.fill("#files-search", "")
                page.wait_for_function(f"document.getElementById('files-count').textContent.startsWith('{n:,} of')")
                start = time.perf_counter()
                page.locator("#files-table .tabulator-col[tabulator-field=size] .tabulator-col-title").click()
                sizes = _sizes(page)
                result.update(sort_s=round(time.perf_counter() - start, 2), sorted=sizes == sorted(sizes))
                start = time.perf_counter()
                page.locator("#files-table .tabulator-row").first.click()
                page.wait_for_function("document.getElementById('details-body').textContent.length > 100")
                result.update(first_click_s=round(time.perf_counter() - start, 2), problems=problems)
                b.close()
    return result


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)))
