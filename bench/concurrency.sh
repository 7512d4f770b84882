#!/usr/bin/env bash
# How many rustc threads run at once during a build, against the build's -j: plain cargo,
# sccache (if installed) and cachet, at -j1 and -j2, on a release build with 16 codegen
# units per crate and an empty cache (every compile a miss). A small C sampler counts the
# rustc threads in state R every 3 ms; it prints the peak, the mean while any compiler
# runs, and the share of those samples above -j, with the wall time of each build.
#
# Usage: bench/concurrency.sh   (needs: scripts/build-release)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cachet="$root/target/dist/cachet"
sccache="$(command -v sccache || true)"
[ -x "$cachet" ] || { echo "build cachet first: scripts/build-release" >&2; exit 1; }

work="$(mktemp -d /tmp/cachet-concurrency.XXXXXX)"
trap 'rm -rf "$work"' EXIT
quiet="$work/quiet.log"   # what the servers print that the bench does not show
gcc -O2 -o "$work/sampler" "$root/bench/concurrency-sampler.c"
cargo new -q --vcs none "$work/project"
cd "$work/project"
printf 'regex = "1"\n' >> Cargo.toml
printf 'fn main() { println!("{}", regex::Regex::new("a+b").unwrap().is_match("aab")); }\n' > src/main.rs
cargo fetch -q
export CARGO_INCREMENTAL=0 CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_TARGET_DIR="$work/target"
unset RUSTC_WRAPPER

run() { # label jobs [env assignments]
    local label=$1 jobs=$2; shift 2
    cargo clean -q
    mkfifo "$work/stop"
    "$work/sampler" "$jobs" 3 < "$work/stop" > "$work/sample" &
    local sampler=$!
    exec 8> "$work/stop"
    local start end
    start=$(date +%s.%N)
    env "$@" cargo build -q --release -j "$jobs" > "$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
    end=$(date +%s.%N)
    exec 8>&-
    wait "$sampler"
    rm -f "$work/stop"
    read -r busy peak mean above < "$work/sample"
    awk -v l="$label" -v j="$jobs" -v s="$start" -v e="$end" -v p="$peak" -v m="$mean" -v a="$above" -v b="$busy" \
        'BEGIN { printf "%-10s -j%s %8.2f s %6d %8.2f %10.3f %8d\n", l, j, e - s, p, m, a, b }'
}

printf '%-10s %3s %10s %6s %8s %10s %8s\n' tool jobs wall peak mean "share>-j" samples
for jobs in 1 2; do
    run plain "$jobs" X=1
    if [ -n "$sccache" ]; then
        export SCCACHE_DIR="$work/sccache-$jobs" SCCACHE_SERVER_PORT=4303 SCCACHE_IDLE_TIMEOUT=0
        "$sccache" --stop-server >>"$quiet" 2>&1 || true
        "$sccache" --start-server >>"$quiet"
        run sccache "$jobs" RUSTC_WRAPPER="$sccache"
        "$sccache" --stop-server >>"$quiet" 2>&1 || true
    fi
    export CACHET_DIR="$work/cachet-$jobs" CACHET_RUNTIME_DIR="$work/cachet-run-$jobs"
    "$cachet" --start-server >>"$quiet"
    run cachet "$jobs" RUSTC_WRAPPER="$cachet"
    "$cachet" --show-stats | grep -E 'Extra tokens|Granted tokens idle|recovered' | sed 's/^/    /'
    "$cachet" --stop-server >>"$quiet"
done
