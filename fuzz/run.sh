#!/usr/bin/env bash
# Runs each fuzz target for a set time, one after another, at the lowest CPU priority, and keeps
# every crash, out-of-memory and timeout input as fuzz/regressions/<target>-<kind>-<hash>.bin.
#
#   fuzz/run.sh [SECONDS] [TARGET...]      default: 600 s each, all targets
#
# Works on the stable toolchain: `-s none` (no sanitizer) needs no -Z flag; `-a` turns on debug
# assertions and overflow checks. Extra libFuzzer flags can be given in FUZZ_ARGS, e.g.
# FUZZ_ARGS="-max_len=65536" fuzz/run.sh 60 manifest_load. Logs go to fuzz/artifacts/logs/.
# Needs cargo-fuzz (`cargo install cargo-fuzz`). See fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")"

secs=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(checkpoint_load tensor_file_load manifest_load pth_load)

command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz is not installed: cargo install cargo-fuzz" >&2; exit 2; }

# The harness writes its inputs to files; keep them in memory and remove them afterwards.
scratch_root=/dev/shm
[ -d "$scratch_root" ] && [ -w "$scratch_root" ] || scratch_root=${TMPDIR:-/tmp}
export HEADSWAP_FUZZ_SCRATCH
HEADSWAP_FUZZ_SCRATCH=$(mktemp -d "$scratch_root/headswap-fuzz.XXXXXX")
trap 'rm -rf "$HEADSWAP_FUZZ_SCRATCH"' EXIT

build_flags=(-s none -a)
nice -n 19 cargo fuzz build "${build_flags[@]}"

mkdir -p artifacts/logs regressions
summary=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "seeds/$t" "artifacts/$t"
    log="artifacts/logs/$t.log"
    : >"$log"
    start=$SECONDS
    runs=0
    found=0
    # libFuzzer stops at the first crash: keep it and go on for the rest of the time (5 tries).
    for attempt in 1 2 3 4 5 6; do
        left=$((secs - (SECONDS - start)))
        [ "$left" -gt 0 ] || break
        before=$(ls "artifacts/$t" | sort)
        set +e
        # shellcheck disable=SC2086
        nice -n 19 cargo fuzz run "${build_flags[@]}" "$t" "corpus/$t" "seeds/$t" -- \
            -max_total_time="$left" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 ${FUZZ_ARGS:-} >"$log.part" 2>&1
        rc=$?
        set -e
        n=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log.part" | grep -o '[0-9]*$' || true)
        runs=$((runs + ${n:-0}))
        cat "$log.part" >>"$log" && rm "$log.part"
        new=$(comm -13 <(echo "$before") <(ls "artifacts/$t" | sort) | grep -E '^(crash|oom|timeout|leak|slow-unit)-' || true)
        for f in $new; do
            kind=${f%%-*}
            hash=${f#*-}
            dest="regressions/$t-$kind-${hash:0:8}.bin"
            cp "artifacts/$t/$f" "$dest"
            echo "FOUND $kind in $t: fuzz/$dest (minimise: cargo fuzz tmin -s none -a $t fuzz/artifacts/$t/$f)"
            found=$((found + 1))
        done
        [ "$rc" -ne 0 ] && [ -z "$new" ] && { echo "$t: fuzzer failed (rc $rc), see fuzz/$log" >&2; break; }
        [ "$rc" -eq 0 ] && break
        [ "$attempt" -lt 6 ] || echo "$t: giving up after 5 crashes"
    done
    summary+=("$t: $((SECONDS - start)) s, $runs executions, $found finding(s), corpus $(ls "corpus/$t" | wc -l) files")
done
printf '%s\n' "${summary[@]}"
