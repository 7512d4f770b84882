#!/usr/bin/env bash
# Builds a real crate graph from crates.io (bench/crate-graph: ~80 crates with proc-macros,
# build scripts and C compiled through cc-rs) plainly, through sccache and through cachet,
# each cold (empty cache) and warm (`cargo clean`, cache kept), in one run, and prints the
# wall times, the ratios and the hit counts.
#
# Usage: bench/cargo_graph.sh        (needs: scripts/build-release; cargo install sccache)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cachet="$root/target/dist/cachet"
sccache="$(command -v sccache || true)"
[ -x "$cachet" ] || { echo "build cachet first: scripts/build-release" >&2; exit 1; }

work="$(mktemp -d /tmp/cachet-graph.XXXXXX)"
trap 'rm -rf "$work"' EXIT
quiet="$work/quiet.log"   # what the servers print that the bench does not show
cp -r "$root/bench/crate-graph/." "$work/project"
cd "$work/project"
cargo fetch -q

export CARGO_INCREMENTAL=0 CARGO_TARGET_DIR="$work/target"
unset RUSTC_WRAPPER CC CXX CC_KNOWN_WRAPPER_CUSTOM
declare -A wall

now() { date +%s.%N; }
build() { # label, then env assignments for cargo
    local label=$1; shift
    cargo clean -q
    local start end
    start=$(now)
    env "$@" cargo build -q >"$work/$label.log" 2>&1 || { cat "$work/$label.log"; exit 1; }
    end=$(now)
    wall[$label]=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f", e - s }')
    printf '%-14s %8s s\n' "$label" "${wall[$label]}"
}

build plain-cold X=1
build plain-warm X=1

if [ -n "$sccache" ]; then
    export SCCACHE_DIR="$work/sccache" SCCACHE_SERVER_PORT=4301 SCCACHE_IDLE_TIMEOUT=0
    "$sccache" --stop-server >>"$quiet" 2>&1 || true
    "$sccache" --start-server >>"$quiet"
    build sccache-cold RUSTC_WRAPPER="$sccache" CC="$sccache cc" CXX="$sccache c++"
    "$sccache" --zero-stats >>"$quiet"
    build sccache-warm RUSTC_WRAPPER="$sccache" CC="$sccache cc" CXX="$sccache c++"
    sccache_hits=$("$sccache" --show-stats | awk '/^Cache hits  /{print $3; exit}')
    sccache_misses=$("$sccache" --show-stats | awk '/^Cache misses  /{print $3; exit}')
    "$sccache" --stop-server >>"$quiet" 2>&1 || true
fi

export CACHET_DIR="$work/cachet" CACHET_RUNTIME_DIR="$work/cachet-run"
"$cachet" --start-server >>"$quiet"
wrap=(RUSTC_WRAPPER="$cachet" CC="$cachet cc" CXX="$cachet c++" CC_KNOWN_WRAPPER_CUSTOM=cachet)
build cachet-cold "${wrap[@]}"
"$cachet" --zero-stats >>"$quiet"
build cachet-warm "${wrap[@]}"
stats=$("$cachet" --show-stats --json)
"$cachet" --show-stats | grep -E 'hits/misses|^Uncacheable|^  [a-z]|Average hit' || true
"$cachet" --stop-server >>"$quiet"

hits=$(echo "$stats" | awk -F: '/"cache_hits"/{gsub(/[ ,]/,"",$2); print $2; exit}')
misses=$(echo "$stats" | awk -F: '/"cache_misses"/{gsub(/[ ,]/,"",$2); print $2; exit}')
echo
echo "warm-build hits: cachet $hits (misses $misses)${sccache:+, sccache ${sccache_hits:-?} (misses ${sccache_misses:-?})}"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo "cachet cold / plain cold:   $(ratio "${wall[cachet-cold]}" "${wall[plain-cold]}")"
echo "cachet warm / plain cold:   $(ratio "${wall[cachet-warm]}" "${wall[plain-cold]}")"
if [ -n "$sccache" ]; then
    echo "cachet warm / sccache warm: $(ratio "${wall[cachet-warm]}" "${wall[sccache-warm]}")"
    echo "cachet cold / sccache cold: $(ratio "${wall[cachet-cold]}" "${wall[sccache-cold]}")"
fi
