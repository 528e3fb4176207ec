"""The command line: the default sample run, one-line errors and exit codes."""

from __future__ import annotations

import contextlib

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from pipelines.catalog import SAMPLE_DATA
from tests.catalog_helpers import files_by_name, read_table

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def metaextract(*args, cwd=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "pipelines.catalog", *args],
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": REPO},
    )


def test_no_input_runs_the_bundled_sample_corpus(tmp_path):
    result = metaextract(cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    out = tmp_path / "metaextract-output"
    rows = files_by_name(out)
    assert {r["format"] for r in rows.values()} >= {"dicom", "fits", "hdf5", "netcdf", "unknown"}
    assert any(r["status"] == "error" for r in rows.values())
    # the summary table: per format and status, then totals and the rate
    assert "format" in result.stdout and "status" in result.stdout and "files/s" in result.stdout
    for fmt in ("dicom", "fits", "hdf5", "netcdf"):
        assert fmt in result.stdout


def test_console_script_is_the_same_entry_point():
    from pipelines import catalog, cli

    import importlib.metadata as md

    (ep,) = [e for e in md.entry_points(group="console_scripts") if e.name == "metaextract"]
    assert ep.value == "pipelines.cli:cli"  # catalog.cli, behind a Ctrl-C guard of the imports
    assert catalog.cli and cli.cli


@pytest.mark.parametrize(
    "args, message",
    [
        (["--no_such_flag"], "unrecognized argument: --no_such_flag"),
        (["--input"], "expected one argument"),
        (["--direct_num_workers", "two"], "invalid int value"),
        (["--progress", "loud"], "invalid choice"),
        (["--storage_options", "{not json"], "not valid JSON"),
        (["--input", "/definitely/not/here"], "does not exist or matches no file"),
        (["--input", "nosuchproto://bucket/x"], "cannot list --input"),
        (["--input", ""], "--input must not be empty"),
        (["--runner", "NoSuchRunner"], "Unexpected pipeline runner: NoSuchRunner"),
        (["--direct_num_workers", "-1"], "--direct_num_workers must be >= 0"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(tmp_path, args, message):
    result = metaextract(*args, "--output", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("metaextract: error:") and message in lines[0], lines[0]


def test_unwritable_output_is_exit_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = metaextract("--output", str(blocker / "sub"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "cannot write --output" in result.stderr


def test_beam_options_pass_through(tmp_path):
    result = metaextract("--output", str(tmp_path / "o"), "--runner", "DirectRunner", "--direct_num_workers", "1")
    assert result.returncode == 0, result.stderr


def test_an_empty_output_and_a_runner_that_refuses_its_options_are_exit_2(tmp_path):
    """--output '' (was: the current folder became the catalog); Dataflow without --project,
    --region and --temp_location (was: Beam's traceback when the pipeline was made)."""
    result = metaextract("--output", "")
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == "metaextract: error: --output must not be empty"
    result = metaextract("--output", str(tmp_path / "out"), "--runner", "DataflowRunner")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("metaextract: error:") and "Missing required option: project" in last, last


def test_an_existing_folder_whose_name_has_glob_characters_is_listed_as_it_is(tmp_path):
    """--input '/x/data[1]' where that folder exists: its files (not a glob matching
    '/x/data1')."""
    folder = tmp_path / "data[1]"
    shutil.copytree(SAMPLE_DATA, folder)
    result = metaextract("--input", str(folder), "--output", str(tmp_path / "out"), "--progress", "off")
    assert result.returncode == 0, result.stderr
    files = read_table(tmp_path / "out", "files")
    assert len(files) == sum(1 for p in pathlib.Path(SAMPLE_DATA).rglob("*") if p.is_file())
    assert all(path.startswith(str(folder)) for path in files["path"].to_pylist())


@pytest.mark.skipif(shutil.which("setpriv") is None or os.geteuid() != 0, reason="needs root and setpriv to drop DAC override")
def test_a_read_only_table_folder_in_the_output_is_exit_2(tmp_path):
    """--output writable but its files/ (left by an earlier run) read-only: one line, exit 2,
    before any work (was a traceback at publishing, then on every later run). Run as root
    without CAP_DAC_OVERRIDE, so that the permissions apply."""
    out = tmp_path / "out"
    assert metaextract("--output", str(out), "--progress", "off").returncode == 0
    os.chmod(out / "files", 0o555)
    try:
        result = subprocess.run(
            ["setpriv", "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-m", "pipelines.catalog",
             "--output", str(out), "--progress", "off", "--full"],
            capture_output=True, text=True, cwd=REPO, timeout=300,
        )
    finally:
        os.chmod(out / "files", 0o755)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("metaextract: error: cannot write --output") and "files" in last, result.stderr


SLOW_PLUGIN = """
import os
import time
from transforms.formats.base import Extractor

def extract(source, out):
    open(os.environ["SLOW_PLUGIN_STARTED"], "w").close()
    time.sleep(120)

EXTRACTOR = Extractor(format="slow", extract=extract, tables={}, sniff=lambda head: head.startswith(b"SLOW"))
"""


def _new_session_with_default_sigint():
    import signal

    os.setsid()  # a process group of its own, as a terminal's foreground job
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("mode", [[], ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]],
                         ids=["in_process", "multi_processing"])
def test_ctrl_c_while_files_are_read_is_one_line_and_exit_130(tmp_path, mode):
    """Beam re-raises a KeyboardInterrupt raised in a DoFn as a RuntimeError and logs its
    traceback: the command still says "interrupted" in one line and exits 130 (it was exit 1
    with about 170 lines). A plug-in format whose extraction takes minutes holds the run in
    its extraction stage. Ctrl-C goes to the whole process group, as a terminal sends it: with
    forked worker processes (which ignore it) the launcher ends them (the runner waited for
    them for ever) and no process of the run is left."""
    import signal
    import time

    import psutil

    site = tmp_path / "site"
    (site / "slow_format").mkdir(parents=True)
    (site / "slow_format" / "__init__.py").write_text(SLOW_PLUGIN)
    dist = site / "slow_format-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: slow-format\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[metaextract.extractors]\nslow = slow_format:EXTRACTOR\n")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.slow").write_bytes(b"SLOW file")
    argv = [sys.executable, "-m", "pipelines.catalog", "--input", str(corpus), "--output",
            str(tmp_path / "out"), "--progress", "off", *mode]
    started = tmp_path / "started"
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join([REPO, str(site)]),
                                 "SLOW_PLUGIN_STARTED": str(started)},
                            preexec_fn=_new_session_with_default_sigint)
    try:
        deadline = time.monotonic() + 120
        while not started.exists() and time.monotonic() < deadline:  # the file is in extraction
            time.sleep(0.1)
        assert started.exists()
        run = psutil.Process(proc.pid).children(recursive=True)
        os.killpg(proc.pid, signal.SIGINT)
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=60) == 130, err
        assert err.strip() == "metaextract: interrupted"
        assert not (tmp_path / "out" / "manifest.json").exists()
        psutil.wait_procs(run, timeout=10)
        assert not [p for p in run if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def test_ctrl_c_while_the_command_imports_its_libraries_is_one_line_and_exit_130():
    """The ``metaextract`` command's entry point (``pipelines.cli``) guards the half second of
    imports: Ctrl-C there was Python's traceback of ``import apache_beam`` and exit -2."""
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-c", "from pipelines.cli import cli; cli()", "--input", SAMPLE_DATA],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=_new_session_with_default_sigint)
    time.sleep(0.15)  # the interpreter has started; importing Beam takes longer
    os.killpg(proc.pid, signal.SIGINT)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 130, err
    assert err.strip() == "metaextract: interrupted"


def test_a_remote_runner_that_cannot_start_the_job_is_one_line_and_exit_1(tmp_path, monkeypatch, capsys):
    """Flink's job server jar cannot be downloaded, a job service cannot be reached: one line on
    stderr and exit code 1 (it was Beam's traceback, 182 lines)."""
    import apache_beam as beam

    from pipelines.catalog import main

    def unreachable(self, *args, **kwargs):
        raise RuntimeError("Unable to fetch remote job server jar at https://repo.example/x.jar:\n <urlopen error>")

    monkeypatch.setattr(beam.Pipeline, "run", unreachable)
    code = main(["--input", SAMPLE_DATA, "--output", str(tmp_path / "out"), "--runner", "FlinkRunner",
                 "--flink_master=localhost:1", "--environment_type=LOOPBACK"])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err == ("metaextract: error: the runner could not start the job: RuntimeError: Unable to fetch "
                   "remote job server jar at https://repo.example/x.jar: <urlopen error>")
