"""Airflow DAG: the nightly incremental metaextract run, with Beam's operator.

Every night it runs ``python -m pipelines.catalog --input ... --output ...``. No ``--previous``:
the catalog already at ``--output`` is the cache, so only new and changed files are read, and
a run that fails leaves yesterday's catalog published and usable as the next night's cache.
The task fails, and Airflow alerts (``email_on_failure``, ``on_failure_callback``), when the run
fails or exits with code 3 (more than ``max_error_fraction`` of the files read were errors).

Needs ``apache-airflow-providers-apache-beam`` on the scheduler and metaextract installed where
the task runs (``pip install "metaextract[gcp]"``). For Dataflow instead of the worker's own
DirectRunner, set METAEXTRACT_RUNNER=DataflowRunner and the GCP variables below.
"""

from __future__ import annotations

import datetime as dt
import os

from airflow import DAG
from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator

INPUT = os.environ.get("METAEXTRACT_INPUT", "gs://my-archive/data")
OUTPUT = os.environ.get("METAEXTRACT_OUTPUT", "gs://my-archive-catalog/catalog")
RUNNER = os.environ.get("METAEXTRACT_RUNNER", "DirectRunner")

#: metaextract's flags (``--name=value``; True -> ``--name``). Beam's options can go here too.
PIPELINE_OPTIONS: dict[str, object] = {
    "input": INPUT,
    "output": OUTPUT,
    "progress": "off",
    "max_error_fraction": "0.05",
}
if RUNNER == "DirectRunner":
    PIPELINE_OPTIONS |= {"direct_running_mode": "multi_processing", "direct_num_workers": "0"}
else:  # DataflowRunner: the worker installs metaextract from the sdist of this setup.py
    PIPELINE_OPTIONS |= {
        "project": os.environ.get("GCP_PROJECT", "my-project"),
        "region": os.environ.get("GCP_REGION", "europe-west1"),
        "temp_location": os.environ.get("METAEXTRACT_TEMP", "gs://my-archive-catalog/tmp"),
        "setup_file": os.environ.get("METAEXTRACT_SETUP_FILE", "/opt/metaextract/setup.py"),
    }

with DAG(
    dag_id="metaextract_nightly",
    description="Incremental metaextract catalog of the archive",
    schedule="0 2 * * *",
    start_date=dt.datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,  # never two runs publishing the same catalog
    default_args={
        "retries": 1,
        "retry_delay": dt.timedelta(minutes=15),
        "email_on_failure": True,
        "execution_timeout": dt.timedelta(hours=6),
    },
    tags=["metaextract"],
) as dag:
    BeamRunPythonPipelineOperator(
        task_id="catalog",
        runner=RUNNER,
        py_file="pipelines.catalog",
        py_options=["-m"],  # python -m pipelines.catalog: the installed package
        pipeline_options=PIPELINE_OPTIONS,
        py_interpreter="python3",
        py_system_site_packages=True,
    )
