#!/usr/bin/env bash
# Chaos during real builds: each project built through cachet ROUNDS times per scenario
# while something breaks under it, each build compared file by file with a plain build at
# the same path.
#
# Projects (--projects, default all three):
#   lua       Lua 5.4.8, 32 files, -O2 -g -MMD -MP, make -j4
#   cfixture  the C fixture of the tests (crates/cachet/tests/fixtures/cproject), make -j4,
#             10 x ROUNDS builds (each takes well under a second)
#   crates    the crate graph of bench/crate-graph (~80 crates, proc macros, build
#             scripts), vendored, `cargo build -j4` run from make so that make checks
#             its jobserver tokens at exit
#
# Scenarios (--only, default all five):
#   kill-server   the cachet server is SIGKILLed every period
#   corrupt       cache files are overwritten with garbage while the build reads them
#   future        every source and header has a timestamp a day ahead
#   full-disk     the cache lives on a small tmpfs, full to the brim and freed in turn,
#                 two periods each (needs mount)
#   redis-flap    a redis level (a private redis-server) up for a period, down for one
# The period is 1.5 s (0.5 s for the fixture). Each scenario's chaos runs through all its
# rounds, so faults land anywhere in a build.
#
# For each: whether every build succeeded (it must), whether its outputs were the plain
# build's (they must), whether make reported jobserver tokens lost, and the counters.
#
# Usage: bench/chaos.sh [--rounds N] [--only a,b] [--projects a,b] [--keep]
#   CACHET=path/to/cachet (default: target/dist/cachet, made by scripts/build-release)
set -euo pipefail
shopt -s inherit_errexit
root="$(cd "$(dirname "$0")/.." && pwd)"
CACHET=${CACHET:-$root/target/dist/cachet}
rounds=3 only="kill-server,corrupt,full-disk,redis-flap,future" projects="lua,cfixture,crates" keep=0
while [ $# -gt 0 ]; do
    case $1 in
        --rounds) rounds=$2; shift 2 ;;
        --only) only=$2; shift 2 ;;
        --projects) projects=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        *) echo "usage: $0 [--rounds N] [--only a,b] [--projects a,b] [--keep]" >&2; exit 2 ;;
    esac
done
[ -x "$CACHET" ] || { echo "no cachet binary at $CACHET: run scripts/build-release" >&2; exit 1; }
for v in $(compgen -e); do
    case $v in CACHET_*|CFLAGS|CC|MAKEFLAGS|MFLAGS|MAKELEVEL|RUSTC_WRAPPER|CARGO_*) unset "$v" ;; esac
done

work="$(mktemp -d "${TMPDIR:-/tmp}/cachet-chaos.XXXXXX")"
quiet="$work/quiet.log"   # what the chaos and the management commands print
chaos_pid="" mounted=""
cleanup() {
    local rc=$?
    [ -z "$chaos_pid" ] || kill "$chaos_pid" 2>>"$quiet" || true
    "$work/bin/cachet" --stop-server >>"$quiet" 2>&1 || true
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

# Each project: <p>_prepare (once), <p>_build CC-OR-WRAPPER LOG (into the same paths every
# time), <p>_outputs (the files to compare, one per line), <p>_edit (a change that makes
# the next round partly cold), <p>_sources (what `future` dates ahead).
lua_build() {
    rm -rf "$checkout/build"
    make -C "$checkout" -j4 OUT=build CC="$1" EXTRA_CFLAGS=-g >"$2" 2>&1
}
lua_outputs() { ls "$checkout/build"/*.o "$checkout/build"/*.d; }
lua_edit() { echo "/* round $1 */" >> "$checkout/lua-5.4.8/lapi.c"; }
lua_sources() { ls "$checkout"/lua-5.4.8/*.c "$checkout"/lua-5.4.8/*.h; }

cfixture_prepare() {
    checkout="$work/src/cproject"
    cp -r "$root/crates/cachet/tests/fixtures/cproject" "$checkout"
}
cfixture_build() {
    rm -rf "$checkout/build"
    make -C "$checkout" -j4 OUT=build CC="$1" >"$2" 2>&1
}
cfixture_outputs() { ls "$checkout/build"/*.o "$checkout/build"/*.d "$checkout/build"/*.stderr "$checkout/build/prog"; }
cfixture_edit() { echo "/* round $1 */" >> "$(ls "$checkout"/src/*.c | head -1)"; }
cfixture_sources() { ls "$checkout"/src/*.c "$checkout"/include/*.h; }

crates_prepare() {
    checkout="$work/src/crate-graph"
    cp -r "$root/bench/crate-graph" "$checkout"
    # Vendored, so that `future` can date every source ahead without touching ~/.cargo.
    (cd "$checkout" && cargo vendor -q --offline "$checkout/vendor" >>"$quiet" 2>&1 ||
        cargo vendor -q "$checkout/vendor" >>"$quiet" 2>&1) || return 1
    mkdir -p "$checkout/.cargo"
    printf '[source.crates-io]\nreplace-with = "vendored"\n[source.vendored]\ndirectory = "vendor"\n' \
        > "$checkout/.cargo/config.toml"
    # make runs cargo as a job of its own jobserver (`+`), and checks its tokens at exit.
    printf 'all:\n\t+cargo build --offline -q $(if $(WRAPPER),--config build.rustc-wrapper=\x27"$(WRAPPER)"\x27)\n' \
        > "$checkout/chaos.mk"
}
crates_build() { # "gcc" stands for a plain build, else the cachet binary wraps rustc
    local wrapper=""
    case $1 in *cachet*) wrapper=$cachet ;; esac
    rm -rf "$checkout/target"
    (cd "$checkout" && CARGO_INCREMENTAL=0 CARGO_TARGET_DIR="$checkout/target" \
        make -j4 -f chaos.mk WRAPPER="$wrapper") >"$2" 2>&1
}
crates_outputs() { find "$checkout/target/debug/deps" -maxdepth 1 -type f | sort; }
crates_edit() { echo "// round $1" >> "$checkout/src/main.rs"; }
crates_sources() { find "$checkout/src" "$checkout/vendor" -type f \( -name '*.rs' -o -name '*.c' -o -name '*.h' \); }

scenario_env() { # DIR: a private server for the scenario
    export CACHET_DIR="$work/$1/cache" CACHET_RUNTIME_DIR="$work/$1/run"
    export CACHET_CONFIG="$work/$1/cachet.toml" CACHET_IDLE_TIMEOUT=600
    mkdir -p "$work/$1"
    : > "$CACHET_CONFIG"
}
same() { # how many of the plain build's outputs differ or are missing; their names in $1
    local f bad=0 plain
    : > "$1"
    while read -r f; do
        plain="$work/plain/${f#"$checkout"/}"
        # A compile's captured stderr (the fixture keeps one per object) holds the warning
        # of a client that fell back to a direct compile, by design: counted as a
        # fallback, not a difference.
        if [[ $f == *.stderr ]]; then
            cmp -s <(grep -v '^cachet: warning: ' "$f" || true) "$plain"
        else
            cmp -s "$f" "$plain"
        fi || { bad=$((bad + 1)); echo "$f" >> "$1"; }
    done < <(cd "$work/plain" && find . -type f | sed "s|^\.|$checkout|")
    echo "$bad"
}
keep_plain() { # the plain build's outputs, by path under the checkout
    local f
    rm -rf "$work/plain"
    while read -r f; do
        mkdir -p "$(dirname "$work/plain/${f#"$checkout"/}")"
        # Called after `&&`, where set -e does not hold: a copy cut short (a full disk)
        # would otherwise count as a difference of the next build.
        cp "$f" "$work/plain/${f#"$checkout"/}" || { echo "keeping $f failed" >&2; exit 1; }
    done < <("${project}_outputs")
}
counters() { "$cachet" --show-stats --json 2>>"$quiet" | python3 -c '
import json, sys
try:
    c = json.load(sys.stdin)["counters"]
except Exception:
    print("(no server)"); sys.exit()
lv = c.get("levels", [])
errs = sum(l.get("errors", 0) + l.get("timeouts", 0) for l in lv)
remote = [l for l in lv if l.get("kind") != "disk"]
print("hits %d misses %d corrupt %d level-errors %d not-stored %d" % (c["cache_hits"], c["cache_misses"],
      c["corrupt_entries"], errs, sum(c["not_stored"].values()))
      + "".join(" remote reads %d writes %d" % (l["reads"], l["writes"]) for l in remote))' || echo "(no server)"; }

run_scenario() { # NAME SETUP-FN CHAOS-FN
    local name=$1 setup=$2 chaos=$3 green=0 identical=0 lost=0 fallbacks=0 i
    dir="$project-$name"
    scenario_env "$dir"
    "$setup" || { printf '%-9s %-12s  skipped: %s\n' "$project" "$name" "$skip_why"; return 0; }
    # The chaos runs the whole scenario through, so it lands at any point of a build (and
    # between builds, where the plain build it does not touch runs). The fixture builds in
    # well under a second: ten times the rounds, and faults three times as often.
    local n=$rounds
    [ "$project" != cfixture ] || n=$((rounds * 10))
    "$chaos" & chaos_pid=$!
    for i in $(seq "$n"); do
        local log="$work/$dir/build-$i.log"
        if "${project}_build" "$cachet gcc" "$log"; then green=$((green + 1)); fi
        [ "$(same "$work/$dir/differs-$i.txt")" = 0 ] && identical=$((identical + 1))
        grep -qi "jobserver tokens" "$log" && lost=$((lost + 1))
        fallbacks=$((fallbacks + $(cat "$log" $("${project}_outputs" | grep '\.stderr$') |
            grep -c "^cachet: warning" || true)))
        # The next round edits a file, so that it is partly cold.
        "${project}_edit" "$i"
        "${project}_build" gcc "$work/plain.log" && keep_plain
    done
    kill "$chaos_pid" 2>>"$quiet" || true
    wait "$chaos_pid" 2>>"$quiet" || true
    chaos_pid=""
    local faults=0
    [ ! -f "$work/$dir/faults" ] || faults=$(wc -l < "$work/$dir/faults")
    printf '%-9s %-12s %7s %7s %10s %12s %7s  %s\n' "$project" "$name" "$n" "$green" "$identical" "$lost" "$faults" "fallbacks $fallbacks, $(counters)"
    "$cachet" --stop-server >>"$quiet" 2>&1 || true
    if [ -n "$mounted" ]; then umount "$mounted" 2>>"$quiet" || true; mounted=""; fi
    # Timestamps back to now: the next scenario's sources are settled again.
    "${project}_sources" | xargs touch
}

skip_why=""
nothing() { return 0; }
fault() { echo >> "$work/$dir/faults"; } # one line per fault made


# Seconds between faults: the fixture's builds are short.
period() { if [ "$project" = cfixture ]; then echo 0.5; else echo 1.5; fi; }
kill_loop() {
    local every
    every=$(period)
    while sleep "$every"; do
        pid=$("$cachet" --show-stats --json 2>>"$quiet" | python3 -c 'import json,sys; print(json.load(sys.stdin)["server_pid"])' 2>>"$quiet") || continue
        if kill -KILL "$pid" 2>>"$quiet"; then fault; fi
    done
}
corrupt_loop() {
    while sleep 0.3; do
        find "$CACHET_DIR" -type f -name '*' ! -name '*.json' 2>>"$quiet" | shuf -n 3 2>>"$quiet" |
            while read -r f; do
                if dd if="$work/garbage" of="$f" bs=1 count=64 seek=20 conv=notrunc 2>>"$quiet"; then fault; fi
            done
    done
}
future_setup() {
    "${project}_sources" | xargs touch -d '+1 day'
}
future_loop() { while sleep 1; do :; done; }
full_setup() {
    # Rust entries are larger: the crate graph gets a larger disk to fill.
    local mib=4
    [ "$project" != crates ] || mib=96
    mkdir -p "$CACHET_DIR"
    if ! mount -t tmpfs -o "size=${mib}m" tmpfs "$CACHET_DIR" 2>>"$quiet"; then
        skip_why="this machine refuses mounts (needs root and mount rights)"
        return 1
    fi
    mounted="$CACHET_DIR"
    fill
}
fill() { # the cache file system filled to the brim (what the cache holds stays)
    python3 -c '
import sys
with open(sys.argv[1], "wb", buffering=0) as f:
    try:
        while True:
            f.write(bytes(65536))
    except OSError:
        pass' "$mounted/ballast" 2>>"$quiet" || true
}
full_loop() { # full, freed, full again: two periods each
    local every
    every=$(period)
    while sleep "$every" && sleep "$every"; do
        rm -f "$mounted/ballast"
        sleep "$every"; sleep "$every"
        fill; fault
    done
}
redis_setup() {
    if ! command -v redis-server >>"$quiet"; then
        skip_why="no redis-server"
        return 1
    fi
    redis_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    printf '[[remote]]\ntype = "redis"\nendpoint = "redis://127.0.0.1:%s"\ntimeout = "1s"\nbreaker_cooldown = "2s"\n' "$redis_port" > "$CACHET_CONFIG"
}
start_redis() {
    redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work/$dir" >>"$quiet" 2>&1 <&- &
    redis_pid=$!
}
redis_loop() {
    trap 'kill -KILL "$redis_pid" 2>>"$quiet"; wait "$redis_pid" 2>>"$quiet"; exit 0' TERM
    local every
    every=$(period)
    start_redis # here, not in the main shell, which would report each kill
    while sleep "$every"; do
        if kill -KILL "$redis_pid" 2>>"$quiet"; then fault; fi
        wait "$redis_pid" 2>>"$quiet" || true
        sleep "$every" # down as long as up
        start_redis
    done
}

printf '\n%-9s %-12s %7s %7s %10s %12s %7s  %s\n' project scenario builds green identical "tokens lost" faults "client fallbacks (build logs, captured stderr), counters (the scenario's last server)"
IFS=, read -ra wanted <<<"$only"
IFS=, read -ra chosen <<<"$projects"
for project in "${chosen[@]}"; do
    case $project in lua|cfixture|crates) ;; *) echo "unknown project $project" >&2; exit 2 ;; esac
    "${project}_prepare" || { printf '%-9s  skipped: could not prepare\n' "$project"; continue; }
    "${project}_build" gcc "$work/plain.log" || { cat "$work/plain.log"; exit 1; }
    keep_plain
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
done
