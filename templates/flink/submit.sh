#!/usr/bin/env bash
# Submit metaextract to a Flink session cluster (flink-conf.yaml next to this file).
#
# Beam's FlinkRunner starts a Flink job server for the cluster's Flink version (Java 11+ and a
# download of the job server jar the first time) and submits the pipeline to FLINK_MASTER.
# Python code runs in SDK workers:
#   - LOOPBACK (below, the default here): in this process; for a cluster on this machine and
#     for trying things out;
#   - EXTERNAL: a worker pool next to every TaskManager, started with
#       python -m apache_beam.runners.worker.worker_pool_main --service_port=50000
#     on hosts where metaextract is installed; then ENVIRONMENT_TYPE=EXTERNAL
#     ENVIRONMENT_CONFIG=localhost:50000.
# Incremental, as everywhere: the catalog already at --output is the cache.
set -euo pipefail

FLINK_MASTER="${FLINK_MASTER:-localhost:8081}"
ENVIRONMENT_TYPE="${ENVIRONMENT_TYPE:-LOOPBACK}"

python -m pipelines.catalog \
  --input "${INPUT:-/data/archive}" \
  --output "${OUTPUT:-/data/catalog}" \
  --progress off \
  --max_error_fraction "${MAX_ERROR_FRACTION:-0.05}" \
  --runner FlinkRunner \
  --flink_master "$FLINK_MASTER" \
  --flink_version "${FLINK_VERSION:-1.19}" \
  --parallelism "${PARALLELISM:-2}" \
  --environment_type "$ENVIRONMENT_TYPE" \
  ${ENVIRONMENT_CONFIG:+--environment_config "$ENVIRONMENT_CONFIG"}
