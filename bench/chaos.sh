#!/usr/bin/env bash
# Chaos during real builds: Lua 5.4.8 (32 files, -O2 -g -MMD -MP, make -j4) built through
# cachet ROUNDS times per scenario while something breaks under it, each build compared
# file by file with a plain build at the same path.
#
#   kill-server   the cachet server is SIGKILLed every 1.5 s
#   corrupt       cache files are overwritten with garbage while the build reads them
#   future        every source and header has a timestamp a day ahead
#   full-disk     the cache lives on a 4 MiB tmpfs that fills up mid-build (needs mount)
#   redis-flap    a redis level (a private redis-server) restarted every 1.5 s
#
# For each: whether every build succeeded (it must), whether its outputs were the plain
# build's (they must), whether make reported jobserver tokens lost, and the counters.
#
# Usage: bench/chaos.sh [--rounds N] [--only a,b] [--keep]
#   CACHET=path/to/cachet (default: target/dist/cachet, made by scripts/build-release)
set -euo pipefail
shopt -s inherit_errexit
root="$(cd "$(dirname "$0")/.." && pwd)"
CACHET=${CACHET:-$root/target/dist/cachet}
rounds=3 only="kill-server,corrupt,full-disk,redis-flap,future" keep=0
while [ $# -gt 0 ]; do
    case $1 in
        --rounds) rounds=$2; shift 2 ;;
        --only) only=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        *) echo "usage: $0 [--rounds N] [--only a,b] [--keep]" >&2; exit 2 ;;
    esac
done
[ -x "$CACHET" ] || { echo "no cachet binary at $CACHET: run scripts/build-release" >&2; exit 1; }
for v in $(compgen -e); do
    case $v in CACHET_*|CFLAGS|CC|MAKEFLAGS|MFLAGS|MAKELEVEL) unset "$v" ;; esac
done

work="$(mktemp -d "${TMPDIR:-/tmp}/cachet-chaos.XXXXXX")"
quiet="$work/quiet.log"   # what the chaos and the management commands print
chaos_pid="" redis_pid="" mounted=""
cleanup() {
    local rc=$?
    [ -z "$chaos_pid" ] || kill "$chaos_pid" 2>>"$quiet" || true
    "$work/bin/cachet" --stop-server >>"$quiet" 2>&1 || true
    [ -z "$redis_pid" ] || kill "$redis_pid" 2>>"$quiet" || true
    [ -z "$mounted" ] || umount "$mounted" 2>>"$quiet" || true
    wait 2>>"$quiet" || true
    if [ "$keep" = 1 ]; then echo "work dir kept: $work" >&2; else rm -rf "$work"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir -p "$work/bin" "$work/dl" "$work/src" "$work/tmp" "$work/plain"
python3 -c 'import os, sys; sys.stdout.buffer.write(os.urandom(4096))' > "$work/garbage"
cp "$CACHET" "$work/bin/cachet"
cachet="$work/bin/cachet"
export TMPDIR="$work/tmp"
. "$root/bench/lib/sources.sh"
lua_prepare

make_build() { # CC LOG: the build dir "build", always the same path
    rm -rf "$checkout/build"
    make -C "$checkout" -j4 OUT=build CC="$1" EXTRA_CFLAGS=-g >"$2" 2>&1
}
make_build gcc "$work/plain.log"
cp "$checkout/build"/*.o "$checkout/build"/*.d "$work/plain/"

scenario_env() { # NAME: a private server for the scenario
    export CACHET_DIR="$work/$1/cache" CACHET_RUNTIME_DIR="$work/$1/run"
    export CACHET_CONFIG="$work/$1/cachet.toml" CACHET_IDLE_TIMEOUT=600
    mkdir -p "$work/$1"
    : > "$CACHET_CONFIG"
}
same() {
    local f bad=0
    for f in "$work/plain"/*.o "$work/plain"/*.d; do
        cmp -s "$f" "$checkout/build/$(basename "$f")" || bad=$((bad + 1))
    done
    echo "$bad"
}
counters() { "$cachet" --show-stats --json 2>>"$quiet" | python3 -c '
import json, sys
try:
    c = json.load(sys.stdin)["counters"]
except Exception:
    print("(no server)"); sys.exit()
lv = c.get("levels", [])
errs = sum(l.get("errors", 0) + l.get("timeouts", 0) for l in lv)
print("hits %d misses %d corrupt %d level-errors %d not-stored %d" % (c["cache_hits"], c["cache_misses"],
      c["corrupt_entries"], errs, sum(c["not_stored"].values())))' || echo "(no server)"; }

printf '\n%-12s %7s %7s %10s %12s  %s\n' scenario builds green identical "tokens lost" "counters (the scenario's server, all rounds)"
run_scenario() { # NAME SETUP-FN CHAOS-FN
    local name=$1 setup=$2 chaos=$3 green=0 identical=0 lost=0 i
    scenario_env "$name"
    "$setup" || { printf '%-12s  skipped: %s\n' "$name" "$skip_why"; return 0; }
    for i in $(seq "$rounds"); do
        "$chaos" & chaos_pid=$!
        local log="$work/$name/build-$i.log"
        if make_build "$cachet gcc" "$log"; then green=$((green + 1)); fi
        kill "$chaos_pid" 2>>"$quiet" || true
        wait "$chaos_pid" 2>>"$quiet" || true
        chaos_pid=""
        [ "$(same)" = 0 ] && identical=$((identical + 1))
        grep -qi "jobserver tokens" "$log" && lost=$((lost + 1))
        # The next round edits a file, so that it is partly cold.
        echo "/* round $i */" >> "$checkout/lua-5.4.8/lapi.c"
        make_build gcc "$work/plain.log" && cp "$checkout/build"/*.o "$checkout/build"/*.d "$work/plain/"
    done
    printf '%-12s %7s %7s %10s %12s  %s\n' "$name" "$rounds" "$green" "$identical" "$lost" "$(counters)"
    "$cachet" --stop-server >>"$quiet" 2>&1 || true
    # Timestamps back to now: the next scenario's sources are settled again.
    touch "$checkout"/lua-5.4.8/*.c "$checkout"/lua-5.4.8/*.h
}

skip_why=""
nothing() { return 0; }

kill_loop() {
    while sleep 1.5; do
        pid=$("$cachet" --show-stats --json 2>>"$quiet" | python3 -c 'import json,sys; print(json.load(sys.stdin)["server_pid"])' 2>>"$quiet") || continue
        kill -KILL "$pid" 2>>"$quiet" || true
    done
}
corrupt_loop() {
    while sleep 0.3; do
        find "$CACHET_DIR" -type f -name '*' ! -name '*.json' 2>>"$quiet" | shuf -n 3 2>>"$quiet" |
            while read -r f; do dd if="$work/garbage" of="$f" bs=1 count=64 seek=20 conv=notrunc 2>>"$quiet" || true; done
    done
}
future_setup() {
    touch -d '+1 day' "$checkout"/lua-5.4.8/*.c "$checkout"/lua-5.4.8/*.h
}
future_loop() { while sleep 1; do :; done; }
full_setup() {
    mkdir -p "$work/full-disk/cache"
    if ! mount -t tmpfs -o size=4m tmpfs "$work/full-disk/cache" 2>>"$quiet"; then
        skip_why="this machine refuses mounts (needs root and mount rights)"
        return 1
    fi
    mounted="$work/full-disk/cache"
    # Filled to the brim now; freed half-way through each build.
    python3 -c 'import sys; sys.stdout.buffer.write(bytes(3900000))' > "$mounted/ballast" 2>>"$quiet" || true
}
full_loop() { sleep 3; rm -f "$mounted/ballast"; while sleep 1; do :; done; }
redis_setup() {
    if ! command -v redis-server >>"$quiet"; then
        skip_why="no redis-server"
        return 1
    fi
    redis_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    printf '[[remote]]\ntype = "redis"\nendpoint = "redis://127.0.0.1:%s"\ntimeout = "1s"\nbreaker_cooldown = "2s"\n' "$redis_port" > "$CACHET_CONFIG"
    start_redis
}
start_redis() {
    redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work/redis-flap" >>"$quiet" 2>&1 <&- &
    redis_pid=$!
}
redis_loop() {
    trap 'kill -KILL "$redis_pid" 2>>"$quiet"; exit 0' TERM
    while sleep 1.5; do
        kill -KILL "$redis_pid" 2>>"$quiet" || true
        wait "$redis_pid" 2>>"$quiet" || true
        sleep 0.5
        start_redis
    done
}

IFS=, read -ra wanted <<<"$only"
for s in "${wanted[@]}"; do
    case $s in
        kill-server) run_scenario kill-server nothing kill_loop ;;
        corrupt) run_scenario corrupt nothing corrupt_loop ;;
        future) run_scenario future future_setup future_loop ;;
        full-disk) run_scenario full-disk full_setup full_loop ;;
        redis-flap) run_scenario redis-flap redis_setup redis_loop ;;
        *) echo "unknown scenario $s" >&2; exit 2 ;;
    esac
done
