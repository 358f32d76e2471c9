#!/usr/bin/env bash
# TPU pod slice: run the same trainer on every worker; JAX finds the pod by itself
# (mesh.distributed=auto). The workdir must be shared storage (a gs:// bucket).
#
#   TPU=my-v5e-64 ZONE=us-west4-a launch/tpu_pod.sh --config configs/fsdfm.py:paper \
#       --workdir gs://my-bucket/runs/fsdfm
#
# Assumes the repo is checked out at ~/dlm_jax on every worker (e.g. by a previous
# `gcloud compute tpus tpu-vm scp --worker=all`) and `pip install -r requirements.txt -e .`
# plus `pip install "jax[tpu]"` has run there.
#
# Exit codes of the trainer on each worker: 0 finished; 2 bad input (one line on stderr); 75 a
# preemption notice (SIGTERM, e.g. a spot/preemptible VM) stopped it after saving a checkpoint:
# rerun this script when the slice is back and it resumes from that checkpoint. 75 also when another
# worker died (one `dlm_jax:` line): rerun, it resumes from the last checkpoint.
set -euo pipefail
: "${TPU:?set TPU to the TPU VM name}" "${ZONE:?set ZONE}"
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command \
  "cd ~/dlm_jax && python -m dlm_jax train $* --config.mesh.distributed=auto"
