#!/usr/bin/env python3
"""Load and soak: one cachet server, many concurrent clients, mixed requests.

    bench/load.py [--clients 64] [--requests 50000] [--duration SECONDS] [--fd-limit N]
                  [--cachet PATH]

Drives a private cachet server (its own cache, runtime dir and empty config in a temp dir)
with CLIENTS threads, each running requests back to back, until REQUESTS are done (or, with
--duration, for that long: the soak). The kinds, in these shares:

  hit          89%  `cachet gcc -c` of one of 200 small files compiled in the warm-up
                    (a direct hit); the object must be there and be the plain compile's
  miss          4%  a file never seen (unique content): the server compiles and stores it
  uncacheable   4%  `cachet gcc -E` (preprocessing only): passed back, the client runs gcc
  garbage       2%  a raw connection to the server's socket that sends random bytes (or a
                    frame header claiming 4 GiB) and closes
  vanish        1%  a miss of a slower file whose client is SIGKILLed 40 ms in

A request fails when its client exits non-zero (garbage and vanish cannot fail), when a
hit's object differs from the plain compile's, when a miss leaves no object, or when its
client fell back to compiling by itself (it printed "cachet: warning"): the server must
serve every request, and survive all of it. --fd-limit starts the server with that
open-file limit, soft and hard (it cannot raise it), to try its connection limit. Printed: requests by kind, failures, p50/p99/max latency per kind
(ms), the server's RSS and open fds (peak during the run, and after it settled, against
before it), temp files left in the cache, the server's zombie children, and its counters.
Exits 1 on any failure or leak.
"""

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

KINDS = [("hit", 89), ("miss", 4), ("uncacheable", 4), ("garbage", 2), ("vanish", 1)]


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))
    return values[k]


class Server:
    def __init__(self, work, cachet, fd_limit=0):
        self.cachet = cachet
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": work,
            "CACHET_DIR": os.path.join(work, "cache"),
            "CACHET_RUNTIME_DIR": os.path.join(work, "run"),
            "CACHET_CONFIG": os.path.join(work, "cachet.toml"),
            "CACHET_IDLE_TIMEOUT": "3600",
            "LC_ALL": "C",
        }
        open(self.env["CACHET_CONFIG"], "w").close()

        def limit():
            if fd_limit:
                import resource
                resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))
        self.run_cmd(["--start-server"], preexec_fn=limit)
        self.pid = self.stats()["server_pid"]
        self.socket = os.path.join(self.env["CACHET_RUNTIME_DIR"], self.socket_name())

    def socket_name(self):
        for name in os.listdir(self.env["CACHET_RUNTIME_DIR"]):
            if name.endswith(".sock"):
                return name
        raise SystemExit("the server made no socket")

    def run_cmd(self, args, **kw):
        return subprocess.run([self.cachet] + args, env=self.env, input=b"",
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True, **kw)

    def stats(self):
        return json.loads(self.run_cmd(["--show-stats", "--json"]).stdout)

    def rss_kib(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def fds(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def zombies(self):
        n = 0
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                with open(f"/proc/{p}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if fields[0] == "Z" and int(fields[1]) == self.pid:
                    n += 1
            except OSError:
                pass
        return n

    def temp_files(self):
        n = 0
        for dirpath, _, files in os.walk(self.env["CACHET_DIR"]):
            n += sum(1 for f in files if ".tmp" in f or f.startswith(".tmp"))
        return n

    def stop(self):
        subprocess.run([self.cachet, "--stop-server"], env=self.env, input=b"", capture_output=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--requests", type=int, default=50000)
    ap.add_argument("--duration", type=float, default=0, help="soak: run this long (s) instead")
    ap.add_argument("--fd-limit", type=int, default=0, help="the server's RLIMIT_NOFILE")
    ap.add_argument("--cachet", default=os.path.join(ROOT, "target", "dist", "cachet"))
    args = ap.parse_args()
    if not os.access(args.cachet, os.X_OK):
        sys.exit(f"no cachet at {args.cachet}: run scripts/build-release")

    work = tempfile.mkdtemp(prefix="cachet-load.")
    src = os.path.join(work, "src")
    os.makedirs(src)
    server = Server(work, args.cachet, args.fd_limit)
    env = dict(server.env)
    try:
        # 200 small files, compiled plainly (the reference) and once through cachet.
        hits = []
        for i in range(200):
            c = os.path.join(src, f"h{i}.c")
            with open(c, "w") as f:
                f.write(f"#include <string.h>\nint h{i}(const char *s) {{ return (int)strlen(s) + {i}; }}\n")
            ref = os.path.join(src, f"h{i}.ref.o")
            subprocess.run(["gcc", "-O2", "-c", c, "-o", ref], check=True, input=b"")
            subprocess.run([args.cachet, "gcc", "-O2", "-c", c, "-o", os.path.join(src, f"h{i}.warm.o")],
                           env=env, check=True, input=b"")
            with open(ref, "rb") as f:
                hits.append((c, f.read()))
        slow = "\n".join(f"int s{i}(int x) {{ int y = x; for (int k = 0; k < x; k++) y ^= y << {i % 7 + 1}; return y; }}"
                         for i in range(150))
        server.run_cmd(["--flush"])
        time.sleep(1)
        before = {"rss": server.rss_kib(), "fds": server.fds()}
        server.run_cmd(["--zero-stats"])

        lock = threading.Lock()
        counter = {"next": 0}
        results = {k: [] for k, _ in KINDS}
        failures = {k: [] for k, _ in KINDS}
        peak = {"rss": before["rss"], "fds": before["fds"]}
        stop_at = time.time() + args.duration if args.duration else None
        weights = [w for _, w in KINDS]
        names = [k for k, _ in KINDS]

        def take():
            with lock:
                if stop_at is not None:
                    if time.time() >= stop_at:
                        return None
                elif counter["next"] >= args.requests:
                    return None
                counter["next"] += 1
                return counter["next"]

        def one(n, rng):
            kind = rng.choices(names, weights)[0]
            out = os.path.join(work, "out", f"{threading.get_ident()}")
            os.makedirs(out, exist_ok=True)
            t0 = time.perf_counter()
            ok, why = True, ""
            said = b""  # the client's stderr
            if kind == "hit":
                c, ref = hits[rng.randrange(len(hits))]
                o = os.path.join(out, "h.o")
                p = subprocess.run([args.cachet, "gcc", "-O2", "-c", c, "-o", o], env=env,
                                   input=b"", capture_output=True)
                said = p.stderr
                if p.returncode != 0:
                    ok, why = False, p.stderr.decode(errors="replace")[-300:]
                else:
                    with open(o, "rb") as f:
                        if f.read() != ref:
                            ok, why = False, "the object differs from the plain compile's"
            elif kind in ("miss", "vanish"):
                c = os.path.join(out, f"m{n}.c")
                with open(c, "w") as f:
                    f.write((slow if kind == "vanish" else "") + f"\nint m{n}(void) {{ return {n}; }}\n")
                o = os.path.join(out, f"m{n}.o")
                p = subprocess.Popen([args.cachet, "gcc", "-O2", "-c", c, "-o", o], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
                if kind == "vanish":
                    time.sleep(0.04)
                    p.send_signal(signal.SIGKILL)
                    p.communicate(b"")
                else:
                    _, err = p.communicate(b"")
                    said = err
                    if p.returncode != 0 or not os.path.exists(o):
                        ok, why = False, err.decode(errors="replace")[-300:]
                for f in (c, o):
                    try:
                        os.unlink(f)
                    except OSError:
                        pass
            elif kind == "uncacheable":
                c, _ = hits[rng.randrange(len(hits))]
                p = subprocess.run([args.cachet, "gcc", "-E", c], env=env, input=b"",
                                   capture_output=True)
                said = p.stderr
                if p.returncode != 0 or b"strlen" not in p.stdout:
                    ok, why = False, p.stderr.decode(errors="replace")[-300:]
            else:  # garbage
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.settimeout(5)
                    s.connect(server.socket)
                    if rng.random() < 0.5:
                        s.sendall(bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 512))))
                    else:
                        s.sendall((0xFFFFFFFF).to_bytes(4, "little") + b"\x00" * 16)
                except OSError:
                    pass
                finally:
                    s.close()
            if ok and b"cachet: warning" in said:
                ok, why = False, "fell back: " + said.decode(errors="replace")[-300:]
            ms = (time.perf_counter() - t0) * 1000
            with lock:
                results[kind].append(ms)
                if not ok:
                    failures[kind].append(why)

        def client(seed):
            rng = random.Random(seed)
            while (n := take()) is not None:
                try:
                    one(n, rng)
                except Exception as e:  # the harness's own trouble counts as a failure too
                    with lock:
                        failures.setdefault("harness", []).append(repr(e))

        series = []

        def watch(done):
            last = 0.0
            while not done.is_set():
                try:
                    rss, fds = server.rss_kib(), server.fds()
                    peak["rss"] = max(peak["rss"], rss)
                    peak["fds"] = max(peak["fds"], fds)
                    now = time.time() - started
                    if now - last >= 60:
                        last = now
                        with lock:
                            n = sum(len(v) for v in results.values())
                        series.append((now, n, rss, fds))
                except OSError:
                    pass
                done.wait(0.25)

        done = threading.Event()
        started = time.time()
        watcher = threading.Thread(target=watch, args=(done,))
        watcher.start()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.time() - started
        done.set()
        watcher.join()
        alive = os.path.exists(f"/proc/{server.pid}")
        server.run_cmd(["--flush"])
        time.sleep(2)
        stats = server.stats()
        after = {"rss": server.rss_kib(), "fds": server.fds()}
        temps = server.temp_files()
        zombies = server.zombies()

        total = sum(len(v) for v in results.values())
        failed = sum(len(v) for v in failures.values())
        if failures.get("harness"):
            print(f"harness errors: {len(failures['harness'])}")
        c = stats["counters"]
        print(f"cachet load: {args.clients} clients, {total} requests in {elapsed:.0f} s "
              f"({total / elapsed:.0f}/s); server pid {server.pid} {'alive' if alive else 'DEAD'}")
        print(f"{'kind':<12} {'requests':>9} {'failed':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for k, _ in KINDS:
            v = results[k]
            print(f"{k:<12} {len(v):>9} {len(failures[k]):>7} {percentile(v, 50):>8.1f} "
                  f"{percentile(v, 99):>8.1f} {max(v) if v else float('nan'):>8.1f}")
        print(f"server RSS: {before['rss'] / 1024:.1f} MiB before, {peak['rss'] / 1024:.1f} MiB peak, "
              f"{after['rss'] / 1024:.1f} MiB after")
        print(f"server fds: {before['fds']} before, {peak['fds']} peak, {after['fds']} after")
        print(f"temp files left in the cache: {temps}; zombie children: {zombies}")
        if len(series) > 1:
            print("over time (minute, requests so far, RSS MiB, fds): " + ", ".join(
                f"{t / 60:.0f}: {n} {rss / 1024:.1f} {fds}" for t, n, rss, fds in series))
        print(f"counters: hits {c['cache_hits']} (direct {c['direct_hits']}), misses {c['cache_misses']}, "
              f"uncacheable {sum(c['uncacheable'].values())}, cancelled {c['cancelled']}, "
              f"protocol errors {c['protocol_errors']}, compile failures {c['compile_failures']}, "
              f"accept errors {c.get('accept_errors', 0)}, write waits {c.get('write_waits', 0)}")
        print(f"server limits: {stats.get('connection_limit')} connections at once, "
              f"fd limit {stats.get('fd_limit')}")
        for k, whys in failures.items():
            for why in whys[:3]:
                print(f"  {k} failed: {why.strip()}")
        leaked = after["fds"] > before["fds"] + 2 or temps > 0 or zombies > 0
        if failed or not alive or leaked:
            print("FAILED" + (" (leak)" if leaked else ""))
            return 1
        return 0
    finally:
        server.stop()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    sys.exit(main())
