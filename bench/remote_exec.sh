#!/usr/bin/env bash
# Remote execution on loopback: a cold C build (Lua 5.4.8, 32 files, -O2 -g -MMD -MP,
# make -jJOBS) made locally and through remote execution on a BuildGrid with 1 and with 2
# workers, in one run, and what one remote compile costs (upload, queue, run, round trip,
# bytes each way).
#
#   plain         make CC=gcc                                   the reference
#   cachet local  CC="cachet gcc", execution on, empty cache:   every slot's first compile,
#                                                               local and observed
#   remote N      the same build again, every compile forced    N workers on this machine
#                 to miss (CACHET_RECACHE=1): all run remotely
#
# Each remote build starts a fresh BuildGrid (empty CAS and ActionCache: nothing is served
# from the service's cache) and its workers; the cachet server keeps what its slots read,
# and re-uploads what the new grid lacks (the first action fails on missing blobs, which
# is part of the figure). Every object and .d is compared with the plain build's.
#
# On one machine the workers share its cores with everything else: the build cannot get
# faster than local, and the figures are the per-compile overhead that the fleet model in
# docs/remote-execution.md starts from.
#
# Usage: bench/remote_exec.sh [--jobs N] [--keep]
#   CACHET=path/to/cachet (default: target/dist/cachet, made by scripts/build-release)
# Needs root (the test worker chroots), gcc, make, python3, and BuildGrid's venv
# (scripts/services install puts it in target/test-tools/buildgrid).
set -euo pipefail
shopt -s inherit_errexit
root="$(cd "$(dirname "$0")/.." && pwd)"
CACHET=${CACHET:-$root/target/dist/cachet}
PY=${CACHET_TEST_BUILDGRID_PYTHON:-$root/target/test-tools/buildgrid/bin/python}

jobs=2 keep=0
while [ $# -gt 0 ]; do
    case $1 in
        --jobs) jobs=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        *) echo "usage: $0 [--jobs N] [--keep]" >&2; exit 2 ;;
    esac
done
[ -x "$CACHET" ] || { echo "no cachet binary at $CACHET: run scripts/build-release" >&2; exit 1; }
[ -x "$PY" ] || { echo "no BuildGrid venv at $PY: run scripts/services install" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "needs root: the test worker chroots into input roots" >&2; exit 1; }
for v in $(compgen -e); do
    case $v in CACHET_*|CFLAGS|CC|MAKEFLAGS|MFLAGS|MAKELEVEL) unset "$v" ;; esac
done

work="$(mktemp -d "${TMPDIR:-/tmp}/cachet-remote-exec.XXXXXX")"
quiet="$work/quiet.log"   # what the management commands print
pids=()
cleanup() {
    local rc=$?
    "$work/bin/cachet" --stop-server >>"$quiet" 2>&1 || true
    for p in "${pids[@]}"; do kill "$p" 2>>"$quiet" || true; done
    wait 2>>"$quiet" || true
    if [ "$keep" = 1 ]; then echo "work dir kept: $work" >&2; else rm -rf "$work"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir -p "$work/bin" "$work/dl" "$work/src" "$work/tmp"
cp "$CACHET" "$work/bin/cachet"
export TMPDIR="$work/tmp"
. "$root/bench/lib/sources.sh"
lua_prepare
port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

export CACHET_DIR="$work/cache" CACHET_RUNTIME_DIR="$work/run" CACHET_CONFIG="$work/cachet.toml"
export CACHET_IDLE_TIMEOUT=3600
: > "$CACHET_CONFIG"
export CACHET_EXECUTION_ENDPOINT="grpc://127.0.0.1:$port" CACHET_EXECUTION_INSTANCE_NAME=main
cachet="$work/bin/cachet"

now() { date +%s.%N; }
grid_up() { # N workers on a fresh grid
    local n=$1 d="$work/grid-$2"
    mkdir -p "$d"
    "$PY" "$root/crates/cachet/tests/reapi/grid.py" --port "$port" --dir "$d" >"$d/bgd.log" 2>&1 &
    grid_pid=$!
    pids+=("$grid_pid")
    for _ in $(seq 300); do [ -f "$d/bgd.pid" ] && break; sleep 0.1; done
    [ -f "$d/bgd.pid" ] || { tail "$d/bgd.log" >&2; exit 1; }
    worker_pids=()
    for w in $(seq "$n"); do
        "$PY" "$root/crates/cachet/tests/reapi/worker.py" --endpoint "grpc://127.0.0.1:$port" \
            --name "w$w" --dir "$d/workers" --log "$d/actions.log" >"$d/w$w.log" 2>&1 &
        worker_pids+=($!)
        pids+=($!)
    done
    sleep 1   # the workers' bot sessions
}
grid_down() {
    kill "${worker_pids[@]}" "$grid_pid" 2>>"$quiet" || true
    wait "${worker_pids[@]}" "$grid_pid" 2>>"$quiet" || true
}
build() { # NAME CC [VAR=VALUE...]: a fresh build dir (always the same path: the .d
    # files name it); prints the seconds
    local name=$1 cc=$2; shift 2
    rm -rf "$checkout/build"
    local t0 t1
    t0=$(now)
    env "$@" make -C "$checkout" -s -j"$jobs" OUT=build CC="$cc" EXTRA_CFLAGS=-g >"$work/$name.log" 2>&1 ||
        { tail -20 "$work/$name.log" >&2; exit 1; }
    "$cachet" --flush >>"$quiet" 2>&1 || true
    t1=$(now)
    awk -v s="$t0" -v e="$t1" 'BEGIN { printf "%.2f", e - s }'
}
same() { # the objects and .d files of the last build are the plain build's
    local f bad=0
    for f in "$work/plain"/*.o "$work/plain"/*.d; do
        cmp -s "$f" "$checkout/build/$(basename "$f")" || { echo "  $1: $(basename "$f") differs" >&2; bad=1; }
    done
    [ "$bad" = 0 ] && echo identical || echo DIFFERENT
}
counters() { "$cachet" --show-stats --json | python3 -c '
import json, sys
e = json.load(sys.stdin)["counters"].get("execution") or {}
n = e.get("remote_compiles", 0) or 1
fb = sum(e.get("fallbacks", {}).values())
print(e.get("remote_compiles", 0), fb, e.get("first_compiles_local", 0),
      "%.0f %.0f %.0f %.0f" % tuple(e.get(k, 0) / n for k in ("upload_ms", "queue_ms", "run_ms", "total_ms")),
      "%.0f %.0f" % (e.get("bytes_uploaded", 0) / n / 1024, e.get("bytes_downloaded", 0) / n / 1024),
      e.get("toolchain_uploads", 0), *["(%s: %d)" % kv for kv in e.get("fallbacks", {}).items()])'; }

echo "cachet $("$cachet" --version | awk '{print $2}'); lua 5.4.8, 32 files, -O2 -g, make -j$jobs; work dir $work"
t_plain=$(build plain gcc)
mkdir -p "$work/plain" && cp "$checkout/build"/*.o "$checkout/build"/*.d "$work/plain/"
grid_up 1 first
"$cachet" --start-server >>"$quiet"
t_local=$(build local "$cachet gcc")
same_local=$(same local)
printf '\n%-16s %8s %8s %10s  %s\n' build seconds "x plain" outputs "remote/fallback/local-first  mean upload/queue/run/total ms  KiB up/down per compile  toolchains"
printf '%-16s %8s %8s %10s\n' plain "$t_plain" 1.00 -
printf '%-16s %8s %8s %10s  %s\n' "cachet local" "$t_local" "$(awk -v a="$t_local" -v b="$t_plain" 'BEGIN{printf "%.2f", a/b}')" "$same_local" "$(counters)"
grid_down
for n in 1 2; do
    grid_up "$n" "w$n"
    "$cachet" --zero-stats >>"$quiet"
    t=$(build "remote$n" "$cachet gcc" CACHET_RECACHE=1)
    printf '%-16s %8s %8s %10s  %s\n' "remote, $n worker$([ "$n" = 1 ] || echo s)" "$t" "$(awk -v a="$t" -v b="$t_plain" 'BEGIN{printf "%.2f", a/b}')" "$(same "remote$n")" "$(counters)"
    grid_down
done
