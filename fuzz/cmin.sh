#!/usr/bin/env bash
# Shrinks each fuzz corpus to at most MAX files (default 100) before it is committed:
# libFuzzer's set-cover merge over seeds/<target> + corpus/<target> (edges only, no hit counts,
# inputs slower than 2 s dropped), then a greedy pick of the MAX inputs that add the most
# coverage beyond the seeds (which are kept anyway). Prints what fraction of the coverage stays.
#
#   fuzz/cmin.sh [MAX] [TARGET...]
#
# Needs python3 and the targets built (fuzz/run.sh builds them, or `cargo fuzz build -s none -a`).
set -euo pipefail
cd "$(dirname "$0")"

max=${1:-100}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(checkpoint_load tensor_file_load manifest_load pth_load)
bin=target/x86_64-unknown-linux-gnu/release

work=$(mktemp -d)
export HEADSWAP_FUZZ_SCRATCH
HEADSWAP_FUZZ_SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/headswap-fuzz.XXXXXX")
trap 'rm -rf "$work" "$HEADSWAP_FUZZ_SCRATCH"' EXIT

for t in "${targets[@]}"; do
    [ -x "$bin/$t" ] || { echo "$bin/$t is not built: cargo fuzz build -s none -a" >&2; exit 2; }
    mkdir -p "$work/$t.out" "corpus/$t"
    nice -n 19 "$bin/$t" -set_cover_merge=1 -use_counters=0 -timeout=2 -rss_limit_mb=2048 -artifact_prefix="$work/" \
        -merge_control_file="$work/$t.ctl" "$work/$t.out" "seeds/$t" "corpus/$t" >"$work/$t.log" 2>&1 ||
        { tail -20 "$work/$t.log" >&2; exit 1; }
    python3 - "$work/$t.ctl" "$max" "$work/$t.keep" <<'EOF'
import sys
ctl, limit, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lines = open(ctl).read().split("\n")
n = int(lines[0])
files = lines[2:2 + n]
features = {}
for line in lines[2 + n:]:
    if line.startswith("FT "):
        parts = line.split()
        features[int(parts[1])] = set(parts[2:])
covered = set()
for i, f in enumerate(files):
    if f.startswith("seeds/"):
        covered |= features.get(i, set())
candidates = {i: features[i] for i, f in enumerate(files) if not f.startswith("seeds/") and i in features}
total = len(covered.union(*candidates.values()))
chosen = []
while len(chosen) < limit and candidates:
    best = max(candidates, key=lambda i: (len(candidates[i] - covered), -len(open(files[i], "rb").read())))
    if not candidates[best] - covered:
        break
    chosen.append(files[best])
    covered |= candidates.pop(best)
open(out, "w").write("".join(f + "\n" for f in chosen))
print(f"{len(chosen)} files keep {len(covered)} of {total} features ({100 * len(covered) / max(total, 1):.0f}%)")
EOF
    mkdir "$work/$t.new"
    while read -r f; do cp "$f" "$work/$t.new/"; done <"$work/$t.keep"
    before=$(ls "corpus/$t" | wc -l)
    rm -rf "corpus/$t"
    mv "$work/$t.new" "corpus/$t"
    echo "$t: $before -> $(ls "corpus/$t" | wc -l) files, $(du -sh "corpus/$t" | cut -f1)"
done
