#!/usr/bin/env python3
"""A BuildGrid 0.4.4 remote-execution server for tests (stands in for a real REAPI service).

    python grid.py --port P --dir D [--tls-cert C --tls-key K] [--jwt-secret F]
                   [--bot-keepalive S] [--threads N] [--max-job-attempts N] [-v]

Writes D/bgd.yml and then os.execv's BuildGrid's `bgd server start --pid-file D/bgd.pid
D/bgd.yml` in this very process (same pid: kill it and the server is gone). BuildGrid
writes D/bgd.pid once its gRPC port is open and every service has started (about 3 s
here), so a test waits for that file. Everything binds to 127.0.0.1:P, and a port that
is taken makes it exit 1 (SO_REUSEPORT off) instead of sharing the port.

One instance, "main": Execution (+ Operations), Bots, ActionCache, CAS, ByteStream and
Capabilities. CAS: in-memory LRU (--cas-size, 512M). ActionCache: in-memory LRU that takes
updates; results with a nonzero exit code are not cached. Scheduler: an SQLite file
D/scheduler.db, wiped at each start; one job assigner polling every 0.1-0.2 s (a queued
job waits that long for a free worker). --bot-keepalive (30 s; BuildGrid's default is
600) is how long a silent bot (SIGKILLed worker) keeps its lease before BuildGrid re-queues
it. --threads (64) caps concurrent RPCs: every open Execute stream and every bot's
long poll holds one, and BuildGrid answers RESOURCE_EXHAUSTED past it.

BuildGrid 0.4.4 itself only accepts PostgreSQL for its scheduler (SqlProvider refuses any
other connection string, and its notifiers use LISTEN/NOTIFY through psycopg2, which the
venv does not even have). So the exec'd process is the venv's python running this file
in a hidden `--serve` mode: it patches a handful of functions so that an SQLite file works
(see _patch_buildgrid_for_sqlite), makes `max-job-attempts` count (BuildGrid drops it),
and then runs bgd's own command-line entry point (`bgd server start ...`) unchanged.

Run it with any python: it execs the BuildGrid venv's interpreter (--venv, default
$CACHET_BGD_VENV or <repo>/target/test-tools/buildgrid).
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", "..", ".."))
DEFAULT_VENV = os.environ.get("CACHET_BGD_VENV") or os.path.join(REPO, "target", "test-tools", "buildgrid")


def build_config(args: argparse.Namespace) -> str:
    d = os.path.abspath(args.dir)
    db = os.path.join(d, "scheduler.db")
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            sys.exit("grid.py: --tls-cert and --tls-key go together")
        channel = (
            "  - !channel\n"
            f'    address: "127.0.0.1:{args.port}"\n'
            "    insecure-mode: false\n"
            "    credentials:\n"
            f"      tls-server-key: {os.path.abspath(args.tls_key)}\n"
            f"      tls-server-cert: {os.path.abspath(args.tls_cert)}\n"
        )
    else:
        channel = "  - !channel\n" f'    address: "127.0.0.1:{args.port}"\n' "    insecure-mode: true\n"
    if args.jwt_secret:
        auth = "authorization:\n  method: jwt\n" f"  secret: {os.path.abspath(args.jwt_secret)}\n  algorithm: hs256\n"
    else:
        auth = "authorization:\n  method: none\n"
    wildcard = ""
    if args.wildcard_key:
        wildcard = "      wildcard-property-keys:\n" + "".join(f"        - {k}\n" for k in args.wildcard_key)
    match = ""
    if args.match_key:
        match = "      match-property-keys:\n" + "".join(f"        - {k}\n" for k in args.match_key)
    return f"""# written by crates/cachet/tests/reapi/grid.py (BuildGrid 0.4.4, test use only)
description: cachet tests (REAPI execution, {d})
server:
{channel}{auth}
# A port already taken must fail loudly rather than be shared (gRPC sets SO_REUSEPORT).
grpc-server-options:
  grpc.so_reuseport: 0
thread-pool-size: {args.threads}
connections:
  - !sql-connection &sql
    connection-string: sqlite:///{db}
    pool-size: 10
    max-overflow: 20
    pool-timeout: 60
storages:
  - !lru-storage &cas
    size: {args.cas_size}
caches:
  - !lru-action-cache &ac
    storage: *cas
    max-cached-refs: 200000
    allow-updates: true
    cache-failed-actions: false
schedulers:
  - !sql-scheduler &scheduler
    sql: *sql
    storage: *cas
    action-cache: *ac
    property-set: !dynamic-property-set
      label-key: OSFamily
{match}{wildcard}    bot-session-keepalive-timeout: {args.bot_keepalive}
    session-expiry-timer-interval: {args.reaper_interval}
    max-job-attempts: {args.max_job_attempts}
    max-execution-timeout: {args.max_execution_timeout}
    execution-timer-interval: 5
    poll-interval: 1
    bot-poll-interval: 1
    assigners:
      - !priority-age-assigner
        count: 1
        interval: 0.1
        jitter-factor: 0.1
        failure-backoff: 0.2
        busy-sleep-factor: 0.01
instances:
  - name: main
    services:
      - !execution
        scheduler: *scheduler
        operation-stream-keepalive-timeout: {args.stream_keepalive}
        endpoints: [execution, operations, bots]
      - !action-cache
        cache: *ac
      - !cas
        storage: *cas
      - !bytestream
        storage: *cas
"""


# ----------------------------------------------------------------------------------------
# Serve mode: runs inside the BuildGrid venv, patches BuildGrid for SQLite, runs bgd.


def _patch_buildgrid_for_sqlite() -> None:
    """Make BuildGrid 0.4.4's SQL scheduler run on an SQLite file, in one process.

    1. SqlProvider: accept sqlite:/// URLs. Every transaction is BEGIN IMMEDIATE (one
       writer at a time, so `SELECT ... FOR UPDATE`, which SQLite drops, still means what
       the scheduler expects), WAL journal, foreign keys on (ON DELETE CASCADE as in
       PostgreSQL), a 60 s busy timeout; the tables are created from the ORM models.
    2. `NOTIFY channel, 'payload'` statements (job_updated / job_assigned) are taken out of
       the SQL and delivered in-process to the scheduler's notifiers when the session
       commits (PostgreSQL also delivers NOTIFY at commit; nothing on rollback).
    3. The notifier threads no longer LISTEN (psycopg2); they only wait for shutdown.
    4. INSERT ... ON CONFLICT DO NOTHING uses SQLite's dialect instead of PostgreSQL's.
    """
    import threading

    from sqlalchemy import create_engine, event
    from sqlalchemy.dialects import sqlite as sqlite_dialect
    from sqlalchemy.orm import Session
    from sqlalchemy.sql.elements import TextClause

    from buildgrid.server.scheduler import impl as sched_impl
    from buildgrid.server.scheduler import notifier as notifier_mod
    from buildgrid.server.sql import models as sql_models
    from buildgrid.server.sql import provider as provider_mod

    # -- 1. SQLite engine
    original_create = provider_mod.SqlProvider._create_sqlalchemy_engine

    def create_engine_any(self, connection_string, connection_timeout, lock_timeout, **kw):  # type: ignore
        if not connection_string.startswith("sqlite:///"):
            return original_create(self, connection_string, connection_timeout, lock_timeout, **kw)
        engine_args = {}
        for key in ("max_overflow", "pool_size", "pool_timeout", "pool_recycle", "pool_pre_ping"):
            if kw.get(key) is not None:
                engine_args[key] = kw[key]
        engine = create_engine(
            connection_string,
            future=True,
            connect_args={"timeout": 60, "check_same_thread": False},
            **engine_args,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):  # type: ignore[no-untyped-def]
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        sql_models.Base.metadata.create_all(engine)
        self._session_factory.configure(bind=engine)
        return engine

    provider_mod.SqlProvider._create_sqlalchemy_engine = create_engine_any

    # -- 2. NOTIFY, delivered at commit
    notifiers: list = []
    notifiers_lock = threading.Lock()
    original_notifier_init = notifier_mod.Notifier.__init__

    def notifier_init(self, *a, **kw):  # type: ignore[no-untyped-def]
        original_notifier_init(self, *a, **kw)
        with notifiers_lock:
            notifiers.append(self)

    notifier_mod.Notifier.__init__ = notifier_init

    def notifier_begin(self, shutdown_requested):  # type: ignore[no-untyped-def]
        shutdown_requested.wait()

    notifier_mod.Notifier.begin = notifier_begin

    original_execute = Session.execute

    def session_execute(self, statement, *a, **kw):  # type: ignore[no-untyped-def]
        if isinstance(statement, TextClause):
            text = statement.text.strip()
            if text.upper().startswith("NOTIFY "):
                # NOTIFY channel, 'payload';
                body = text[len("NOTIFY ") :].rstrip(";")
                channel, _, payload = body.partition(",")
                payload = payload.strip()
                if len(payload) >= 2 and payload[0] == payload[-1] == "'":
                    payload = payload[1:-1]
                self.info.setdefault("cachet_notify", []).append((channel.strip(), payload))
                return None
        return original_execute(self, statement, *a, **kw)

    Session.execute = session_execute

    @event.listens_for(Session, "after_commit")
    def _deliver(session):  # type: ignore[no-untyped-def]
        pending = session.info.pop("cachet_notify", None)
        if not pending:
            return
        with notifiers_lock:
            targets = list(notifiers)
        for channel, payload in pending:
            for n in targets:
                if n._channel == channel:
                    n.notify(payload)

    @event.listens_for(Session, "after_rollback")
    def _drop(session):  # type: ignore[no-untyped-def]
        session.info.pop("cachet_notify", None)

    # -- 4. ON CONFLICT DO NOTHING
    def insert_on_conflict_do_nothing(self, model):  # type: ignore[no-untyped-def]
        return sqlite_dialect.insert(model).on_conflict_do_nothing()

    sched_impl.Scheduler._insert_on_conflict_do_nothing = insert_on_conflict_do_nothing


def _patch_max_job_attempts(n: int) -> None:
    """BuildGrid 0.4.4 parses `max-job-attempts` but never hands it to the Scheduler
    (app/settings/parser.py, load_sql_scheduler: no max_job_attempts= in Scheduler(...)),
    so it is always 5. Set it after construction."""
    from buildgrid.server.scheduler import impl as sched_impl

    original_init = sched_impl.Scheduler.__init__

    def init(self, *a, **kw):  # type: ignore[no-untyped-def]
        original_init(self, *a, **kw)
        self.max_job_attempts = n

    sched_impl.Scheduler.__init__ = init


def serve(config: str, pid_file: str, verbose: str, max_job_attempts: str) -> None:
    _patch_buildgrid_for_sqlite()
    _patch_max_job_attempts(int(max_job_attempts))
    from buildgrid.server.app import cli

    sys.argv = ["bgd", "server", "start", "--pid-file", pid_file, config]
    if int(verbose):
        sys.argv.append("-" + "v" * int(verbose))
    sys.exit(cli())


# ----------------------------------------------------------------------------------------


def main() -> None:
    if len(sys.argv) >= 2 and sys.argv[1] == "--serve":
        serve(*sys.argv[2:6])
        return

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", required=True, help="state dir: bgd.yml, bgd.pid, scheduler.db")
    p.add_argument("--tls-cert", help="server certificate (PEM); with --tls-key, serve TLS only")
    p.add_argument("--tls-key", help="server private key (PEM)")
    p.add_argument("--jwt-secret", help="file holding an HS256 secret: require a bearer JWT")
    p.add_argument("--cas-size", default="512M")
    p.add_argument("--threads", type=int, default=64, help="gRPC threads = max concurrent RPCs (>= 5)")
    p.add_argument(
        "--bot-keepalive",
        type=int,
        default=30,
        help="seconds without UpdateBotSession before a bot is dropped and its lease re-queued",
    )
    p.add_argument("--reaper-interval", type=float, default=1.0, help="how often expired bots are looked for")
    p.add_argument("--max-job-attempts", type=int, default=5)
    p.add_argument("--max-execution-timeout", type=int, default=7200)
    p.add_argument("--stream-keepalive", type=int, default=600, help="operation-stream-keepalive-timeout")
    p.add_argument("--match-key", action="append", help="extra platform property matched against workers")
    p.add_argument("--wildcard-key", action="append", help="extra platform property accepted, not matched")
    p.add_argument("--venv", default=DEFAULT_VENV, help="BuildGrid venv (has bin/python and bin/bgd)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="BuildGrid log level (-v info, -vv debug)")
    p.add_argument("--print-config", action="store_true", help="write the config, print it, do not start")
    args = p.parse_args()
    if args.threads < 5:
        p.error("--threads must be >= 5 (BuildGrid's minimum)")
    if args.bot_keepalive < 5:
        p.error("--bot-keepalive must be >= 5 (BuildGrid assigns no lease to a bot polling for < 3 s)")

    d = os.path.abspath(args.dir)
    os.makedirs(d, exist_ok=True)
    for name in ("bgd.pid", "scheduler.db", "scheduler.db-wal", "scheduler.db-shm", "scheduler.db-journal"):
        try:
            os.unlink(os.path.join(d, name))
        except FileNotFoundError:
            pass
    config = os.path.join(d, "bgd.yml")
    with open(config + ".tmp", "w", encoding="utf-8") as f:
        f.write(build_config(args))
    os.replace(config + ".tmp", config)
    if args.print_config:
        sys.stdout.write(open(config, encoding="utf-8").read())
        return

    python = os.path.join(args.venv, "bin", "python")
    if not os.access(python, os.X_OK):
        sys.exit(f"grid.py: {python} missing: run scripts/services install")
    sys.stdout.flush()
    sys.stderr.flush()
    os.chdir(d)
    me = os.path.abspath(__file__)
    pid_file = os.path.join(d, "bgd.pid")
    argv = [python, "-u", me, "--serve", config, pid_file, str(args.verbose), str(args.max_job_attempts)]
    os.execv(python, argv)


if __name__ == "__main__":
    main()
