#!/usr/bin/env bash
# A warm rebuild of a real crate graph (bench/crate-graph: ~80 crates from crates.io with
# proc-macros, build scripts and C through cc-rs) served only from each shared store, with
# an empty local level, against the same rebuild served from the local disk.
#
# For each store: one cachet fills it (cold build, then --flush); a second cachet with its
# own empty local dir and runtime dir rebuilds after `cargo clean`. Its local level misses
# every entry and backfills; the remote serves them.
#
# Usage: scripts/services start && . target/services/env && bench/remote_graph.sh [STORE...]
#   STORE: local redis cluster memcached s3 webdav http (default: all)
#   (needs: scripts/build-release)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cachet="$root/target/dist/cachet"
[ -x "$cachet" ] || { echo "build cachet first: scripts/build-release" >&2; exit 1; }
[ -n "${CACHET_TEST_REDIS:-}" ] || { echo "start the servers first: scripts/services start && . target/services/env" >&2; exit 1; }
stores=("$@")
[ ${#stores[@]} -gt 0 ] || stores=(local redis cluster memcached s3 webdav http)

work="$(mktemp -d /tmp/cachet-remote-graph.XXXXXX)"
quiet="$work/quiet.log"   # what cachet prints that the bench does not show
trap 'for d in "$work"/run-*; do CACHET_RUNTIME_DIR=$d "$cachet" --stop-server >>"$quiet" 2>&1 || true; done; rm -rf "$work"' EXIT
cp -r "$root/bench/crate-graph/." "$work/project"
cd "$work/project"
cargo fetch -q
export CARGO_INCREMENTAL=0 CARGO_TARGET_DIR="$work/target"
unset RUSTC_WRAPPER CC CXX
run_id="bench-$$-$(date +%s)/"

remote_vars() { # store -> CACHET_* assignments
    case $1 in
        local) ;;
        redis) echo "CACHET_REDIS_ENDPOINT=$CACHET_TEST_REDIS CACHET_REDIS_PREFIX=$run_id" ;;
        cluster) echo "CACHET_REDIS_CLUSTER_ENDPOINTS=$CACHET_TEST_REDIS_CLUSTER CACHET_REDIS_PREFIX=$run_id" ;;
        memcached) echo "CACHET_MEMCACHED_ENDPOINT=$CACHET_TEST_MEMCACHED CACHET_MEMCACHED_PREFIX=$run_id" ;;
        s3) echo "CACHET_S3_ENDPOINT=$CACHET_TEST_S3_ENDPOINT CACHET_S3_BUCKET=$CACHET_TEST_S3_BUCKET CACHET_S3_PREFIX=$run_id AWS_ACCESS_KEY_ID=$CACHET_TEST_S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$CACHET_TEST_S3_SECRET_KEY" ;;
        webdav) echo "CACHET_WEBDAV_ENDPOINT=$CACHET_TEST_WEBDAV CACHET_WEBDAV_PREFIX=$run_id" ;;
        http) echo "CACHET_HTTP_ENDPOINT=$CACHET_TEST_BAZEL CACHET_HTTP_PREFIX=$run_id" ;;
        *) echo "unknown store $1" >&2; exit 2 ;;
    esac
}

build() { # label dir-suffix vars... ; prints wall seconds
    local label=$1 id=$2; shift 2
    cargo clean -q
    local start end
    start=$(date +%s.%N)
    env CACHET_DIR="$work/cache-$id" CACHET_RUNTIME_DIR="$work/run-$id" \
        RUSTC_WRAPPER="$cachet" CC="$cachet cc" CXX="$cachet c++" CC_KNOWN_WRAPPER_CUSTOM=cachet \
        "$@" cargo build -q >"$work/$label.log" 2>&1 || { cat "$work/$label.log"; exit 1; }
    end=$(date +%s.%N)
    awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f", e - s }'
}

printf '%-10s %10s %12s %8s %8s %12s\n' store cold warm hits misses "remote hits"
for store in "${stores[@]}"; do
    read -r -a vars <<<"$(remote_vars "$store")"
    cold=$(build "$store-cold" "$store-a" "${vars[@]}")
    env CACHET_RUNTIME_DIR="$work/run-$store-a" "${vars[@]}" "$cachet" --flush >>"$quiet"
    if [ "$store" = local ]; then
        id="$store-a"   # the same local dir, warm
    else
        id="$store-b"   # a second cachet: empty local dir and its own server
    fi
    env CACHET_DIR="$work/cache-$id" CACHET_RUNTIME_DIR="$work/run-$id" "${vars[@]}" "$cachet" --zero-stats >>"$quiet"
    warm=$(build "$store-warm" "$id" "${vars[@]}")
    stats=$(env CACHET_DIR="$work/cache-$id" CACHET_RUNTIME_DIR="$work/run-$id" "$cachet" --show-stats --json)
    read -r hits misses remote_hits < <(python3 -c '
import json, sys
s = json.loads(sys.stdin.read())
c = s["counters"]
levels = c["levels"]
print(c["cache_hits"], c["cache_misses"], levels[-1]["hits"] if len(levels) > 1 else "-")' <<<"$stats")
    printf '%-10s %8s s %10s s %8s %8s %12s\n' "$store" "$cold" "$warm" "$hits" "$misses" "$remote_hits"
done
