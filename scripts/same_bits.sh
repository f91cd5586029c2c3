#!/usr/bin/env bash
# Do two headswap binaries train to the same bits? Runs the same seeded CLI jobs with each (an MLP
# and a CNN pretrained, then a head-only and a full fine-tune) and compares the checkpoints'
# sha256. Kernel choices are measured per device, and a different choice (the convolution
# algorithm, a matmul variant) changes the bits, so pin them the same for both binaries, e.g.
#   HEADSWAP_AUTOTUNE=0 scripts/same_bits.sh OLD_BINARY NEW_BINARY
#   HEADSWAP_CONV=im2col scripts/same_bits.sh OLD_BINARY NEW_BINARY
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 OLD_BINARY NEW_BINARY" >&2; exit 2; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
export NODEVICE_SELECT=1
for side in old new; do
    bin=$1; [ "$side" = new ] && bin=$2
    "$bin" pretrain --data synthetic-a:600 --arch mlp --layers 64,32 --epochs 2 --seed 3 --out "$dir/$side-mlp.safetensors" >/dev/null 2>&1
    "$bin" pretrain --data synthetic-a:300 --arch cnn --channels 4,8 --epochs 1 --seed 3 --out "$dir/$side-cnn.safetensors" >/dev/null 2>&1
    "$bin" finetune --from "$dir/$side-mlp.safetensors" --data synthetic-b:200 --freeze trunk --epochs 2 --seed 4 \
        --out "$dir/$side-head-only.safetensors" >/dev/null 2>&1
    "$bin" finetune --from "$dir/$side-cnn.safetensors" --data synthetic-b:120 --freeze all --epochs 1 --seed 4 \
        --out "$dir/$side-cnn-all.safetensors" >/dev/null 2>&1
done
status=0
for job in mlp cnn head-only cnn-all; do
    a=$(sha256sum <"$dir/old-$job.safetensors" | cut -c1-16)
    b=$(sha256sum <"$dir/new-$job.safetensors" | cut -c1-16)
    if [ "$a" = "$b" ]; then verdict=same; else verdict=DIFFERENT; status=1; fi
    printf '%-10s old %s  new %s  %s\n' "$job" "$a" "$b" "$verdict"
done
exit $status
