#!/usr/bin/env bash
# Real C projects through cachet, from sources the package registries carry: how much of
# each build is cached, how much of it in direct mode, and whether every output is the one
# a plain build writes.
#
#   lua     Lua 5.4.8 from the crate lua-src (crates.io), built by a hand-written Makefile
#           (the script writes it) with -MMD -MP and `make -j2 CC="cachet gcc"`
#   zlib-ng zlib-ng from the crate libz-sys (crates.io), its own CMakeLists.txt, Ninja,
#           -DCMAKE_C_COMPILER_LAUNCHER=cachet
#   pkgconf pkgconf from the PyPI sdist `pkgconf` (its subprojects/pkgconf), its own meson.build,
#           CC="cachet gcc" meson setup, ninja
#   linux   Debian's linux-source: make tinyconfig, then make -j2 CC="cachet gcc"; only when
#           /usr/src/linux-source-*.tar.* exists, or with --kernel (which apt-get installs
#           linux-source flex bison bc libelf-dev if missing). Bench only, never CI.
#
# Each project is unpacked twice, at two paths of different lengths (the second checkout).
# Every step builds into a fresh build directory, first plainly (the reference), then
# through cachet at the very same path, and compares every .o and .d byte for byte:
#   cold        checkout 1, build dir b1, empty cache             every compile a miss, stored
#   warm-dir    checkout 1, build dir b2                          every compile a direct hit
#   warm-path   checkout 2, build dir b1                          every compile a direct hit
#   gmap-cold   checkout 1, -g -ffile-prefix-map=<checkout>=.     (fills the cache)
#   gmap-path   checkout 2, -g -ffile-prefix-map=<checkout>=.     every compile a direct hit
#   g-cold      checkout 1, -g                                    (fills the cache)
#   g-path      checkout 2, -g: the objects record the checkout   every compile must miss
# The kernel runs the first three only. Each cachet build sets CACHET_BASE_DIRS to its own
# checkout. Statistics are zeroed after the configure step (cmake, meson setup, tinyconfig),
# so only the build's own compiles are counted; `-c` compiles are counted by a tiny wrapper
# in front of the compiler (it only counts, then execs the rest of its command line).
#
# Usage: bench/real_projects.sh [--only lua,zlib-ng,pkgconf,linux] [--kernel|--no-kernel]
#                               [--jobs N] [--keep]
#   CACHET=path/to/cachet (default: target/dist/cachet, made by scripts/build-release)
# Needs gcc, make, python3 with pip, and cargo unless cargo's download cache already holds the
# two crates (`cargo fetch` gets them); cmake, meson and ninja are pip-installed into a venv
# in the work dir when missing. Sources are pinned by version and sha256. Everything lives
# in one mktemp -d work dir, removed on exit (--keep keeps it); the cachet server it starts
# is private to that dir (cache, runtime dir, empty config) and stopped on exit.
set -euo pipefail
shopt -s inherit_errexit
root="$(cd "$(dirname "$0")/.." && pwd)"
CACHET=${CACHET:-$root/target/dist/cachet}

only="lua,zlib-ng,pkgconf,linux" kernel=auto keep=0 jobs=2
while [ $# -gt 0 ]; do
    case $1 in
        --only) only=$2; shift 2 ;;
        --only=*) only=${1#*=}; shift ;;
        --kernel) kernel=yes; shift ;;
        --no-kernel) kernel=no; shift ;;
        --jobs) jobs=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
wanted() { [[ ",$only," == *",$1,"* ]]; }

if [ ! -x "$CACHET" ]; then
    echo "no cachet binary at $CACHET: build it first with scripts/build-release (or set CACHET=...)" >&2
    exit 1
fi
for tool in gcc make python3 sha256sum cmp ar; do
    command -v "$tool" >/dev/null || { echo "needs $tool on PATH" >&2; exit 1; }
done

# Nothing from the caller's environment may steer the builds or cachet.
for v in $(compgen -e); do
    case $v in CACHET_*|CFLAGS|CPPFLAGS|CXXFLAGS|LDFLAGS|CC|CXX|MAKEFLAGS|MFLAGS|MAKELEVEL|KCFLAGS) unset "$v" ;; esac
done

started=$(date +%s)
work="$(mktemp -d "${TMPDIR:-/tmp}/cachet-real-projects.XXXXXX")"
quiet="$work/quiet.log"   # what cachet's management commands print that the bench does not show
server_started=0 server_pid=""
cleanup() {
    local rc=$?
    if [ "$server_started" = 1 ]; then
        "$work/bin/cachet" --stop-server >>"$quiet" 2>&1 || true
        for _ in $(seq 50); do
            if [ -z "$server_pid" ] || ! kill -0 "$server_pid" 2>/dev/null; then break; fi
            sleep 0.2
        done
        if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
            echo "cachet server $server_pid did not stop; killing it" >&2
            kill "$server_pid" 2>/dev/null || true
        fi
    fi
    if [ "$keep" = 1 ]; then echo "work dir kept: $work" >&2; else rm -rf "$work"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$work/bin" "$work/dl" "$work/tmp" "$work/logs" "$work/src" "$work/elsewhere/second-checkout" "$work/ref"
# A copy, so that a rebuild of target/dist/cachet during the run cannot mix two versions.
cp "$CACHET" "$work/bin/cachet"
cat > "$work/bin/ccount" <<'EOF'
#!/bin/sh
# Counts a compile with -c into $CCOUNT_LOG, then runs the rest of its command line.
for a; do if [ "$a" = -c ]; then echo >>"$CCOUNT_LOG"; break; fi; done
exec "$@"
EOF
chmod +x "$work/bin/ccount"
cat > "$work/bin/stats.py" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))["counters"]
unc = c["uncacheable"]
link = sum(v for k, v in unc.items() if k.startswith("linking"))
print(c["cache_hits"], c["direct_hits"], c["cache_misses"], sum(c["not_stored"].values()),
      c["compile_failures"], sum(unc.values()) - link, c["unobserved_compiles"], sep="\t")
why = [f"uncacheable {k}: {v}" for k, v in unc.items() if not k.startswith("linking")]
why += [f"not stored ({k}): {v}" for k, v in c["not_stored"].items()]
print("; ".join(why))
EOF
export PATH="$work/bin:$PATH"
export PIP_CACHE_DIR="$work/pip-cache" TMPDIR="$work/tmp"   # pip's downloads and builds stay in the work dir too
export CACHET_DIR="$work/cache" CACHET_RUNTIME_DIR="$work/run" CACHET_CONFIG="$work/cachet.toml"
export CACHET_IDLE_TIMEOUT=3600   # a safety net only: the trap stops the server
: > "$CACHET_CONFIG"               # an empty config: the user's file is not read
cachet="$work/bin/cachet"
server_started=1
"$cachet" --start-server >>"$quiet" 2>&1 || { cat "$quiet" >&2; exit 1; }
server_pid=$("$cachet" --show-stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["server_pid"])')
observation=$("$cachet" --show-stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["observation"])')
echo "cachet $("$cachet" --version | awk '{print $2}') from $CACHET; observation: $observation; work dir $work"

now() { date +%s.%N; }
secs() { awk -v s="$1" -v e="$2" 'BEGIN { printf "%.1f", e - s }'; }
note() { echo "  $*"; }
fail_log() { echo "  ---- last lines of $1:" >&2; tail -n 25 "$1" | sed 's/^/  | /' >&2; }

# ---------------------------------------------------------------- sources
# Fetched by package name with the registries' own clients (cargo, pip), pinned by version
# and checked against a pinned sha256.

. "$root/bench/lib/sources.sh"   # fetch_crate

# sdist NAME VERSION FILENAME SHA256 -> path in $work/dl, by `pip download` (which also
# prepares the sdist's metadata, in an isolated environment under the work dir)
fetch_sdist() {
    local name=$1 ver=$2 file=$3 sum=$4 out="$work/dl/$3"
    python3 -m pip download -q --no-deps --no-binary "$name" -d "$work/dl" "$name==$ver" >&2 || return 1
    if ! echo "$sum  $out" | sha256sum -c --status; then
        echo "the sdist $file fetched by pip is not the pinned one (sha256 $sum)" >&2
        return 1
    fi
    echo "$out"
}

build_tools_ready=""
ensure_build_tools() { # cmake, meson and ninja: the machine's, else pip-installed into a venv
    [ -z "$build_tools_ready" ] || return "$build_tools_ready"
    if command -v cmake >/dev/null && command -v meson >/dev/null && command -v ninja >/dev/null; then
        build_tools_ready=0
    elif python3 -m venv "$work/venv" >>"$work/logs/venv.log" 2>&1 &&
         "$work/venv/bin/pip" install -q cmake ninja meson >>"$work/logs/venv.log" 2>&1; then
        export PATH="$PATH:$work/venv/bin"   # after the machine's own tools
        build_tools_ready=0
    else
        fail_log "$work/logs/venv.log"
        build_tools_ready=1
    fi
    return "$build_tools_ready"
}

# ---------------------------------------------------------------- projects
# Each project has P_configure and P_build, called as: CHECKOUT BUILD_DIR CC EXTRA_CFLAGS
# (CC is the compiler command: "ccount gcc" or "ccount cachet gcc"; BUILD_DIR is relative
# to the checkout), and P_prune: build-dir paths whose objects the build step did not
# compile through CC (left out of the comparison).

lua_configure() { mkdir -p "$1/$2"; }
lua_build() { make -C "$1" -j"$jobs" OUT="$2" CC="$3" EXTRA_CFLAGS="$4"; }
# shellcheck disable=SC2034 # read through a nameref in run_step
lua_prune=()

zlib_ng_prepare() {
    local crate
    ensure_build_tools || return 1
    crate=$(fetch_crate libz-sys 1.1.23 15d118bbf3771060e7311cc7bb0545b01d08a8b4a7de949198dec1fa0ca1c0f7) || return 1
    tar -xzf "$crate" -C "$work/dl" libz-sys-1.1.23/src/zlib-ng || return 1
    mv "$work/dl/libz-sys-1.1.23/src/zlib-ng" "$work/src/zlib-ng" || return 1
    checkout="$work/src/zlib-ng"
}
zlib_ng_configure() { # the launcher is "ccount" or "ccount;cachet"
    local launcher=${3% gcc}
    cmake -S "$1" -B "$1/$2" -G Ninja -DCMAKE_C_COMPILER=gcc -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_C_COMPILER_LAUNCHER="${launcher// /;}" -DCMAKE_C_FLAGS="$4" \
        -DBUILD_SHARED_LIBS=OFF -DZLIB_ENABLE_TESTS=OFF -DZLIBNG_ENABLE_TESTS=OFF -DWITH_GTEST=OFF
}
zlib_ng_build() { ninja -C "$1/$2" -j"$jobs" -v; }
# shellcheck disable=SC2034 # read through a nameref in run_step
zlib_ng_prune=('./CMakeFiles/[0-9]*')   # cmake's compiler identification, compiled without the launcher

pkgconf_prepare() {
    local sdist
    ensure_build_tools || return 1
    sdist=$(fetch_sdist pkgconf 3.0.7.post0 pkgconf-3.0.7.post0.tar.gz 26db22dbba85a818604ff49260c98748af9ded2d145eb6688dbc6ace055a1668) || return 1
    tar -xzf "$sdist" -C "$work/dl" pkgconf-3.0.7.post0/subprojects/pkgconf || return 1
    mv "$work/dl/pkgconf-3.0.7.post0/subprojects/pkgconf" "$work/src/pkgconf" || return 1
    checkout="$work/src/pkgconf"
}
pkgconf_configure() {
    (cd "$1" && CC="$3" meson setup "$2" --buildtype=release -Dc_args="$4")
}
pkgconf_build() { ninja -C "$1/$2" -j"$jobs" -v; }
# shellcheck disable=SC2034 # read through a nameref in run_step
pkgconf_prune=(./meson-private)

linux_tarball() { { compgen -G '/usr/src/linux-source-*.tar.*' || true; } | sort -V | tail -n 1; }
linux_tools_missing() {
    local t missing=()
    for t in flex bison bc; do command -v "$t" >/dev/null || missing+=("$t"); done
    [ -f /usr/include/libelf.h ] || missing+=(libelf-dev)
    echo "${missing[*]}"
}
linux_prepare() {
    local tarball top
    tarball=$(linux_tarball)
    [ -n "$tarball" ] || return 1
    top=$(tar -tf "$tarball" | head -n 1 | cut -d/ -f1)
    tar -xf "$tarball" -C "$work/src" || return 1
    checkout="$work/src/$top"
}
linux_kbuild() { # checkout build_dir cc extra target...
    local co=$1 b=$2 cc=$3 extra=$4; shift 4
    make -C "$co" O="$b" CC="$cc" HOSTCC=gcc KCFLAGS="$extra" \
        KBUILD_BUILD_TIMESTAMP="Thu Jan  1 00:00:00 UTC 2026" KBUILD_BUILD_USER=bench \
        KBUILD_BUILD_HOST=bench KBUILD_BUILD_VERSION=1 "$@"
}
linux_configure() { linux_kbuild "$1" "$2" "$3" "$4" tinyconfig; }
linux_build() { linux_kbuild "$1" "$2" "$3" "$4" -j"$jobs"; }
# shellcheck disable=SC2034 # read through a nameref in run_step
linux_prune=(./scripts ./tools)   # host programs, built by HOSTCC

# ---------------------------------------------------------------- measuring

outputs() { # build dir, prune patterns... -> relative paths of its .o and .d files, sorted
    local dir=$1; shift
    local prune=() p
    for p in "$@"; do prune+=(-path "$p" -prune -o); done
    (cd "$dir" && find . "${prune[@]}" -type f \( -name '*.o' -o -name '*.d' \) -print | LC_ALL=C sort)
}

# compare REF_DIR REF_LIST CAND_DIR CAND_LIST DIFF_LIST -> "same N/N" or "DIFF k/N"
compare_outputs() {
    local ref=$1 ref_list=$2 cand=$3 cand_list=$4 diffs=$5 p total=0 same=0
    : > "$diffs"
    while read -r p; do
        total=$((total + 1))
        if [ -f "$cand/$p" ] && cmp -s "$ref/$p" "$cand/$p"; then
            same=$((same + 1))
        else
            echo "$p" >> "$diffs"
        fi
    done < "$ref_list"
    while read -r p; do
        echo "only through cachet: $p" >> "$diffs"; total=$((total + 1))
    done < <(LC_ALL=C comm -13 "$ref_list" "$cand_list")
    if [ "$same" = "$total" ]; then echo "same $same/$total"; else echo "DIFF $((total - same))/$total"; fi
}

# records_path A_DIR A_LIST B_DIR -> "k/N": objects of plain build A that differ from plain
# build B's at the same relative path (they record the checkout or the build dir)
records_path() {
    local a=$1 list=$2 b=$3 p n=0 all=0
    while read -r p; do
        case $p in *.o) ;; *) continue ;; esac
        all=$((all + 1))
        cmp -s "$a/$p" "$b/$p" 2>/dev/null || n=$((n + 1))
    done < "$list"
    echo "$n/$all"
}

pct() { if [ "$2" -gt 0 ]; then awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f%%", 100 * a / b }'; else echo "-"; fi; }

rows="$work/rows.tsv"
: > "$rows"
row() { local IFS=$'\t'; printf '%s\n' "$*" >> "$rows"; }

# run_step PROJECT STEP CHECKOUT BUILD_DIR EXTRA_CFLAGS SOURCE_STEP EXPECT
#   SOURCE_STEP: the step that filled the cache for this one (- for none)
#   EXPECT: stored (every compile a stored miss), hit (every compile a direct hit),
#   miss (every compile a miss: the objects record the checkout)
# Sets plain_failed=1 when the plain build failed (the project cannot be measured).
plain_failed=0
run_step() {
    local p=$1 step=$2 co=$3 b=$4 extra=$5 source=$6 expect=$7
    local fn=${p//-/_} log="$work/logs/$p-$step" ref="$work/ref/$p/$step"
    # shellcheck disable=SC2178 # a nameref to the project's prune array
    local -n prune="${fn}_prune"
    local t0 t1 plain_s cachet_s plain_count built=1
    export CACHET_BASE_DIRS="$co"
    mkdir -p "$work/ref/$p"
    plain_failed=0

    # The plain reference, at the very path the cachet build will use.
    rm -rf "${co:?}/$b"
    export CCOUNT_LOG="$log.plain.count"
    if ! "${fn}_configure" "$co" "$b" "ccount gcc" "$extra" > "$log.plain.configure.log" 2>&1; then
        fail_log "$log.plain.configure.log"; row "$p" "$step" "plain configure failed"; plain_failed=1; return 0
    fi
    : > "$CCOUNT_LOG"
    t0=$(now)
    if ! "${fn}_build" "$co" "$b" "ccount gcc" "$extra" > "$log.plain.log" 2>&1; then
        fail_log "$log.plain.log"; row "$p" "$step" "plain build failed"; plain_failed=1; return 0
    fi
    t1=$(now); plain_s=$(secs "$t0" "$t1")
    plain_count=$(wc -l < "$CCOUNT_LOG")
    outputs "$co/$b" "${prune[@]}" > "$ref.outputs"
    mv "$co/$b" "$ref"

    # Through cachet, from the same fresh state.
    export CCOUNT_LOG="$log.cachet.count"
    if ! "${fn}_configure" "$co" "$b" "ccount cachet gcc" "$extra" > "$log.cachet.configure.log" 2>&1; then
        fail_log "$log.cachet.configure.log"; row "$p" "$step" "cachet configure FAILED"; rm -rf "${co:?}/$b"; return 0
    fi
    "$cachet" --zero-stats >>"$quiet" 2>&1
    : > "$CCOUNT_LOG"
    t0=$(now)
    "${fn}_build" "$co" "$b" "ccount cachet gcc" "$extra" > "$log.cachet.log" 2>&1 || built=0
    t1=$(now); cachet_s=$(secs "$t0" "$t1")
    "$cachet" --flush >>"$quiet" 2>&1 || true
    "$cachet" --show-stats --json > "$log.stats.json"
    if [ "$built" = 0 ]; then
        fail_log "$log.cachet.log"; row "$p" "$step" "cachet build FAILED"; rm -rf "${co:?}/$b"; return 0
    fi
    outputs "$co/$b" "${prune[@]}" > "$log.outputs"
    local cmpres recpath="-"
    cmpres=$(compare_outputs "$ref" "$ref.outputs" "$co/$b" "$log.outputs" "$log.differ")
    if [ "$source" != - ]; then recpath=$(records_path "$ref" "$ref.outputs" "$work/ref/$p/$source"); fi

    local n hits direct misses notstored failed uncach unobserved why notes=()
    n=$(wc -l < "$CCOUNT_LOG")
    { IFS=$'\t' read -r hits direct misses notstored failed uncach unobserved; IFS= read -r why || true; } \
        < <(python3 "$work/bin/stats.py" "$log.stats.json")
    # The server's uncacheable count includes calls without -c (-E, -S, --version, ...):
    # the -c compiles it passed back are what the others leave.
    uncach=$((n - hits - misses - failed))
    if [ "$n" != "$plain_count" ]; then notes+=("the plain build ran $plain_count -c compiles"); fi
    if [ "$failed" != 0 ]; then notes+=("$failed compile failures"); fi
    if [ "$unobserved" != 0 ]; then notes+=("$unobserved misses not observed whole"); fi
    if [ -n "$why" ]; then notes+=("$why"); fi
    if [ -s "$log.differ" ]; then notes+=("differ: $(head -n 3 "$log.differ" | tr '\n' ' ')"); fi

    local verdict
    case $expect in
        stored) if [ $((hits + misses - notstored)) = "$n" ]; then verdict=ok; else verdict="not all stored"; fi ;;
        hit) local must_miss=${recpath%/*}
             if [ "$hits" = "$n" ] && [ "$direct" = "$n" ]; then verdict=ok
             elif [ "$must_miss" != - ] && [ "$must_miss" -gt 0 ] && [ $((hits + must_miss)) = "$n" ] &&
                  [ "$direct" = "$hits" ]; then verdict="ok: the $must_miss that record the path miss"
             else verdict="below goal"; fi ;;
        miss) if [ "$hits" = 0 ]; then verdict="records path: misses as it must"
              else verdict="WRONG: $hits hits where the objects record the path"; fi ;;
    esac
    if [[ $cmpres != same* ]]; then verdict="OUTPUTS DIFFER; $verdict"; fi
    row "$p" "$step" "$n" "$hits" "$direct" "$misses" "$uncach" \
        "$(pct $((hits + misses - notstored)) "$n")" "$(pct "$hits" "$n")" "$(pct "$direct" "$n")" \
        "$cmpres" "$recpath" "$plain_s" "$cachet_s" "$verdict" "$(IFS=';'; echo "${notes[*]:-}")"
    printf '  %-10s %5s compiles %5s hits (%5s direct) %5s misses  outputs %-14s %s\n' \
        "$step" "$n" "$hits" "$direct" "$misses" "$cmpres" "$verdict"
    rm -rf "${co:?}/$b"
}

run_project() { # name
    local p=$1 fn=${1//-/_} co1 co2 checkout=""
    echo
    echo "== $p"
    if ! "${fn}_prepare" 2>>"$work/logs/fetch.log" || [ -z "$checkout" ]; then
        note "skipped: could not fetch or unpack its source ($work/logs/fetch.log)"
        tail -n 3 "$work/logs/fetch.log" | sed 's/^/  | /'
        row "$p" "-" "skipped: source not fetched"
        return 0
    fi
    co1=$checkout
    co2="$work/elsewhere/second-checkout/$(basename "$co1")"
    cp -a "$co1" "$co2"
    note "checkout 1: $co1"
    note "checkout 2: $co2"
    run_step "$p" cold "$co1" b1 "" - stored
    if [ "$plain_failed" = 1 ]; then note "skipped the rest: its plain build failed"; return 0; fi
    run_step "$p" warm-dir "$co1" b2 "" cold hit
    run_step "$p" warm-path "$co2" b1 "" cold hit
    if [ "$p" = linux ]; then return 0; fi
    run_step "$p" gmap-cold "$co1" g1 "-g -ffile-prefix-map=$co1=." - stored
    run_step "$p" gmap-path "$co2" g1 "-g -ffile-prefix-map=$co2=." gmap-cold hit
    run_step "$p" g-cold "$co1" g2 "-g" - stored
    run_step "$p" g-path "$co2" g2 "-g" g-cold miss
}

for p in lua zlib-ng pkgconf; do
    if wanted "$p"; then
        if [ "$p" != lua ] && ! ensure_build_tools; then
            echo; echo "== $p"; note "skipped: no cmake, meson and ninja, and pip could not install them"
            row "$p" - "skipped: no cmake/meson/ninja"
            continue
        fi
        run_project "$p"
    fi
done

if wanted linux; then
    if [ "$kernel" = yes ] && { [ -z "$(linux_tarball)" ] || [ -n "$(linux_tools_missing)" ]; }; then
        echo
        echo "--kernel: apt-get install linux-source flex bison bc libelf-dev"
        if ! { apt-get update && apt-get install -y linux-source flex bison bc libelf-dev; } > "$work/logs/apt.log" 2>&1; then
            fail_log "$work/logs/apt.log"
        fi
    fi
    if [ "$kernel" = no ]; then
        echo; echo "== linux"; note "skipped: --no-kernel"; row linux - "skipped: --no-kernel"
    elif [ -z "$(linux_tarball)" ]; then
        echo; echo "== linux"
        note "skipped: no /usr/src/linux-source-*.tar.* (apt-get install linux-source, or pass --kernel)"
        row linux - "skipped: no linux-source"
    elif [ -n "$(linux_tools_missing)" ]; then
        echo; echo "== linux"
        note "skipped: kbuild needs $(linux_tools_missing) (apt-get install them, or pass --kernel)"
        row linux - "skipped: missing $(linux_tools_missing)"
    else
        run_project linux
    fi
fi

# ---------------------------------------------------------------- the table
echo
echo "compiles: -c compiles of the build step; stored: cacheable and stored (cold steps);"
echo "hit: served from the cache; direct: direct-mode hits; outputs: .o and .d files equal to the"
echo "plain build's at the same path; rec.path: plain objects that differ from the source step's"
echo "(they record their path or build dir, so they must not be shared). Goal: warm steps 100% hit,"
echo "100% direct, same outputs."
echo
fmt='%-8s %-10s %8s %5s %6s %6s %6s %7s %5s %7s %-14s %8s %7s %7s  %s\n'
# shellcheck disable=SC2059
printf "$fmt" project step compiles hits direct misses uncach stored hit direct outputs rec.path plain_s cachet_s verdict
while IFS=$'\t' read -r p step n hits direct misses uncach stored hit dshare cmpres recpath plain_s cachet_s verdict notes; do
    if [ -z "${hits:-}" ]; then printf '%-8s %-10s %s\n' "$p" "$step" "$n"; continue; fi
    case $step in *cold) hit="-" dshare="-" ;; *) stored="-" ;; esac
    # shellcheck disable=SC2059
    printf "$fmt" "$p" "$step" "$n" "$hits" "$direct" "$misses" "$uncach" "$stored" "$hit" "$dshare" \
        "$cmpres" "$recpath" "$plain_s" "$cachet_s" "$verdict"
    [ -z "$notes" ] || printf '%20s%s\n' "" "$notes"
done < "$rows"
echo
echo "total $(( $(date +%s) - started )) s"
