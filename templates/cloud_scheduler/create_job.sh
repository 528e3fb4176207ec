#!/usr/bin/env bash
# Cloud Scheduler job that launches the metaextract Flex Template every night at 02:00.
#
# Prerequisites (README, "Runners and scheduling"): the image built from
# templates/dataflow/Dockerfile, and the template spec built from it:
#   gcloud dataflow flex-template build gs://my-archive-catalog/templates/metaextract.json \
#     --image "$IMAGE" --sdk-language PYTHON --metadata-file templates/dataflow/metadata.json
# and a service account allowed to launch Dataflow jobs (roles/dataflow.developer) and to act as
# the workers' service account.
#
# The request body is launch_body.json (the flexTemplates.launch API). A second launch while the
# previous job still runs fails on the job name, so two nights never publish at the same time.
set -euo pipefail

PROJECT="${PROJECT:-my-project}"
REGION="${REGION:-europe-west1}"
SCHEDULER_SA="${SCHEDULER_SA:-metaextract-scheduler@${PROJECT}.iam.gserviceaccount.com}"
HERE="$(cd "$(dirname "$0")" && pwd)"

gcloud scheduler jobs create http metaextract-nightly \
  --project="$PROJECT" \
  --location="$REGION" \
  --schedule="0 2 * * *" \
  --time-zone="Etc/UTC" \
  --http-method=POST \
  --uri="https://dataflow.googleapis.com/v1b3/projects/${PROJECT}/locations/${REGION}/flexTemplates:launch" \
  --headers="Content-Type=application/json" \
  --message-body-from-file="${HERE}/launch_body.json" \
  --oauth-service-account-email="$SCHEDULER_SA" \
  --oauth-token-scope="https://www.googleapis.com/auth/cloud-platform"

# The same launch by hand:
#   gcloud dataflow flex-template run metaextract-manual --region "$REGION" \
#     --template-file-gcs-location gs://my-archive-catalog/templates/metaextract.json \
#     --parameters input=gs://my-archive/data,output=gs://my-archive-catalog/catalog
