#!/usr/bin/env python3
"""What one rustc compile costs through cachet and sccache: a forced miss and a hit of
serde_json (a real crates.io library), against plain rustc, in one run.

The command line is the one cargo uses (taken from `cargo build -v` of a scratch project),
run with cargo's environment for that crate. CPU counts the client and the server with
the compilers it ran.

Usage: bench/rustc_overhead.py [--runs N] [--cachet PATH]
"""

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from c_overhead import ROOT, measure, quiet_log, server_pid_of  # noqa: E402


def cargo_command(project):
    """The rustc command (and env) cargo runs for serde_json."""
    out = subprocess.run(["cargo", "build", "-v"], cwd=project, capture_output=True, text=True,
                         env=dict(os.environ, CARGO_INCREMENTAL="0"), check=True)
    for line in out.stderr.splitlines():
        if "--crate-name serde_json " in line and "Running `" in line:
            words = shlex.split(line.split("Running `", 1)[1].rstrip("`"))
            env = {}
            while "=" in words[0] and not words[0].startswith("/"):
                key, value = words.pop(0).split("=", 1)
                env[key] = value
            return words, env
    raise SystemExit("no serde_json compile found in cargo's output")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--cachet", default=str(ROOT / "target/dist/cachet"))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cachet-rustc-bench-"))
    quiet = quiet_log(work)
    project = work / "project"
    subprocess.run(["cargo", "new", "-q", str(project)], check=True)
    with open(project / "Cargo.toml", "a") as f:
        f.write('serde_json = "1"\n')
    words, cargo_env = cargo_command(project)
    out_dir = words[words.index("--out-dir") + 1]
    base = dict(os.environ, **cargo_env)
    for var in ("MAKEFLAGS", "MFLAGS", "CARGO_MAKEFLAGS"):
        base.pop(var, None)
    results = [measure("plain rustc", words, base, max(3, args.runs // 4), project)]

    cachet_env = dict(base, CACHET_DIR=str(work / "cachet"), CACHET_RUNTIME_DIR=str(work / "run"))
    subprocess.run([args.cachet, "--start-server"], env=cachet_env, check=True, stdout=quiet)
    subprocess.run([args.cachet] + words, env=cachet_env, cwd=project, check=True,
                   stdout=quiet, stderr=quiet)
    pid = server_pid_of(f"{args.cachet} --internal-run-server")
    results.append(measure("cachet miss", [args.cachet] + words, dict(cachet_env, CACHET_RECACHE="1"),
                           max(3, args.runs // 4), project, pid))
    results.append(measure("cachet hit", [args.cachet] + words, cachet_env, args.runs, project, pid))
    subprocess.run([args.cachet, "--stop-server"], env=cachet_env, stdout=quiet)

    sccache = shutil.which("sccache")
    if sccache:
        sc_env = dict(base, SCCACHE_DIR=str(work / "sccache"), SCCACHE_SERVER_PORT="4302",
                      SCCACHE_IDLE_TIMEOUT="0")
        subprocess.run([sccache, "--start-server"], env=sc_env, check=True, stdout=quiet)
        subprocess.run([sccache] + words, env=sc_env, cwd=project, check=True,
                       stdout=quiet, stderr=quiet)
        pid = server_pid_of("sccache")
        results.append(measure("sccache miss", [sccache] + words, dict(sc_env, SCCACHE_RECACHE="1"),
                               max(3, args.runs // 4), project, pid))
        results.append(measure("sccache hit", [sccache] + words, sc_env, args.runs, project, pid))
        subprocess.run([sccache, "--stop-server"], env=sc_env, stdout=quiet)

    by = {r["label"]: r for r in results}
    print(f"serde_json through each tool ({args.runs} hits, out-dir {out_dir})")
    print(f"{'':16} {'wall (median)':>14} {'CPU/compile':>12}")
    for r in results:
        print(f"{r['label']:16} {r['wall']*1000:11.1f} ms {r['cpu']*1000:9.1f} ms")
    if "sccache hit" in by:
        print(f"cachet/sccache hit: wall {by['cachet hit']['wall'] / by['sccache hit']['wall']:.2f}, "
              f"CPU {by['cachet hit']['cpu'] / by['sccache hit']['cpu']:.2f}; miss wall "
              f"{by['cachet miss']['wall'] / by['sccache miss']['wall']:.2f}")
    print(f"cachet miss / plain rustc (wall): {by['cachet miss']['wall'] / by['plain rustc']['wall']:.2f}")
    quiet.close()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
