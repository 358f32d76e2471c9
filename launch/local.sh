#!/usr/bin/env bash
# Simulated pod on one machine: N OS processes x M fake CPU devices each, joined by
# jax.distributed on 127.0.0.1. Same entry point as a real pod.
#
#   launch/local.sh 2 2 --config configs/demo.py:tiny --workdir runs/local_pod
#
# Extra arguments go to `python -m dlm_jax train`. Logs: <workdir>/process_<i>.log.
set -euo pipefail
nproc_=${1:?number of processes}; ndev=${2:?fake devices per process}; shift 2
workdir=runs/local_pod
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do [ "${args[i]}" = "--workdir" ] && workdir=${args[i + 1]}; done
mkdir -p "$workdir"
port=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pids=()
for ((i = 0; i < nproc_; i++)); do
  JAX_PLATFORMS=cpu XLA_FLAGS="--xla_force_host_platform_device_count=$ndev" DLM_PROCESS_ID=$i \
    python -m dlm_jax train "$@" --workdir "$workdir" \
      --config.mesh.distributed=explicit --config.mesh.coordinator_address="127.0.0.1:$port" \
      --config.mesh.num_processes="$nproc_" --config.mesh.initialization_timeout=60 \
      >"$workdir/process_$i.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
tail -n 5 "$workdir/process_0.log"
exit $status
