#!/usr/bin/env python3
"""Hit and miss overhead of one C compile: plain gcc, cachet, ccache and sccache, in one run.

For each tool it runs the same `gcc -O2 -c` of bench/sample.c many times, cold (a forced
miss that compiles and stores) and warm (a hit), and reports the median wall time and the
mean CPU time per compile. CPU time counts the client *and* the tool's server (read from
/proc), since cachet and sccache do their work in a daemon. Ratios compare cachet with
ccache and sccache.

Usage: bench/c_overhead.py [--runs N] [--hit-runs N] [--cachet PATH] [--source FILE]
Tools that are not installed are left out (ccache: apt-get install ccache; sccache:
cargo install sccache).
"""

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid):
    """CPU of a process and of the children it reaped (the compilers a server ran), in
    seconds (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        # utime, stime, cutime, cstime
        return sum(int(f) for f in fields[11:15]) / TICK
    except (FileNotFoundError, IndexError, ValueError):
        return 0.0


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def quiet_log(work):
    """Where a bench sends what it does not show: a log in its own temp dir."""
    return open(Path(work) / "quiet.log", "ab")


def measure(label, argv, env, runs, cwd, server_pid=None, before_each=None):
    walls = []
    cpu0, srv0 = children_cpu(), proc_cpu(server_pid) if server_pid else 0.0
    with quiet_log(cwd) as quiet:
        for _ in range(runs):
            if before_each:
                before_each()
            start = time.perf_counter()
            subprocess.run(argv, env=env, cwd=cwd, check=True, stdout=quiet, stderr=quiet)
            walls.append(time.perf_counter() - start)
    client = (children_cpu() - cpu0) / runs
    server = ((proc_cpu(server_pid) - srv0) / runs) if server_pid else 0.0
    return {"label": label, "wall": statistics.median(walls), "cpu": client + server,
            "client_cpu": client, "server_cpu": server}


def server_pid_of(name):
    out = subprocess.run(["pgrep", "-n", "-f", name], capture_output=True, text=True)
    return int(out.stdout.split()[0]) if out.stdout.strip() else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40)
    # Hits are cheap, and server CPU comes in 10 ms ticks: many runs make it resolve to
    # a few hundredths of a millisecond.
    ap.add_argument("--hit-runs", type=int, default=300)
    ap.add_argument("--cachet", default=str(ROOT / "target/dist/cachet"))
    ap.add_argument("--source", default=str(ROOT / "bench/sample.c"))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cachet-bench-"))
    quiet = quiet_log(work)
    shutil.copy(args.source, work / "sample.c")
    compile_args = ["gcc", "-O2", "-c", "sample.c", "-o", "sample.o"]
    base = dict(os.environ)
    for var in ("MAKEFLAGS", "MFLAGS", "CARGO_MAKEFLAGS"):
        base.pop(var, None)
    results = []

    results.append(measure("plain gcc", compile_args, base, args.runs, work))

    cachet_env = dict(base, CACHET_DIR=str(work / "cachet-cache"),
                      CACHET_RUNTIME_DIR=str(work / "cachet-run"), CACHET_IDLE_TIMEOUT="600")
    cachet = [args.cachet] + compile_args
    subprocess.run([args.cachet, "--start-server"], env=cachet_env, check=True, stdout=quiet)
    subprocess.run(cachet, env=cachet_env, cwd=work, check=True)  # warm the compiler identity
    pid = server_pid_of(f"{args.cachet} --internal-run-server")
    results.append(measure("cachet miss", cachet, dict(cachet_env, CACHET_RECACHE="1"),
                           args.runs, work, pid))
    results.append(measure("cachet hit", cachet, cachet_env, args.hit_runs, work, pid))
    results.append(measure("cachet hit (preprocessor)", cachet,
                           dict(cachet_env, CACHET_DIRECT_MODE="0"), args.runs, work, pid))
    subprocess.run([args.cachet, "--stop-server"], env=cachet_env, stdout=quiet)

    if shutil.which("ccache"):
        cc_env = dict(base, CCACHE_DIR=str(work / "ccache"))
        ccache = ["ccache"] + compile_args
        subprocess.run(ccache, env=cc_env, cwd=work, check=True)
        results.append(measure("ccache miss", ccache, dict(cc_env, CCACHE_RECACHE="1"),
                               args.runs, work))
        results.append(measure("ccache hit (direct)", ccache, cc_env, args.hit_runs, work))
        results.append(measure("ccache hit (preprocessor)", ccache,
                               dict(cc_env, CCACHE_NODIRECT="1"), args.runs, work))

    sccache_bin = shutil.which("sccache")
    if sccache_bin:
        sc_env = dict(base, SCCACHE_DIR=str(work / "sccache"), SCCACHE_IDLE_TIMEOUT="600",
                      SCCACHE_SERVER_PORT="4299")
        sccache = [sccache_bin] + compile_args
        subprocess.run([sccache_bin, "--start-server"], env=sc_env, check=True, stdout=quiet)
        subprocess.run(sccache, env=sc_env, cwd=work, check=True)
        pid = server_pid_of("sccache")
        results.append(measure("sccache miss", sccache, dict(sc_env, SCCACHE_RECACHE="1"),
                               args.runs, work, pid))
        results.append(measure("sccache hit", sccache, sc_env, args.hit_runs, work, pid))
        subprocess.run([sccache_bin, "--stop-server"], env=sc_env, stdout=quiet)

    by = {r["label"]: r for r in results}
    print(f"`gcc -O2 -c sample.c` in {work}: {args.runs} runs of each miss and "
          f"preprocessor-mode hit, {args.hit_runs} of each direct hit")
    print(f"{'':28} {'wall (median)':>14} {'CPU/compile':>12} {'client CPU':>11} {'server CPU':>11}")
    for r in results:
        print(f"{r['label']:28} {r['wall']*1000:11.2f} ms {r['cpu']*1000:9.2f} ms "
              f"{r['client_cpu']*1000:8.2f} ms {r['server_cpu']*1000:8.2f} ms")
    plain = by["plain gcc"]
    print()
    print(f"cachet miss / plain gcc (wall): {by['cachet miss']['wall'] / plain['wall']:.2f}")
    print(f"cachet hit  / plain gcc (wall): {by['cachet hit']['wall'] / plain['wall']:.3f}")
    if "ccache hit (preprocessor)" in by:
        ours, pre = by["cachet hit (preprocessor)"], by["ccache hit (preprocessor)"]
        print(f"cachet/ccache hit, both in preprocessor mode: wall "
              f"{ours['wall'] / pre['wall']:.2f}, CPU {ours['cpu'] / pre['cpu']:.2f}")
    # cachet's hit is a direct-mode hit (the default), as are ccache's and sccache's.
    for peer, hit in (("ccache", "ccache hit (direct)"), ("sccache", "sccache hit")):
        if hit in by:
            print(f"cachet/{peer} hit: wall {by['cachet hit']['wall'] / by[hit]['wall']:.2f}, "
                  f"CPU {by['cachet hit']['cpu'] / by[hit]['cpu']:.2f}; "
                  f"miss: wall {by['cachet miss']['wall'] / by[peer + ' miss']['wall']:.2f}")
    quiet.close()
    shutil.rmtree(work, ignore_errors=True)
    project_bench(args)


def project_bench(args):
    """`make -j2` of a multi-file project (tests/fixtures/cproject, -MMD -MP) through each
    tool: cold (empty cache) and warm (out/ deleted, cache kept), median of several runs."""
    src = ROOT / "crates/cachet/tests/fixtures/cproject"
    runs = max(3, args.runs // 8)
    rows = []
    tools = [("plain gcc", [], {})]
    tools.append(("cachet", [args.cachet], {"CACHET_DEPEND_MODE": "1"}))
    if shutil.which("ccache"):
        tools.append(("ccache", ["ccache"], {"CCACHE_DEPEND": "1"}))
    if shutil.which("sccache"):
        tools.append(("sccache", [shutil.which("sccache")], {"SCCACHE_SERVER_PORT": "4304"}))
    for label, wrapper, extra in tools:
        work = Path(tempfile.mkdtemp(prefix="cachet-project-"))
        quiet = quiet_log(work)
        shutil.copytree(src, work / "p")
        env = dict(os.environ, CACHET_DIR=str(work / "c1"), CACHET_RUNTIME_DIR=str(work / "r"),
                   CCACHE_DIR=str(work / "c2"), SCCACHE_DIR=str(work / "c3"), **extra)
        for var in ("MAKEFLAGS", "MFLAGS", "CARGO_MAKEFLAGS"):
            env.pop(var, None)
        cc = " ".join(wrapper + ["gcc"])
        make = ["make", "-s", "-j2", f"CC={cc}"]

        def build(cold):
            shutil.rmtree(work / "p" / "out", ignore_errors=True)
            if cold:
                for d in ("c1", "c2", "c3"):
                    shutil.rmtree(work / d, ignore_errors=True)
                if wrapper and "cachet" in wrapper[0]:
                    subprocess.run([wrapper[0], "--stop-server"], env=env, stdout=quiet)
            start = time.perf_counter()
            subprocess.run(make, cwd=work / "p", env=env, check=True, stdout=quiet, stderr=quiet)
            return time.perf_counter() - start

        cold = statistics.median(build(True) for _ in range(runs))
        warm = statistics.median(build(False) for _ in range(runs))
        rows.append((label, cold, warm))
        if wrapper and "cachet" in wrapper[0]:
            subprocess.run([wrapper[0], "--stop-server"], env=env, stdout=quiet)
        if wrapper and "sccache" in wrapper[0]:
            subprocess.run([wrapper[0], "--stop-server"], env=env, stdout=quiet)
        quiet.close()
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"make -j2 of tests/fixtures/cproject (6 objects + link), median of {runs} runs")
    print(f"{'':12} {'cold':>10} {'warm':>10}")
    for label, cold, warm in rows:
        print(f"{label:12} {cold*1000:7.1f} ms {warm*1000:7.1f} ms")
    by = {label: (cold, warm) for label, cold, warm in rows}
    for peer in ("ccache", "sccache"):
        if peer in by:
            print(f"cachet/{peer}: cold {by['cachet'][0] / by[peer][0]:.2f}, warm {by['cachet'][1] / by[peer][1]:.2f}")


if __name__ == "__main__":
    main()
