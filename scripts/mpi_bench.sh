#!/usr/bin/env bash
# Data-parallel step time and bytes exchanged per step for N = 1, 2, 4 MPI ranks (issue 15), on
# whatever adapter the ranks find: T1's shape (784→512→256→8, SGD, batch 64, every layer trains)
# and T2's (a 256→4 label head fine-tuned on the frozen trunk's cached features).
#   scripts/mpi_bench.sh BINARY [N...]        (BINARY built with --features distributed)
#   scripts/mpi_bench.sh target/release/headswap 1 2 4
# Step time is the median epoch time after the first epoch over the steps per epoch; the bytes
# are what one rank sends per step (the trainable gradients, f32). More ranks than cores run
# oversubscribed: on a 2-core host with lavapipe, whose own threads use every core, N = 2 and 4
# measure the exchange's cost, not a speed-up.
set -euo pipefail
bin=${1:?usage: $0 BINARY [N...]}
shift
ranks=("$@")
[ ${#ranks[@]} -gt 0 ] || ranks=(1 2 4)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NODEVICE_SELECT=1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
n=${MPI_BENCH_N:-6000}
run() { # N label args...
    local np=$1 label=$2
    shift 2
    mpirun --oversubscribe --bind-to none -np "$np" "$bin" "$@" --json >"$dir/out.json" 2>"$dir/err.txt" || { cat "$dir/err.txt" >&2; exit 1; }
    python3 - "$dir/out.json" "$np" "$label" "$n" <<'PY'
import json, math, statistics, sys
r = json.load(open(sys.argv[1])); np_, label, n = int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
steps = math.ceil(n / 64)
secs = [e["seconds"] for e in r["epochs"]][1:] or [r["epochs"][0]["seconds"]]
ms = 1000 * statistics.median(secs) / steps
print(f"{label:4} N={np_}  {ms:9.2f} ms/step  {64 / ms * 1000:10.0f} samples/s  {r.get('bytes_exchanged_per_step', 0):>9} bytes/step sent per rank  {r['submissions_per_step']:.0f} submissions/step")
PY
}
"$bin" pretrain --data "synthetic-a:$n" --size 28x28 --layers 512,256 --epochs 1 --out "$dir/a.safetensors" >/dev/null 2>&1
for np in "${ranks[@]}"; do
    run "$np" T1 pretrain --data "synthetic-a:$n" --size 28x28 --layers 512,256 --epochs 4 --batch 64 --out "$dir/t1.safetensors"
done
for np in "${ranks[@]}"; do
    run "$np" T2 finetune --from "$dir/a.safetensors" --data "synthetic-b:$n" --size 28x28 --freeze trunk --epochs 4 --batch 64 --out "$dir/t2.safetensors"
done
