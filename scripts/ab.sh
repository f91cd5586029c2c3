#!/usr/bin/env bash
# A/B two headswap binaries on the same workloads: runs `BIN bench --json [bench args]` with each,
# alternating old, new, new, old, old, new, ... (so a drift of the machine's speed hits both
# sides alike), ROUNDS times each, then prints per workload each side's median (min–max over the
# rounds), new/old of the medians, and the spread of new/old over the rounds' adjacent pairs.
#   scripts/ab.sh OLD_BINARY NEW_BINARY [ROUNDS] [bench args]
#   scripts/ab.sh /tmp/old/headswap target/release/headswap 6 --only t1,t3
#   scripts/ab.sh OLD NEW 2 --quick --only t1
# ROUNDS defaults to 4. Higher is better for every figure (samples/s, GFLOP/s). The JSON reports
# stay in AB_DIR (default: a new temporary directory, printed) for a closer look. Needs python3.
set -euo pipefail
usage() { echo "usage: $0 OLD_BINARY NEW_BINARY [ROUNDS] [bench args]" >&2; exit 2; }
[ $# -ge 2 ] || usage
old=$1 new=$2
shift 2
rounds=4
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then rounds=$1; shift; fi
[ "$rounds" -ge 1 ] || usage
for bin in "$old" "$new"; do
    [ -x "$bin" ] || { echo "error: $bin is not an executable file" >&2; exit 2; }
done
command -v python3 >/dev/null || { echo "error: ab.sh needs python3 for the statistics" >&2; exit 2; }
# --json is ours to give (a second one is a usage error for the binary)
args=()
for a in "$@"; do [ "$a" = --json ] || args+=("$a"); done
dir=${AB_DIR:-$(mktemp -d /tmp/headswap-ab.XXXXXX)}
mkdir -p "$dir"
export NODEVICE_SELECT=1
echo "A/B: old $old, new $new, $rounds rounds each, bench ${args[*]:-(all workloads)}; reports in $dir"
for ((r = 0; r < rounds; r++)); do
    if ((r % 2 == 0)); then order=(old new); else order=(new old); fi
    for side in "${order[@]}"; do
        bin=$old; [ "$side" = new ] && bin=$new
        load=$(cut -d' ' -f1 /proc/loadavg)
        start=$(date -u +%H:%M:%S)
        if ! "$bin" bench --json "${args[@]}" >"$dir/$side-$r.json" 2>"$dir/$side-$r.err"; then
            echo "error: round $r, $side ($bin) failed; its stderr:" >&2
            tail -n 5 "$dir/$side-$r.err" >&2
            exit 1
        fi
        echo "  round $r $side: started $start UTC, 1-min load $load"
    done
done
python3 - "$dir" "$rounds" <<'EOF'
import json, sys, statistics

d, rounds = sys.argv[1], int(sys.argv[2])

def figures(path):
    """workload -> (figure, unit): training samples/s (median epochs), K1 GPU GFLOP/s."""
    r = json.load(open(path))
    out = {}
    for k in r.get("k1", []):
        if k.get("gpu"):
            out["K1 " + k["name"]] = (k["gpu"]["gflops"], "GFLOP/s")
    for t in r.get("training", []):
        if t.get("samples_per_sec") is not None:
            out[t["id"]] = (t["samples_per_sec"], "samples/s")
    return out

runs = {side: [figures(f"{d}/{side}-{r}.json") for r in range(rounds)] for side in ("old", "new")}
names = []
for side in ("old", "new"):
    for f in runs[side]:
        names += [n for n in f if n not in names]

def fmt(x):
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"

print(f"\n{'workload':<44} {'old median (min–max)':>28} {'new median (min–max)':>28} {'new/old':>8} {'per round':>13}")
for n in names:
    old = [f[n][0] for f in runs["old"] if n in f]
    new = [f[n][0] for f in runs["new"] if n in f]
    if not old or not new:
        print(f"{n:<44} {'only ' + ('old' if old else 'new'):>28}")
        continue
    side = lambda v: f"{fmt(statistics.median(v))} ({fmt(min(v))}–{fmt(max(v))})"
    ratio = statistics.median(new) / statistics.median(old)
    # each round's new over the same round's old: ran back to back, so they saw the same machine
    paired = [f_new[n][0] / f_old[n][0] for f_old, f_new in zip(runs["old"], runs["new"]) if n in f_old and n in f_new]
    spread = f"{min(paired):.2f}–{max(paired):.2f}"
    print(f"{n:<44} {side(old):>28} {side(new):>28} {ratio:>8.3f} {spread:>13}")
print("\nfigures: K1 GPU GFLOP/s, training samples/s (median epochs); "
      "per round: min–max of new/old over the rounds (each round's two runs are back to back)")
EOF
