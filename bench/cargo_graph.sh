#!/usr/bin/env bash
# Builds a real crate graph from crates.io (bench/crate-graph: ~80 crates with proc-macros,
# build scripts and C compiled through cc-rs) plainly, through sccache and through cachet,
# each cold (empty cache) and warm (`cargo clean`, cache kept), in one run, and prints the
# wall times, the ratios and the hit counts.
#
# Usage: RUNS=5 bench/cargo_graph.sh   (needs: scripts/build-release; cargo install sccache)
# RUNS cold builds each way (default 1), plain and cachet in turn (the order swapped every
# round); a cold cachet build is timed up to the end of `cachet --flush` (its cache writes
# done); medians and spreads, the server's own CPU time per cold build, and the wall time
# per CPU-second of the build's own work, which takes the machine's drift out.
# Each cold build gets a new target directory (and a cachet one a new cache directory);
# nothing is deleted until the end, so the bench needs about 0.5 GB of disk per cold build.
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

export CARGO_INCREMENTAL=0
unset RUSTC_WRAPPER CC CXX CC_KNOWN_WRAPPER_CUSTOM
declare -A wall
declare -A runs_of   # label -> space-separated wall times of every run
declare -A target_of # label -> the target directory of its last build
fresh=0

now() { date +%s.%N; }
build() { # label, then env assignments for cargo; a cold cachet build waits for its cache
          # writes (`cachet --flush`) inside the timer, so deferring work gains nothing
    local label=$1; shift
    # A cold build into a new directory: deleting the last build's files (and the last
    # cache) just before the timer starts made this VM's ext4, which has no journal, skip
    # past every inode freed in the last 30 s (`recently_deleted`) for each file the build
    # then created, and a cachet build had its cache's files freed as well. A warm build
    # cleans the directory of the cold build it follows, as a user's `cargo clean` would.
    case $label in
        *-cold) fresh=$((fresh + 1)); export CARGO_TARGET_DIR="$work/target-$fresh" ;;
        *) cargo clean -q ;;
    esac
    target_of[$label]=$CARGO_TARGET_DIR
    local start end
    start=$(now)
    # bash's `time`: the user + system CPU of cargo and everything it waited for (rustc,
    # build scripts, cc, and cachet's clients with what they ran themselves).
    local TIMEFORMAT='%U %S'
    { time env "$@" cargo build -q >"$work/$label.log" 2>&1 || { cat "$work/$label.log"; exit 1; }; } 2>"$work/$label.cpu"
    case $label in cachet-cold) "$cachet" --flush >>"$quiet" 2>&1 ;; esac
    end=$(now)
    wall[$label]=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f", e - s }')
    runs_of[$label]="${runs_of[$label]:-} ${wall[$label]}"
    local work_cpu cpu=""
    work_cpu=$(awk '{ printf "%.2f", $1 + $2 }' "$work/$label.cpu")
    if [ "$label" = cachet-cold ]; then
        # The server's own CPU time (user + system) over this build, its compilers not
        # counted: steadier than wall time on a machine whose speed drifts.
        # Also as a share of its compilers' CPU (its reaped children): a slower spell of
        # the machine stretches both alike.
        local share compilers
        read -r cpu share compilers <<<"$(server_cpu)"
        runs_of[server-cpu]="${runs_of[server-cpu]:-} $cpu"
        runs_of[server-share]="${runs_of[server-share]:-} $share"
        work_cpu=$(awk -v a="$work_cpu" -v b="$compilers" 'BEGIN { printf "%.2f", a + b }')
        cpu="  (server CPU $cpu s, $share% of its compilers')"
    fi
    case $label in
        plain-cold | cachet-cold)
            # Wall seconds per 100 CPU-seconds of the build's own work (compilers, build
            # scripts, cargo; cachet's server not counted, its clients counted; not for
            # sccache, whose compilers are its server's children, out of sight): the same
            # work either way, so a slower spell of the machine, which stretches the wall
            # time and that CPU alike, cancels out, and what cachet adds stays.
            local per
            per=$(awk -v w="${wall[$label]}" -v c="$work_cpu" 'BEGIN { printf "%.3f", 100 * w / c }')
            runs_of[$label-per-cpu]="${runs_of[$label-per-cpu]:-} $per"
            cpu="  work CPU $work_cpu s, $per s per 100 CPU-s$cpu" ;;
    esac
    printf '%-14s %8s s%s\n' "$label" "${wall[$label]}" "$cpu"
}
# The running server's CPU time so far (seconds), that as a percentage of the CPU of the
# children it reaped (the compilers it ran), and those children's CPU time (seconds), from
# its stats (`server_cpu_ms`, `compilers_cpu_ms`).
server_cpu() {
    "$cachet" --show-stats --json | awk -F: '
        /"server_cpu_ms"/ { gsub(/[ ,]/, "", $2); own = $2 }
        /"compilers_cpu_ms"/ { gsub(/[ ,]/, "", $2); kids = $2 }
        END { printf "%.2f %.2f %.2f", own / 1000, kids ? 100 * own / kids : 0, kids / 1000 }'
}
# Median and spread (min-max) of a label's runs.
summary() {
    echo "${runs_of[$1]}" | tr ' ' '\n' | grep . | sort -n | awk '
        { v[NR] = $1 } END {
            m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "%.2f %.2f %.2f", m, v[1], v[NR] }'
}

runs=${RUNS:-1}
export CACHET_RUNTIME_DIR="$work/cachet-run"
wrap=(RUSTC_WRAPPER="$cachet" CC="$cachet cc" CXX="$cachet c++" CC_KNOWN_WRAPPER_CUSTOM=cachet)
# Cold runs, plain and cachet in turn, the order swapped every round (plain first, then
# cachet first...), so a machine that speeds up or slows down over the run favours
# neither; each cachet run starts from a new, empty cache directory and a fresh server.
cachet_cold() {
    "$cachet" --stop-server >>"$quiet" 2>&1 || true
    export CACHET_DIR="$work/cachet-$1"
    "$cachet" --start-server >>"$quiet"
    build cachet-cold "${wrap[@]}"
}
for round in $(seq "$runs"); do
    if [ $((round % 2)) = 1 ]; then
        build plain-cold X=1
        cachet_cold "$round"
    else
        cachet_cold "$round"
        build plain-cold X=1
    fi
done
# Warm: each into the directory of its last cold build, cleaned; cachet's cache (the last
# cold build's) kept.
export CARGO_TARGET_DIR="${target_of[plain-cold]}"
build plain-warm X=1

"$cachet" --zero-stats >>"$quiet"
export CARGO_TARGET_DIR="${target_of[cachet-cold]}"
build cachet-warm "${wrap[@]}"
stats=$("$cachet" --show-stats --json)
"$cachet" --show-stats | grep -E 'hits/misses|^Uncacheable|^  [a-z]|Average hit' || true
"$cachet" --stop-server >>"$quiet"

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

hits=$(echo "$stats" | awk -F: '/"cache_hits"/{gsub(/[ ,]/,"",$2); print $2; exit}')
misses=$(echo "$stats" | awk -F: '/"cache_misses"/{gsub(/[ ,]/,"",$2); print $2; exit}')
echo
echo "warm-build hits: cachet $hits (misses $misses)${sccache:+, sccache ${sccache_hits:-?} (misses ${sccache_misses:-?})}"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
read -r plain_med plain_min plain_max <<<"$(summary plain-cold)"
read -r cold_med cold_min cold_max <<<"$(summary cachet-cold)"
echo "cold, $runs run(s) each: plain median $plain_med s ($plain_min-$plain_max)," \
    "cachet (build + flush) median $cold_med s ($cold_min-$cold_max)"
echo "cachet cold / plain cold (medians): $(ratio "$cold_med" "$plain_med")"
read -r pp_med pp_min pp_max <<<"$(summary plain-cold-per-cpu)"
read -r cp_med cp_min cp_max <<<"$(summary cachet-cold-per-cpu)"
echo "wall s per 100 CPU-s of the build's work: plain median $pp_med ($pp_min-$pp_max)," \
    "cachet median $cp_med ($cp_min-$cp_max)"
echo "  cachet / plain, drift taken out (medians): $(ratio "$cp_med" "$pp_med")"
read -r cpu_med cpu_min cpu_max <<<"$(summary server-cpu)"
echo "cachet server CPU per cold build:   median $cpu_med s ($cpu_min-$cpu_max)"
read -r share_med share_min share_max <<<"$(summary server-share)"
echo "  as a share of its compilers' CPU:  median $share_med% ($share_min-$share_max)"
echo "cachet warm / plain cold:           $(ratio "${wall[cachet-warm]}" "$plain_med")"
if [ -n "$sccache" ]; then
    echo "cachet warm / sccache warm: $(ratio "${wall[cachet-warm]}" "${wall[sccache-warm]}")"
    echo "cachet cold / sccache cold: $(ratio "$cold_med" "${wall[sccache-cold]}")"
fi
