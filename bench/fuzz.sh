#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets, one per parser of untrusted bytes) for
# SECONDS each under libFuzzer, one after another, and prints a table: target, executions,
# executions per second, corpus size, and whether it found a crash.
#
# Usage: bench/fuzz.sh SECONDS [TARGET...]
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
#
# Each run starts from the committed corpus (fuzz/corpus/TARGET) and grows a scratch copy
# in target/fuzz-work/TARGET: new inputs are not committed unless someone copies the few
# that matter (`cargo +nightly fuzz cmin` keeps a corpus small). A crash leaves its input
# in fuzz/artifacts/TARGET/; fix it, and commit the input under fuzz/regressions/TARGET/
# named after what it broke: CI replays it through the same function from then on.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
seconds=${1:?usage: bench/fuzz.sh SECONDS [TARGET...]}
shift
cd "$root/fuzz"
targets=("$@")
if [ ${#targets[@]} = 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
mkdir -p "$root/target/fuzz-work"
cargo +nightly fuzz build -O >"$root/target/fuzz-work/build.log" 2>&1 || { tail -20 "$root/target/fuzz-work/build.log" >&2; exit 1; }
echo "commit $(git -C "$root" rev-parse --short HEAD), ${seconds}s per target"
printf '%-16s %12s %10s %8s  %s\n' target executions "exec/s" corpus result
status=0
for t in "${targets[@]}"; do
    work="$root/target/fuzz-work/$t"
    mkdir -p "$work" "$root/fuzz/artifacts/$t"
    log="$root/target/fuzz-work/$t.log"
    if cargo +nightly fuzz run -O "$t" "$work" "$root/fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 -close_fd_mask=3 >"$log" 2>&1; then
        result=ok
    else
        result="CRASH (see $log, fuzz/artifacts/$t)"
        status=1
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    printf '%-16s %12s %10s %8s  %s\n' "$t" "${runs:-?}" "${rate:-?}" "$(ls "$work" | wc -l)" "$result"
done
exit "$status"
