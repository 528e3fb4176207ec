"""The same catalog from every runner, on a copy of the mixed corpus.

Each runner makes two runs into one output: a full first run, then an incremental re-run after
one file was added, one changed and one deleted (the first catalog is the cache). Each
non-default runner runs the real command line (``python -m pipelines.catalog``) in a subprocess
with a bounded timeout. After each run the rows written in every table are counted (Parquet
against the manifest) and compared, row by row, with the in-process DirectRunner's, ignoring the
columns that hold the time of a run; paths are compared relative to the corpus. The services a runner needs (Beam's local job
service and an external worker pool; a dask.distributed LocalCluster) are started by the test and
stopped by it, and only they.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.catalog_helpers import read_table, run_catalog

REPO = pathlib.Path(__file__).resolve().parent.parent
RUN_TIMEOUT_S = 150  # one pipeline run on a non-default runner
SERVICE_START_TIMEOUT_S = 60
#: Columns that hold the time of the run, not something read from the files.
RUN_TIME_COLUMNS = frozenset({"extracted_at", "first_seen", "extract_seconds"})
#: Manifest entries that must be the same on every runner.
MANIFEST_KEYS = ("files_total", "bytes_total", "counts", "bytes", "rows", "changes", "files_extracted")
CHANGED_MTIME = 1_700_000_000  # the same modification time for the changed files on every runner
DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"


# --- helpers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = SERVICE_START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with code {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listening on port {port} after {timeout} s: {proc.args}")


def child_env(**extra: str) -> dict[str, str]:
    """This interpreter's environment, with its own bin/ first on PATH (the worker pool starts
    SDK workers with a bare ``python``) and the repository importable."""
    bin_dir = os.path.dirname(sys.executable)
    return {
        **os.environ,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO),
        **extra,
    }


def start_service(args: list[str], log: pathlib.Path) -> subprocess.Popen:
    """Start a Python module as a service in its own process group (so that stopping it also
    stops the workers it started, and nothing else)."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=child_env(),
            start_new_session=True,
        )


def stop_service(proc: subprocess.Popen, timeout: float = 10) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)


def metaextract(inputs, output, *flags: str, env: dict[str, str] | None = None) -> dict:
    """Run the command line in a subprocess (bounded) and return the manifest it published."""
    argv = [a for i in inputs for a in ("--input", str(i))] + ["--output", str(output), "--progress", "off"]
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.catalog", *argv, *flags],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env=env or child_env(),
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads((pathlib.Path(output) / "manifest.json").read_text())


def make_corpus(mixed_corpus: pathlib.Path, root: pathlib.Path) -> pathlib.Path:
    corpus = root / "corpus"
    shutil.copytree(mixed_corpus, corpus)  # keeps modification times
    return corpus


def change_corpus(corpus: pathlib.Path) -> None:
    """One file added, one changed, one deleted: the same on every runner."""
    added = corpus / "added" / "copy.fits"
    added.parent.mkdir()
    shutil.copyfile(corpus / "fits" / "m31_sample.fits", added)
    changed = corpus / "other" / "notes.txt"
    changed.write_text("a longer text than before, so that the size changes\n")
    for path in (added, changed):
        os.utime(path, (CHANGED_MTIME, CHANGED_MTIME))
    (corpus / "dicom" / "mr_brain_implicit.dcm").unlink()


def canonical(row: dict, corpus: pathlib.Path) -> str:
    text = json.dumps({k: v for k, v in row.items() if k not in RUN_TIME_COLUMNS}, default=str, sort_keys=True)
    return text.replace(str(corpus), "<corpus>")


def snapshot(output, manifest: dict, corpus: pathlib.Path) -> dict[str, list[str]]:
    """Table -> its rows (sorted, run-time columns dropped); row counts checked against the manifest."""
    tables = {}
    for table, expected_rows in manifest["rows"].items():
        rows = read_table(output, table).to_pylist()
        assert len(rows) == expected_rows, f"{table}: manifest says {expected_rows} rows, Parquet has {len(rows)}"
        tables[table] = sorted(canonical(r, corpus) for r in rows)
    leftovers = [p.name for p in pathlib.Path(output).iterdir() if p.name.startswith(".metaextract-staging")]
    assert not leftovers, f"staging left behind: {leftovers}"
    return tables


def assert_same_catalog(expected: tuple[dict, dict], output, manifest: dict, corpus: pathlib.Path) -> None:
    ref_manifest, ref_tables = expected
    tables = snapshot(output, manifest, corpus)
    assert {t: len(r) for t, r in tables.items()} == {t: len(r) for t, r in ref_tables.items()}
    for table, rows in ref_tables.items():
        assert tables[table] == rows, f"table {table} differs from the DirectRunner's"
    for key in MANIFEST_KEYS:
        assert manifest.get(key) == ref_manifest.get(key), key


def same_catalog_twice(reference, mixed_corpus, tmp_path, *flags: str, env=None) -> None:
    """A full run and an incremental re-run on ``flags``' runner, each compared with the reference."""
    corpus = make_corpus(mixed_corpus, tmp_path)
    out = tmp_path / "catalog"
    first = metaextract([corpus], out, *flags, env=env)
    assert_same_catalog(reference["full"], out, first, corpus)
    change_corpus(corpus)
    second = metaextract([corpus], out, *flags, env=env)
    assert_same_catalog(reference["incremental"], out, second, corpus)


def modules_with_tagged_outputs() -> list[str]:
    """Pipeline modules whose ParDos have several outputs (see ``test_dask_runner_on_a_local_cluster``)."""
    found = []
    for folder in ("transforms", "pipelines"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if re.search(r"TaggedOutput\(|\.with_outputs\(", path.read_text(encoding="utf-8")):
                found.append(str(path.relative_to(REPO)))
    return found


# --- the reference: DirectRunner, in process ----------------------------------------------


@pytest.fixture(scope="module")
def reference(mixed_corpus, tmp_path_factory) -> dict[str, tuple[dict, dict]]:
    """The DirectRunner's (in process) catalogs: ``full`` run, then ``incremental`` re-run."""
    root = tmp_path_factory.mktemp("direct")
    corpus = make_corpus(mixed_corpus, root)
    out = root / "catalog"
    first = run_catalog([corpus], out)
    full = first, snapshot(out, first, corpus)
    change_corpus(corpus)
    second = run_catalog([corpus], out)
    return {"full": full, "incremental": (second, snapshot(out, second, corpus))}


def test_direct_runner_in_process(reference, mixed_corpus):
    first, tables = reference["full"]
    on_disk = [p for p in mixed_corpus.rglob("*") if p.is_file()]
    assert first["files_total"] == len(on_disk) == len(tables["files"])
    for table in ("files", "dicom", "fits", "hdf5", "netcdf"):
        assert first["rows"][table] > 0, table  # every table has something to compare
    second, tables = reference["incremental"]
    assert second["changes"] == {"new": 1, "changed": 1, "unchanged": len(on_disk) - 2, "deleted": 1}
    assert second["files_extracted"] == 2


def test_direct_runner_multi_processing(reference, mixed_corpus, tmp_path):
    same_catalog_twice(
        reference, mixed_corpus, tmp_path, "--direct_running_mode=multi_processing", "--direct_num_workers=2"
    )


def test_multi_processing_workers_are_forked_not_started_afresh(mixed_corpus, tmp_path):
    """A local multi_processing run forks its workers from a template of the launcher and its
    extraction processes from the extraction template: no process imports Beam's SDK harness
    or the format libraries afresh, and every process of the run ends with it."""
    import psutil

    argv = ["--input", str(mixed_corpus), "--output", str(tmp_path / "out"), "--progress", "off",
            "--direct_running_mode=multi_processing", "--direct_num_workers=2"]  # fmt: skip
    launcher = psutil.Popen([sys.executable, "-m", "pipelines.catalog", *argv], cwd=REPO, env=child_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    seen: dict[int, tuple[list[str], int]] = {}  # pid -> (command line, parent pid)
    while launcher.poll() is None:
        try:
            for proc in launcher.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    seen.setdefault(proc.pid, (proc.cmdline(), proc.ppid()))
        except psutil.Error:
            pass
        time.sleep(0.02)
    assert launcher.returncode == 0, launcher.stderr.read()[-4000:]
    commands = {pid: " ".join(cmd) for pid, (cmd, _) in seen.items()}
    assert not [c for c in commands.values() if "sdk_worker_main" in c or "_exec_main" in c], commands
    worker_template = [pid for pid, (cmd, ppid) in seen.items() if ppid == launcher.pid and "pipelines.catalog" in " ".join(cmd)]
    assert len(worker_template) == 1, commands
    workers = [pid for pid, (_, ppid) in seen.items() if ppid == worker_template[0]]
    assert len(workers) == 2, commands
    extraction = [pid for pid, (cmd, _) in seen.items() if "_template_main" in " ".join(cmd)]
    assert extraction, commands
    assert not [pid for pid in seen if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["files_total"] == len([p for p in mixed_corpus.rglob("*") if p.is_file()])


def test_a_worker_template_that_cannot_fork_leaves_beam_to_start_its_worker():
    from apache_beam.runners.portability import local_job_service

    from pipelines.forked_workers import forked_workers

    class Gone:
        def spawn(self, env):
            raise OSError("the template ended")

    with forked_workers(Gone()):
        command = f"{sys.executable} -c pass -m apache_beam.runners.worker.sdk_worker_main"
        worker = local_job_service.subprocess.Popen(command, shell=True, env=dict(os.environ))
        assert isinstance(worker, subprocess.Popen)
        assert worker.wait(60) == 0
    assert local_job_service.subprocess is subprocess


# --- PortableRunner: Beam's local job service + an external worker pool ---------------------


@pytest.fixture
def portable_services(tmp_path):
    """Beam's local job service and an external SDK worker pool; yields their ports."""
    job_port, pool_port = free_port(), free_port()
    job_service = start_service(
        ["apache_beam.runners.portability.local_job_service_main", f"--port={job_port}"], tmp_path / "job_service.log"
    )
    try:
        pool = start_service(
            ["apache_beam.runners.worker.worker_pool_main", f"--service_port={pool_port}"], tmp_path / "worker_pool.log"
        )
        try:
            wait_for_port(job_port, job_service)
            wait_for_port(pool_port, pool)
            yield job_port, pool_port
        finally:
            stop_service(pool)
    finally:
        stop_service(job_service)


def test_portable_runner_with_external_worker_pool(reference, mixed_corpus, tmp_path, portable_services):
    job_port, pool_port = portable_services
    same_catalog_twice(
        reference,
        mixed_corpus,
        tmp_path,
        "--runner=PortableRunner",
        f"--job_endpoint=localhost:{job_port}",
        "--environment_type=EXTERNAL",
        f"--environment_config=localhost:{pool_port}",
    )


# --- DaskRunner on a dask.distributed LocalCluster -----------------------------------------


@pytest.fixture
def dask_cluster():
    """A LocalCluster with two worker processes; yields the scheduler's address."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        host="127.0.0.1",
        timeout=SERVICE_START_TIMEOUT_S,
    ) as cluster:
        yield cluster.scheduler_address


_TAGGED = modules_with_tagged_outputs()


@pytest.mark.xfail(
    condition=bool(_TAGGED),
    strict=True,
    reason="Beam 2.77's DaskRunner sends every output of a multi-output ParDo (TaggedOutput / "
    f"with_outputs) to each of its PCollections; used in: {', '.join(_TAGGED)}",
)
def test_dask_runner_on_a_local_cluster(reference, mixed_corpus, tmp_path, dask_cluster):
    # The DaskRunner builds `distributed.Client(**dask options)`; with no --dask_client_address
    # the client connects to dask's configured scheduler (DASK_SCHEDULER_ADDRESS).
    same_catalog_twice(
        reference, mixed_corpus, tmp_path, f"--runner={DASK_RUNNER}", env=child_env(DASK_SCHEDULER_ADDRESS=dask_cluster)
    )


@pytest.mark.xfail(
    condition="dask_runner" not in (REPO / "pipelines" / "options.py").read_text(encoding="utf-8"),
    strict=True,
    reason="pipelines.options.parse_flags registers only the option classes imported by "
    "apache_beam.options.pipeline_options; DaskOptions lives in apache_beam.runners.dask.dask_runner",
)
def test_command_line_accepts_dask_runner_options():
    # A fresh interpreter: whether DaskOptions is registered must not depend on what this
    # process happened to import before.
    code = (
        "from pipelines.options import parse_flags; "
        f"parse_flags(['--runner={DASK_RUNNER}', '--dask_client_address=tcp://127.0.0.1:8786'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, env=child_env(), check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]


# --- Flink and Dataflow: offline checks ----------------------------------------------------


def package_files() -> set[str]:
    """Every file a worker imports or reads: the packages' modules and data, and setup.py."""
    files = {"setup.py"}
    for folder in ("pipelines", "transforms"):
        for path in (REPO / folder).rglob("*"):
            built = path.suffix in (".pyc", ".so", ".pyd")  # compiled here; a worker builds its own
            if path.is_file() and "__pycache__" not in path.parts and not built:
                files.add(str(path.relative_to(REPO)))
    return files


def test_sdist_holds_every_module_a_worker_needs(tmp_path):
    """``--setup_file ./setup.py`` makes Dataflow (and Flink with a Python SDK harness) install
    this sdist on every worker: it must hold every module and data file."""
    import tarfile

    result = subprocess.run(
        [
            sys.executable,
            "setup.py",
            "-q",
            "egg_info",
            "--egg-base",
            str(tmp_path),
            "sdist",
            "--dist-dir",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (archive,) = tmp_path.glob("metaextract-*.tar.gz")
    with tarfile.open(archive) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    expected = package_files()
    assert not expected - names, f"missing from the sdist: {sorted(expected - names)}"
    for required in (
        "pipelines/catalog.py",
        "pipelines/options.py",
        "transforms/sink.py",
        "transforms/formats/__init__.py",
        "transforms/formats/dicom.py",
        "transforms/formats/fits.py",
        "transforms/formats/hdf5.py",
        "transforms/formats/netcdf.py",
        "pipelines/sample_data/fits/m31_sample.fits",
        "transforms/_moments.c",  # the statistics kernel, compiled on the worker
        "PKG-INFO",
    ):
        assert required in names, required
    assert not [n for n in names if n.endswith((".so", ".pyd"))], "a binary built here is in the sdist"


def test_dataflow_options_parse():
    from apache_beam.options.pipeline_options import (
        GoogleCloudOptions,
        SetupOptions,
        StandardOptions,
    )

    from pipelines.options import parse_flags

    opts, options = parse_flags(
        [
            "--input=gs://bucket/archive",
            "--output=gs://bucket/catalog",
            "--runner=DataflowRunner",
            "--project=p",
            "--region=r",
            "--temp_location=gs://b/t",
            "--setup_file=./setup.py",
        ]
    )
    assert options.view_as(StandardOptions).runner == "DataflowRunner"
    gcp = options.view_as(GoogleCloudOptions)
    assert (gcp.project, gcp.region, gcp.temp_location) == ("p", "r", "gs://b/t")
    assert options.view_as(SetupOptions).setup_file == "./setup.py"
    assert opts.input == ["gs://bucket/archive"] and opts.output == "gs://bucket/catalog"


def test_flink_options_parse():
    from apache_beam.options.pipeline_options import (
        FlinkRunnerOptions,
        PortableOptions,
        StandardOptions,
    )

    from pipelines.options import parse_flags

    _, options = parse_flags(
        ["--runner=FlinkRunner", "--flink_master=localhost:8081", "--environment_type=LOOPBACK", "--parallelism=2"]
    )
    assert options.view_as(StandardOptions).runner == "FlinkRunner"
    assert options.view_as(FlinkRunnerOptions).flink_master == "localhost:8081"
    assert options.view_as(FlinkRunnerOptions).parallelism == 2
    assert options.view_as(PortableOptions).environment_type == "LOOPBACK"


def test_dofn_introspection_is_asked_of_beam_once_per_dofn_while_a_run_is_built():
    """pipelines.catalog.memoized_dofn_specs: Beam's get_dofn_specs once per DoFn object (the
    same state and timer specs, a stateful DoFn's too), Beam's own function back afterwards."""
    import apache_beam as beam
    from apache_beam.transforms import userstate
    from apache_beam.coders import VarIntCoder

    from pipelines.catalog import memoized_dofn_specs

    class Stateful(beam.DoFn):
        COUNT = userstate.BagStateSpec("count", VarIntCoder())

        def process(self, element, count=beam.DoFn.StateParam(COUNT)):
            yield element

    beams = userstate.get_dofn_specs
    calls = []

    def counting(dofn):
        calls.append(dofn)
        return beams(dofn)

    userstate.get_dofn_specs = counting
    try:
        plain, stateful = beam.DoFn(), Stateful()
        with memoized_dofn_specs():
            for _ in range(3):
                assert userstate.get_dofn_specs(plain) == (set(), set())
                assert userstate.get_dofn_specs(stateful) == ({Stateful.COUNT}, set())
                assert userstate.is_stateful_dofn(stateful) and not userstate.is_stateful_dofn(plain)
            assert calls == [plain, stateful]
        assert userstate.get_dofn_specs is counting
    finally:
        userstate.get_dofn_specs = beams


def test_every_worker_is_told_to_stop_before_the_runner_waits_for_one():
    """pipelines.catalog.workers_stopped_together: Beam's close_all waits for each worker
    process to exit before it tells the next one; here every worker's control stream is closed
    first, then Beam's close_all runs as before. Beam's function is back afterwards."""
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    from pipelines.catalog import workers_stopped_together

    events = []

    class Connection:
        def __init__(self, name):
            self.name, self.closed = name, False

        def close(self):
            if not self.closed:
                events.append(f"tell {self.name}")
            self.closed = True

    class Handler(worker_handlers.GrpcWorkerHandler):
        def __init__(self, name):
            self.name, self.control_conn = name, Connection(name)

        def __hash__(self):
            return hash(self.name)

        def close(self):
            self.control_conn.close()
            events.append(f"wait {self.name}")

    class InThisProcess:  # like Beam's EmbeddedWorkerHandler: no process to tell, closed once
        def __init__(self, name):
            self.name, self.control_conn = name, Connection(name)

        def close(self):
            events.append(f"close {self.name}")

    manager = worker_handlers.WorkerHandlerManager({}, None)
    manager._cached_handlers["env"] = [Handler("a"), Handler("b")]
    manager._cached_handlers["embedded"] = [InThisProcess("c")]
    beams = worker_handlers.WorkerHandlerManager.close_all
    with workers_stopped_together():
        manager.close_all()
    assert worker_handlers.WorkerHandlerManager.close_all is beams
    assert sorted(events[:2]) == ["tell a", "tell b"]
    assert sorted(events[2:]) == ["close c", "wait a", "wait b"]
    assert manager._cached_handlers == {}


@pytest.mark.parametrize("main_module, registered", [("apache_beam.runners.worker.sdk_worker_main", True), ("pytest", False)])
def test_a_beam_worker_process_skips_the_last_garbage_collection_at_exit(main_module, registered):
    """transforms.extract.quick_exit_of_beam_worker: gc.freeze at exit in a Beam SDK worker
    process only (once however many DoFns call it), not in any other process."""
    script = f"""
import atexit, sys, importlib.machinery
sys.modules["__main__"].__spec__ = importlib.machinery.ModuleSpec({main_module!r}, None)
from transforms.extract import quick_exit_of_beam_worker
before = atexit._ncallbacks()
quick_exit_of_beam_worker(); quick_exit_of_beam_worker()
print(atexit._ncallbacks() - before)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=os.getcwd())
    assert out.stdout.split()[-1] == ("1" if registered else "0")
