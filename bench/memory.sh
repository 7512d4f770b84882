#!/usr/bin/env bash
# Two concurrent `cargo build -j8` of a real crate graph (bench/crate-graph: ~80 crates,
# heavy ones such as syn, tokio and clap; one build --release, one a debug build with full
# debuginfo, so they share no cache entries), plainly, through sccache (if installed) and
# through cachet, inside a memory-capped cgroup, then the same without the cap. Every
# server is started fresh inside the cgroup, with its own runtime dir, and checked to be
# there (/proc/<pid>/cgroup). For each it prints: both builds succeeded or not, compiler
# processes the OOM killer took (the oom_kill counters of the cgroup and every group below
# it, read before the servers stop), peak memory (the cgroup's max_usage_in_bytes) and wall
# time; and the uncapped wall-time ratio cachet/plain.
#
# Usage: CAP=1500M bench/memory.sh      (root on a cgroup v1 memory controller; needs
# scripts/build-release; sccache from `cargo install sccache` is used when on PATH)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cachet="$root/target/dist/cachet"
sccache="$(command -v sccache || true)"
cap="${CAP:-1500M}"
[ -x "$cachet" ] || { echo "build cachet first: scripts/build-release" >&2; exit 1; }
own=$(awk -F: '$2 ~ /(^|,)memory(,|$)/ { print $3 }' /proc/self/cgroup)
[ -n "$own" ] || { echo "no cgroup v1 memory controller here" >&2; exit 1; }
parent="/sys/fs/cgroup/memory${own%/}"
group="$parent/cachet-bench-memory-$$"
mkdir "$group" || { echo "cannot make a cgroup in $parent (root needed)" >&2; exit 1; }

work="$(mktemp -d /tmp/cachet-memory.XXXXXX)"
quiet="$work/quiet.log"
cleanup() {
    "$cachet" --stop-server >>"$quiet" 2>&1 || true
    [ -n "$sccache" ] && "$sccache" --stop-server >>"$quiet" 2>&1 || true
    # Whatever is left in the group (a build the bench gave up on) goes first.
    for pid in $(cat "$group/cgroup.procs" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    sleep 1
    find "$group" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null || true
    rmdir "$group" 2>/dev/null || echo "left behind: $group" >&2
    rm -rf "$work"
}
trap cleanup EXIT
cp -r "$root/bench/crate-graph/." "$work/project"
cd "$work/project"
cargo fetch -q
# The second build's profile: debug with full debuginfo (its own entries, its own memory).
cat >>Cargo.toml <<'EOF'

[profile.debuginfo]
inherits = "dev"
debug = 2
EOF

export CARGO_INCREMENTAL=0
unset RUSTC_WRAPPER CC CXX CC_KNOWN_WRAPPER_CUSTOM
export CACHET_DIR="$work/cachet" CACHET_RUNTIME_DIR="$work/cachet-run"
export SCCACHE_DIR="$work/sccache" SCCACHE_SERVER_PORT=4302 SCCACHE_IDLE_TIMEOUT=0

# Runs a command inside the group.
inside() { sh -c 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"' sh "$group" "$@"; }

# The OOM kills counted in the group and every group below it.
oom_kills() {
    find "$group" -name memory.oom_control -exec awk '/^oom_kill / { s += $2 } END { print s + 0 }' {} + |
        awk '{ s += $1 } END { print s + 0 }'
}

# Starts a wrapper's server inside the group and checks it is there.
start_server() { # name
    case $1 in
    cachet)
        rm -rf "$CACHET_DIR" "$CACHET_RUNTIME_DIR"
        inside "$cachet" --start-server >>"$quiet"
        pid=$("$cachet" --show-stats --json | sed -n 's/.*"server_pid": *\([0-9]*\).*/\1/p')
        ;;
    sccache)
        rm -rf "$SCCACHE_DIR"
        inside "$sccache" --start-server >>"$quiet" 2>&1
        pid=$(pgrep -f -n "sccache" || true)
        ;;
    esac
    grep -q "cachet-bench-memory-$$" "/proc/$pid/cgroup" ||
        { echo "$1 server $pid is not in the cgroup" >&2; exit 1; }
}

stop_server() {
    case $1 in
    cachet) "$cachet" --stop-server >>"$quiet" 2>&1 || true ;;
    sccache) "$sccache" --stop-server >>"$quiet" 2>&1 || true ;;
    esac
}

now() { date +%s.%N; }
run() { # label, wrapper (plain|cachet|sccache), cap (yes|no)
    local label=$1 how=$2 capped=$3 env=()
    echo 0 >"$group/memory.max_usage_in_bytes"
    if [ "$capped" = yes ]; then echo "$cap" >"$group/memory.limit_in_bytes"; else echo -1 >"$group/memory.limit_in_bytes"; fi
    case $how in
    cachet) env=(RUSTC_WRAPPER="$cachet" CC="$cachet cc" CXX="$cachet c++" CC_KNOWN_WRAPPER_CUSTOM=cachet) ;;
    sccache) env=(RUSTC_WRAPPER="$sccache" CC="$sccache cc" CXX="$sccache c++") ;;
    esac
    [ "$how" = plain ] || start_server "$how"
    rm -rf "$work/t1" "$work/t2"
    local before start end ok=yes
    before=$(oom_kills)
    start=$(now)
    inside env "${env[@]}" CARGO_TARGET_DIR="$work/t1" cargo build -q -j8 --release >"$work/$label.1.log" 2>&1 &
    local a=$!
    inside env "${env[@]}" CARGO_TARGET_DIR="$work/t2" cargo build -q -j8 --profile debuginfo >"$work/$label.2.log" 2>&1 &
    local b=$!
    wait $a || ok=no
    wait $b || ok=no
    [ "$how" = cachet ] && "$cachet" --flush >>"$quiet" 2>&1
    end=$(now)
    local kills=$(($(oom_kills) - before))
    local peak=$(($(cat "$group/memory.max_usage_in_bytes") >> 20))
    [ "$how" = cachet ] && "$cachet" --show-stats | grep -E '^(Memory budget|Memory measured by|Compiles that waited|Pressure holds|OOM kills|  retried)' >"$work/$label.stats" || true
    [ "$how" = plain ] || stop_server "$how"
    local wall
    wall=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.1f", e - s }')
    printf '%-16s %-9s %10s %14s %10s\n' "$label" "$ok" "$kills" "${peak} MiB" "$wall s"
    eval "wall_$label=$wall"
}

echo "two concurrent cargo build -j8 (release + debuginfo) of bench/crate-graph; cap $cap"
printf '%-16s %-9s %10s %14s %10s\n' "run" "succeeded" "OOM kills" "peak memory" "wall"
run plain_capped plain yes
[ -n "$sccache" ] && run sccache_capped sccache yes
run cachet_capped cachet yes
run plain_free plain no
[ -n "$sccache" ] && run sccache_free sccache no
run cachet_free cachet no
echo
echo "uncapped: cachet / plain = $(awk -v c="$wall_cachet_free" -v p="$wall_plain_free" 'BEGIN { printf "%.3f", c / p }')"
[ -n "$sccache" ] || echo "(sccache not installed: its rows are left out)"
echo
echo "cachet's own figures, capped:"
cat "$work/cachet_capped.stats"
for f in "$work"/plain_capped.*.log; do
    if grep -q -E 'signal: 9|SIGKILL|Killed' "$f"; then
        echo "plain, capped, $(basename "$f"): $(grep -c -E 'signal: 9|SIGKILL|Killed' "$f") lines name a kill"
    fi
done
