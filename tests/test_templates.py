"""templates/: the Flex Template's metadata.json in sync with the command line, its Dockerfile and
launcher, and the scheduling examples (Airflow, Cloud Scheduler, cron, Flink) use flags that parse.

Nothing here talks to a cloud: each check is offline and fast.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import pathlib
import re
import shlex
import sys
import types

import pytest

from pipelines import catalog
from pipelines.options import MetaextractOptions, parse_flags

REPO = pathlib.Path(__file__).resolve().parent.parent
TEMPLATES = REPO / "templates"
METADATA = TEMPLATES / "dataflow" / "metadata.json"

#: Values a parameter's regexes must accept, beyond its default (examples from the docs).
EXAMPLES = {
    "input": ["gs://bucket/archive", "gs://bucket/obs/**/*.fits", "s3://b/k", "/data/archive", "./local dir"],
    "output": ["gs://bucket/catalog", "/data/catalog", "catalog"],
    "previous": ["gs://bucket/catalog-2024-06-01", "/data/old-catalog"],
    "storage_options": ['{"anon": true}', '{"client_kwargs": {"endpoint_url": "http://minio:9000"}}'],
    "bulk_data_threshold": ["0", "1024", "1048576"],
    "max_error_fraction": ["0", "0.05", "1", "1.0", ".5"],
    "chunk_threshold_mb": ["1", "64", "4096"],
    "max_memory_per_worker_mb": ["256", "500", "16000"],
    "unit_threads": ["0", "1", "2", "64"],
    "memory_thresholds": ["0.70,0.85,0.95", "0.5,0.6,0.9", "0.8,0.9,1"],
    "file_timeout_s": ["120", "0.5", "3600"],
    "max_retries": ["0", "3", "10"],
}
#: Values every parameter's regexes must reject.
GARBAGE_FOR_ALL = ["", " ", "\n", "--full", "$(rm -rf /)\n"]
#: More values to reject, per kind of parameter.
GARBAGE = {
    "path": ["gs://", "gs:///no-bucket", "-x"],
    "int": ["-1", "1k", "1.5", "ten"],
    "fraction": ["1.5", "5%", "-0.1", "abc", "2"],
    "json": ["anon=true", "[]", "true"],
    "switch": ["yes", "1", "TRUE "],
    "choice": ["bogus", "ON"],
    "positive_float": ["0", "-1", "abc", "1e999x"],
    "thresholds": ["0.7", "0.7,0.8", "a,b,c", "0.7;0.8;0.9"],
}


def option_actions() -> list[argparse.Action]:
    """metaextract's own options, as the command line defines them."""
    parser = argparse.ArgumentParser(add_help=False)
    MetaextractOptions._add_argparse_args(parser)  # pylint: disable=protected-access
    return [a for a in parser._actions if a.option_strings]  # pylint: disable=protected-access


def name_of(action: argparse.Action) -> str:
    return action.option_strings[0].removeprefix("--")


def kind_of(action: argparse.Action) -> str:
    if action.nargs == 0:
        return "switch"
    if action.choices:
        return "choice"
    type_name = getattr(action.type, "__name__", "")
    if "json" in type_name:
        return "json"
    if "thresholds" in type_name:
        return "thresholds"
    if "positive_float" in type_name:
        return "positive_float"
    if "fraction" in type_name or action.type is float:
        return "fraction"
    if "int" in type_name or action.type is int:
        return "int"
    return "path"


def as_parameter(value) -> str | None:
    """A default as the launcher would receive it."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, tuple):
        return ",".join(f"{v:.2f}" for v in value)
    return str(value)


@pytest.fixture(scope="module")
def metadata() -> dict:
    return json.loads(METADATA.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def parameters(metadata) -> dict[str, dict]:
    return {p["name"]: p for p in metadata["parameters"]}


def matches(parameter: dict, value: str) -> bool:
    return all(re.fullmatch(rx, value) for rx in parameter["regexes"])


# --- metadata.json <-> the command line -----------------------------------------------------


def test_metadata_declares_every_option_and_nothing_else(parameters):
    options = {name_of(a) for a in option_actions()}
    assert options, "no metaextract options found"
    assert sorted(options - set(parameters)) == [], "options missing from templates/dataflow/metadata.json"
    assert sorted(set(parameters) - options) == [], "parameters that metaextract does not know"


@pytest.mark.parametrize("action", option_actions(), ids=name_of)
def test_parameter_has_help_and_regexes_that_fit_the_option(action, parameters):
    parameter = parameters.get(name_of(action))
    if parameter is None:
        pytest.fail(f"--{name_of(action)} is not declared in metadata.json")
    assert parameter.get("label", "").strip()
    assert len(parameter.get("helpText", "").strip()) >= 20
    assert parameter.get("regexes"), "every parameter is validated"
    for rx in parameter["regexes"]:
        re.compile(rx)
        assert rx.startswith("^") and rx.endswith("$"), rx
    assert parameter.get("isOptional", False) == (name_of(action) not in ("input", "output"))
    kind = kind_of(action)
    accepted = list(EXAMPLES.get(name_of(action), []))
    default = as_parameter(action.default)
    if default is not None:
        accepted.append(default)
    if kind == "switch":
        accepted += ["true", "false"]
    if kind == "choice":
        accepted += [str(c) for c in action.choices]
    assert accepted, f"no example value for --{name_of(action)}: add one to EXAMPLES"
    for value in accepted:
        assert matches(parameter, value), f"{name_of(action)} rejects {value!r}"
    for value in GARBAGE_FOR_ALL + GARBAGE[kind]:
        assert not matches(parameter, value), f"{name_of(action)} accepts {value!r}"


def test_values_the_regexes_accept_parse(parameters):
    """Each example, turned into a flag as the launcher does, is accepted by the command line."""
    launcher = load_launcher()
    for action in option_actions():
        name = name_of(action)
        values = EXAMPLES.get(name, []) + (["true", "false"] if action.nargs == 0 else [])
        for value in values:
            argv = launcher.template_argv([f"--{name}={value}"])
            opts, _ = parse_flags(argv)
            assert opts is not None


# --- the launcher and the image -------------------------------------------------------------


def load_launcher():
    spec = importlib.util.spec_from_file_location("metaextract_flex_launcher", TEMPLATES / "dataflow" / "launcher.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launcher_turns_parameters_into_flags_and_does_not_wait(monkeypatch):
    launcher = load_launcher()
    argv = launcher.template_argv(
        ["--input=gs://b/in", "--output=gs://b/out", "--full=true", "--retry_errors=false", "--project=p"],
        image="europe-docker.pkg.dev/p/r/metaextract:1",
    )
    assert argv == [
        "--input=gs://b/in",
        "--output=gs://b/out",
        "--full",
        "--project=p",
        "--runner=DataflowRunner",
        "--sdk_container_image=europe-docker.pkg.dev/p/r/metaextract:1",
    ]
    opts, _ = parse_flags(argv)
    assert opts.full and not opts.retry_errors
    with pytest.raises(SystemExit):
        launcher.template_argv(["--full=maybe"])
    calls = []
    monkeypatch.setattr(catalog, "run", lambda argv, **kw: calls.append((argv, kw)) or {})
    monkeypatch.setenv(launcher.IMAGE_ENV, "img")
    assert launcher.main(["--input=gs://b/in", "--output=gs://b/out"]) == 0
    ((argv, kwargs),) = calls
    assert kwargs == {"wait": False}
    assert "--sdk_container_image=img" in argv and "--runner=DataflowRunner" in argv


@pytest.mark.xfail(
    condition="wait" not in inspect.signature(catalog.run).parameters,
    strict=True,
    reason="pipelines.catalog.run has no wait=False yet (the Flex Template launcher must not wait)",
)
def test_run_can_return_without_waiting(tmp_path):
    result = catalog.run(
        ["--input", str(REPO / "pipelines" / "sample_data"), "--output", str(tmp_path / "out"), "--progress", "off"],
        wait=False,
    )
    assert result["run_id"] and "state" in result


def test_dockerfile_one_image_one_beam_version():
    import apache_beam
    from packaging.specifiers import SpecifierSet

    dockerfile = (TEMPLATES / "dataflow" / "Dockerfile").read_text(encoding="utf-8")
    beam_version = re.search(r"^ARG BEAM_VERSION=(\S+)$", dockerfile, re.MULTILINE).group(1)
    python_version = re.search(r"^ARG PYTHON_VERSION=(\S+)$", dockerfile, re.MULTILINE).group(1)
    setup_py = (REPO / "setup.py").read_text(encoding="utf-8")
    beam_spec = re.search(r'"apache-beam(?:\[[a-z,]+\])?([<>=!~][^"]*)"', setup_py).group(1)
    assert beam_version in SpecifierSet(beam_spec), f"Beam {beam_version} vs setup.py {beam_spec}"
    assert beam_version == apache_beam.__version__, "the image and the tested Beam differ"
    assert python_version == f"{sys.version_info.major}.{sys.version_info.minor}"
    # one image: the Beam SDK image (worker) with the Flex Template launcher copied in
    assert re.search(r"^FROM apache/beam_python\$\{PYTHON_VERSION\}_sdk:\$\{BEAM_VERSION\}$", dockerfile, re.MULTILINE)
    assert "COPY --from=launcher /opt/google/dataflow/python_template_launcher" in dockerfile
    assert 'ENTRYPOINT ["/opt/apache/beam/boot"]' in dockerfile
    # the package is installed in the image, pinned to the image's Beam; the launcher is the entry
    assert re.search(r'pip install [^\n]*"\.\[gcp\]" "apache-beam\[gcp\]==\$\{BEAM_VERSION\}"', dockerfile)
    assert "ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/template/templates/dataflow/launcher.py" in dockerfile
    for path in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.MULTILINE):
        for item in path.split():
            assert (REPO / item).exists(), f"Dockerfile copies {item}, which does not exist"
    assert "FLEX_TEMPLATE_PYTHON_SETUP_FILE" not in dockerfile  # installed, not built at launch


# --- scheduling examples --------------------------------------------------------------------


def test_cloud_scheduler_body_launches_the_template(parameters):
    body = json.loads((TEMPLATES / "cloud_scheduler" / "launch_body.json").read_text(encoding="utf-8"))
    launch = body["launchParameter"]
    assert launch["jobName"] and launch["containerSpecGcsPath"].startswith("gs://")
    given = launch["parameters"]
    assert {"input", "output"} <= set(given)
    for name, value in given.items():
        assert name in parameters, f"unknown template parameter {name}"
        assert matches(parameters[name], value), (name, value)
    script = (TEMPLATES / "cloud_scheduler" / "create_job.sh").read_text(encoding="utf-8")
    assert "flexTemplates:launch" in script and "launch_body.json" in script


def load_dag() -> types.ModuleType:
    """Execute the DAG file against stand-ins for Airflow (not installed here): returns the module
    and the operators it created."""
    created = []

    class Operator:
        def __init__(self, **kwargs):
            created.append(kwargs)

    class DAG:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    stubs = {
        "airflow": types.SimpleNamespace(DAG=DAG),
        "airflow.providers": types.ModuleType("airflow.providers"),
        "airflow.providers.apache": types.ModuleType("airflow.providers.apache"),
        "airflow.providers.apache.beam": types.ModuleType("airflow.providers.apache.beam"),
        "airflow.providers.apache.beam.operators": types.ModuleType("airflow.providers.apache.beam.operators"),
        "airflow.providers.apache.beam.operators.beam": types.SimpleNamespace(BeamRunPythonPipelineOperator=Operator),
    }
    saved = {k: sys.modules.get(k) for k in stubs}
    sys.modules.update(stubs)
    try:
        spec = importlib.util.spec_from_file_location(
            "metaextract_nightly", TEMPLATES / "airflow" / "metaextract_nightly.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    module.created_operators = created
    return module


def beam_operator_argv(options: dict) -> list[str]:
    """What Airflow's Beam operator passes: ``--key=value``, ``--key`` for True."""
    argv = []
    for key, value in options.items():
        if value is True:
            argv.append(f"--{key}")
        elif value not in (False, None):
            argv.extend(f"--{key}={v}" for v in (value if isinstance(value, list) else [value]))
    return argv


def test_airflow_dag_runs_the_incremental_job():
    dag = load_dag()
    (operator,) = dag.created_operators
    assert operator["py_file"] == "pipelines.catalog" and operator["py_options"] == ["-m"]
    options = operator["pipeline_options"]
    assert {"input", "output"} <= set(options)
    assert "previous" not in options and "full" not in options  # the cache is the catalog at --output
    opts, _ = parse_flags(beam_operator_argv(options))
    assert opts.output == dag.OUTPUT and opts.input == [dag.INPUT]


def test_cron_line_parses():
    lines = [
        line
        for line in (TEMPLATES / "cron" / "metaextract.crontab").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#") and "=" not in line.split()[0]
    ]
    (line,) = lines
    fields = line.split()
    assert all(re.fullmatch(r"[\d*/,-]+", f) for f in fields[:5]), "five time fields"
    assert "%" not in line  # cron turns % into newlines
    tokens = shlex.split(" ".join(fields[5:]))
    start = next(i for i, t in enumerate(tokens) if t.endswith("/metaextract")) + 1
    args = []
    for token in tokens[start:]:
        if token.startswith((">", "|", "&")) or token in ("||", "&&"):
            break
        args.append(token)
    opts, _ = parse_flags(args)
    assert opts.input and opts.output


def shell_args(path: pathlib.Path, command: str) -> list[str]:
    """The arguments of ``command`` in a shell script (continuations joined, ${VAR:-default}
    replaced by its default, ${VAR:+...} dropped, "$VAR" by a placeholder)."""
    text = path.read_text(encoding="utf-8").replace("\\\n", " ")
    (line,) = [l for l in text.splitlines() if l.strip().startswith(command)]
    line = re.sub(r"\$\{\w+:\+[^}]*\}", "", line)
    line = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", line)
    defaults = dict(re.findall(r'^(\w+)="\$\{\w+:-([^}]*)\}"$', text, re.MULTILINE))
    line = re.sub(r"\$(\w+)", lambda m: defaults.get(m.group(1), "x"), line)
    return shlex.split(line)[len(shlex.split(command)) :]


def test_flink_submission_parses():
    from apache_beam.options.pipeline_options import FlinkRunnerOptions, StandardOptions

    args = shell_args(TEMPLATES / "flink" / "submit.sh", "python -m pipelines.catalog")
    opts, options = parse_flags(args)
    assert options.view_as(StandardOptions).runner == "FlinkRunner"
    assert options.view_as(FlinkRunnerOptions).flink_master == "localhost:8081"
    assert opts.input and opts.output
    conf = (TEMPLATES / "flink" / "flink-conf.yaml").read_text(encoding="utf-8")
    settings = dict(re.findall(r"^([\w.-]+):\s*(\S+)$", conf, re.MULTILINE))
    assert int(settings["taskmanager.numberOfTaskSlots"]) >= 1 and settings["rest.port"] == "8081"
