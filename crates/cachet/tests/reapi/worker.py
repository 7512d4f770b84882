#!/usr/bin/env python3
"""A small REAPI worker on the Remote Workers (Bots) API, for tests (stands in for
buildbox-worker + buildbox-run against grid.py's BuildGrid).

    python worker.py --endpoint grpc://127.0.0.1:P --instance main --name NAME --dir D
                     --log LOGFILE [--start-when FILE] [--timeout SECONDS]
                     [--token FILE] [--ca FILE] [--property KEY=VALUE ...]

One action at a time. For each lease it fetches the Action (the lease payload), its
Command and the input-root Directory tree from the CAS, stages the input root in a fresh
directory D/stage/NAME/<lease>/root by hardlinking files from a local CAS D/cas (one
file per (digest, executable), read-only), creates the parents of every output path,
and runs Command.arguments with exactly Command.environment_variables, chrooted into the
staged root, in Command.working_directory (relative to the input root), in a process
group of its own that dies with the worker. The chroot is done by a tiny helper that
Popen execs (see CHROOT_HELPER) rather than in a preexec_fn: fork() of a gRPC process
is not safe. Anything missing from the upload is missing inside the chroot, so the
command fails there (exec failures and a missing working directory become exit code 127
with a message on stderr). Per-action timeout: Action.timeout, else --timeout (120 s);
a timeout kills the process group and completes with DEADLINE_EXCEEDED. stdout, stderr
and the outputs (files, directories as Trees, symlinks) go to the CAS (FindMissingBlobs,
BatchUpdateBlobs, ByteStream.Write above 1 MiB) and the lease completes with
state COMPLETED, status OK and result = Any(ActionResult) (what BuildGrid unpacks).
Blobs missing from the CAS complete the lease with FAILED_PRECONDITION + a
PreconditionFailure listing them, as REAPI asks.

Each lease handled appends one JSON line to LOGFILE:
  {"worker": NAME, "action": "<action digest hash>", "exit_code": N, "argv": [...],
   "cwd": "<working_directory>", "outputs": ["<output paths that were produced>"],
   "status": "OK" | grpc code name, "lease": "<job id>", "seconds": wall time}
(exit_code is null when the command never ran: missing input blob, cancellation...).

--start-when FILE waits for FILE to exist before the bot session is created. The bot id
is NAME: a worker restarted under the same name makes BuildGrid re-queue at once what the
previous one held. SIGKILL at any time is fine (the action dies with it; BuildGrid
re-queues its lease only when the session expires: grid.py --bot-keepalive, 30 s); the
next start under the same --dir and --name removes what it left in D/stage/NAME.
SIGTERM/SIGINT hand a lease in progress back at once (status UNAVAILABLE, which BuildGrid
retries) and mark the session BOT_TERMINATING. Several workers may share one --dir.

Runs under the BuildGrid venv's python (it execs it when started with another one).
"""

import argparse
import datetime
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", "..", ".."))
DEFAULT_VENV = os.environ.get("CACHET_BGD_VENV") or os.path.join(REPO, "target", "test-tools", "buildgrid")


def ensure_venv_python() -> None:
    """Re-exec under the BuildGrid venv's python unless grpc + BuildGrid's protos import."""
    try:
        import grpc  # noqa: F401

        from buildgrid._protos.build.bazel.remote.execution.v2 import remote_execution_pb2  # noqa: F401
    except ImportError:
        python = os.path.join(DEFAULT_VENV, "bin", "python")
        if os.path.realpath(sys.prefix) == os.path.realpath(DEFAULT_VENV) or not os.access(python, os.X_OK):
            raise
        os.execv(python, [python, "-u"] + sys.argv)


ensure_venv_python()

import grpc  # noqa: E402
from google.protobuf import timestamp_pb2  # noqa: E402

from buildgrid._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2  # noqa: E402
from buildgrid._protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc  # noqa: E402
from buildgrid._protos.google.bytestream import bytestream_pb2, bytestream_pb2_grpc  # noqa: E402
from buildgrid._protos.google.devtools.remoteworkers.v1test2 import bots_pb2, bots_pb2_grpc, worker_pb2  # noqa: E402
from buildgrid._protos.google.rpc import code_pb2, error_details_pb2, status_pb2  # noqa: E402

# Run as `python -I -S -c CHROOT_HELPER ROOT DIR WORKER_PID N NAME=VALUE*N ARGV...` by the
# worker: dies with the worker (PR_SET_PDEATHSIG), chroots into ROOT, enters DIR and execs
# ARGV with exactly those N variables (argv[0] looked up in their PATH, like execvp).
# Failures are reported on stderr with exit code 127 (126 for a file that is no program).
CHROOT_HELPER = r"""
import os, sys, ctypes
root, wd, worker, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
env = dict(kv.partition("=")[::2] for kv in sys.argv[5 : 5 + n])
argv = sys.argv[5 + n :]
ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
if os.getppid() != worker:
    os._exit(137)
def fail(code, msg):
    sys.stderr.write("worker: " + msg + "\n")
    sys.stderr.flush()
    os._exit(code)
try:
    os.chroot(root)
except OSError as e:
    fail(127, "chroot: %s" % e)
try:
    os.chdir(wd)
except OSError as e:
    fail(127, "cannot enter the working directory %r in the input root: %s" % (wd, e.strerror))
try:
    os.execvpe(argv[0], argv, env)
except OSError as e:
    fail(126 if isinstance(e, PermissionError) else 127,
         "cannot execute %r in the input root: %s" % (argv[0], e.strerror))
"""
BATCH_LIMIT = 2 * 1024 * 1024  # bytes per BatchRead/BatchUpdate request (server: 4 MiB - 1 KiB)
BATCH_COUNT = 400  # blobs per batch request (server: 500)
CHUNK = 1024 * 1024  # ByteStream chunk
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


def log(msg: str) -> None:
    now = datetime.datetime.now().strftime("%H:%M:%S.%f")[:-3]
    sys.stderr.write(f"[{now} worker {os.getpid()}] {msg}\n")
    sys.stderr.flush()


def now_ts() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


def digest_of(data: bytes) -> re_pb2.Digest:
    return re_pb2.Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


def digest_of_file(path: str) -> re_pb2.Digest:
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(CHUNK)
            if not b:
                break
            h.update(b)
            n += len(b)
    return re_pb2.Digest(hash=h.hexdigest(), size_bytes=n)


def open_channel(endpoint: str, ca: str | None) -> grpc.Channel:
    """grpc://host:port (or http://, or bare host:port) is plaintext; grpcs:// / https:// is TLS."""
    for scheme, secure in (("grpcs://", True), ("https://", True), ("grpc://", False), ("http://", False)):
        if endpoint.startswith(scheme):
            target = endpoint[len(scheme) :].rstrip("/")
            break
    else:
        target, secure = endpoint, False
    if secure:
        root = open(ca, "rb").read() if ca else None
        return grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=root), CHANNEL_OPTIONS)
    return grpc.insecure_channel(target, CHANNEL_OPTIONS)


def auth_metadata(token_file: str | None) -> tuple:
    if not token_file:
        return ()
    token = open(token_file, encoding="utf-8").read().strip()
    return (("authorization", f"Bearer {token}"),)


class MissingBlobs(Exception):
    def __init__(self, digests: list) -> None:
        super().__init__("missing from the CAS: " + ", ".join(f"{d.hash}/{d.size_bytes}" for d in digests))
        self.digests = digests


class Cas:
    """CAS + ByteStream client (batch for small blobs, streams for large ones)."""

    def __init__(self, channel: grpc.Channel, instance: str, metadata: tuple = ()) -> None:
        self.instance = instance
        self.md = metadata
        self.cas = re_grpc.ContentAddressableStorageStub(channel)
        self.bs = bytestream_pb2_grpc.ByteStreamStub(channel)

    def _resource(self, d: re_pb2.Digest, upload: bool) -> str:
        tail = f"blobs/{d.hash}/{d.size_bytes}"
        if upload:
            tail = f"uploads/{uuid.uuid4()}/{tail}"
        return f"{self.instance}/{tail}" if self.instance else tail

    # -- reads
    def read_many(self, digests: list, sink) -> None:  # type: ignore[no-untyped-def]
        """Calls sink(digest, bytes) for each distinct digest; raises MissingBlobs."""
        seen, small, large = set(), [], []
        for d in digests:
            key = (d.hash, d.size_bytes)
            if key in seen:
                continue
            seen.add(key)
            if d.size_bytes == 0:
                sink(d, b"")
            elif d.size_bytes > CHUNK:
                large.append(d)
            else:
                small.append(d)
        missing = []
        batch, size = [], 0
        for d in small + [None]:
            if d is None or len(batch) >= BATCH_COUNT or (batch and size + d.size_bytes > BATCH_LIMIT):
                if batch:
                    req = re_pb2.BatchReadBlobsRequest(instance_name=self.instance, digests=batch)
                    resp = self.cas.BatchReadBlobs(req, metadata=self.md, timeout=60)
                    for r in resp.responses:
                        if r.status.code == code_pb2.OK:
                            if hashlib.sha256(r.data).hexdigest() != r.digest.hash:
                                raise RuntimeError(f"CAS returned bad data for {r.digest.hash}")
                            sink(r.digest, r.data)
                        elif r.status.code == code_pb2.NOT_FOUND:
                            missing.append(r.digest)
                        else:
                            raise RuntimeError(f"BatchReadBlobs {r.digest.hash}: {r.status.code} {r.status.message}")
                batch, size = [], 0
            if d is not None:
                batch.append(d)
                size += d.size_bytes
        for d in large:
            try:
                sink(d, self.read_stream(d))
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.NOT_FOUND:
                    missing.append(d)
                else:
                    raise
        if missing:
            raise MissingBlobs(missing)

    def read_stream(self, d: re_pb2.Digest) -> bytes:
        parts = []
        req = bytestream_pb2.ReadRequest(resource_name=self._resource(d, False))
        for resp in self.bs.Read(req, metadata=self.md, timeout=300):
            parts.append(resp.data)
        data = b"".join(parts)
        if len(data) != d.size_bytes or hashlib.sha256(data).hexdigest() != d.hash:
            raise RuntimeError(f"ByteStream.Read {d.hash}: got {len(data)} bytes that do not match")
        return data

    def read(self, d: re_pb2.Digest) -> bytes:
        out = {}
        self.read_many([d], lambda dd, data: out.setdefault(dd.hash, data))
        return out[d.hash]

    def read_message(self, d: re_pb2.Digest, cls):  # type: ignore[no-untyped-def]
        msg = cls()
        msg.ParseFromString(self.read(d))
        return msg

    # -- writes
    def upload(self, blobs: dict) -> None:
        """blobs: {(hash, size): bytes | ('file', path)}; uploads those the CAS lacks."""
        if not blobs:
            return
        want = [re_pb2.Digest(hash=h, size_bytes=s) for (h, s) in blobs if s > 0]
        missing = []
        for i in range(0, len(want), BATCH_COUNT):
            req = re_pb2.FindMissingBlobsRequest(instance_name=self.instance, blob_digests=want[i : i + BATCH_COUNT])
            missing += list(self.cas.FindMissingBlobs(req, metadata=self.md, timeout=60).missing_blob_digests)
        batch, size = [], 0

        def flush() -> None:
            nonlocal batch, size
            if batch:
                req = re_pb2.BatchUpdateBlobsRequest(instance_name=self.instance, requests=batch)
                resp = self.cas.BatchUpdateBlobs(req, metadata=self.md, timeout=60)
                for r in resp.responses:
                    if r.status.code != code_pb2.OK:
                        raise RuntimeError(f"BatchUpdateBlobs {r.digest.hash}: {r.status.code} {r.status.message}")
            batch, size = [], 0

        for d in missing:
            src = blobs[(d.hash, d.size_bytes)]
            if d.size_bytes > CHUNK:
                self.write_stream(d, src)
                continue
            data = src if isinstance(src, bytes) else open(src[1], "rb").read()
            if len(batch) >= BATCH_COUNT or size + len(data) > BATCH_LIMIT:
                flush()
            batch.append(re_pb2.BatchUpdateBlobsRequest.Request(digest=d, data=data))
            size += len(data)
        flush()

    def write_stream(self, d: re_pb2.Digest, src) -> None:  # type: ignore[no-untyped-def]
        name = self._resource(d, True)

        def requests():  # type: ignore[no-untyped-def]
            f = None if isinstance(src, bytes) else open(src[1], "rb")
            try:
                off = 0
                while True:
                    chunk = src[off : off + CHUNK] if f is None else f.read(CHUNK)
                    last = off + len(chunk) >= d.size_bytes
                    yield bytestream_pb2.WriteRequest(
                        resource_name=name if off == 0 else "", write_offset=off, finish_write=last, data=chunk
                    )
                    off += len(chunk)
                    if last or not chunk:
                        return
            finally:
                if f is not None:
                    f.close()

        resp = self.bs.Write(requests(), metadata=self.md, timeout=300)
        if resp.committed_size not in (d.size_bytes, -1):
            raise RuntimeError(f"ByteStream.Write {d.hash}: committed {resp.committed_size} of {d.size_bytes}")


class LocalCas:
    """Blobs on disk under ROOT, one read-only file per (digest, executable), to hardlink from."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.tmp = os.path.join(root, "tmp")
        os.makedirs(self.tmp, exist_ok=True)

    def path(self, d: re_pb2.Digest, exe: bool) -> str:
        return os.path.join(self.root, d.hash[:2], f"{d.hash}-{d.size_bytes}{'-x' if exe else ''}")

    def has(self, d: re_pb2.Digest, exe: bool) -> bool:
        try:
            return os.stat(self.path(d, exe)).st_size == d.size_bytes
        except FileNotFoundError:
            return False

    def put(self, d: re_pb2.Digest, exe: bool, data: bytes) -> None:
        dest = self.path(d, exe)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        tmp = os.path.join(self.tmp, f"{uuid.uuid4()}")
        with open(tmp, "wb") as f:
            f.write(data)
        self._publish(tmp, dest, exe)

    def put_copy(self, d: re_pb2.Digest, exe: bool) -> bool:
        """Make the (d, exe) variant from the other one, if present."""
        other = self.path(d, not exe)
        if not self.has(d, not exe):
            return False
        dest = self.path(d, exe)
        tmp = os.path.join(self.tmp, f"{uuid.uuid4()}")
        shutil.copyfile(other, tmp)
        self._publish(tmp, dest, exe)
        return True

    @staticmethod
    def _publish(tmp: str, dest: str, exe: bool) -> None:
        """Moves TMP to DEST unless another worker sharing the directory was first.

        Never renames over an existing blob: a worker may be hardlinking it into a
        stage, and link(2) fails with ENOENT when its source inode loses its last name
        between the lookup and the link (what rename over it does)."""
        os.chmod(tmp, 0o555 if exe else 0o444)
        try:
            os.link(tmp, dest)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)


class Cancelled(Exception):
    """The server no longer lists the lease we work on (cancelled, or given to another bot)."""


class SessionLost(Exception):
    """The server refused our bot session: start a new one."""


def valid_name(name: str) -> bool:
    return bool(name) and "/" not in name and name not in (".", "..") and "\0" not in name


def safe_rel(path: str) -> str:
    """A relative path that stays inside its base (REAPI paths are '/'-separated, relative)."""
    if path.startswith("/") or "\0" in path:
        raise ValueError(f"path must be relative: {path!r}")
    norm = os.path.normpath(path) if path else "."
    if norm == ".." or norm.startswith("../"):
        raise ValueError(f"path leaves its base: {path!r}")
    return norm


def rmtree(path: str) -> None:
    def onerror(func, p, _exc):  # type: ignore[no-untyped-def]
        try:
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    if os.path.lexists(path):
        shutil.rmtree(path, onerror=onerror)


class Worker:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.name = args.name
        self.dir = os.path.abspath(args.dir)
        self.md = auth_metadata(args.token)
        self.channel = open_channel(args.endpoint, args.ca)
        self.bots = bots_pb2_grpc.BotsStub(self.channel)
        self.cas = Cas(self.channel, args.instance, self.md)
        self.local = LocalCas(os.path.join(self.dir, "cas"))
        self.stage_base = os.path.join(self.dir, "stage", self.name)
        rmtree(self.stage_base)  # what a killed predecessor of the same name left
        os.makedirs(self.stage_base, exist_ok=True)
        self.session: bots_pb2.BotSession | None = None
        self.lease_digest: dict[str, str] = {}
        self.last_heartbeat = 0.0

    # ------------------------------------------------------------------ bot session
    def new_session_proto(self) -> bots_pb2.BotSession:
        device = worker_pb2.Device(handle=self.name)
        for kv in self.args.property or ["OSFamily=linux", "ISA=x86-64"]:
            k, _, v = kv.partition("=")
            device.properties.add(key=k, value=v)
        w = worker_pb2.Worker(devices=[device])
        w.configs.add(key="capacity", value="1")
        return bots_pb2.BotSession(bot_id=self.name, status=bots_pb2.OK, worker=w)

    def _note_metadata(self, session: bots_pb2.BotSession, call) -> None:  # type: ignore[no-untyped-def]
        """Trailing metadata has one ExecuteOperationMetadata per lease (in lease order)."""
        try:
            md = [v for k, v in (call.trailing_metadata() or ()) if k == "executeoperationmetadata-bin"]
        except Exception:
            return
        if len(md) != len(session.leases):
            return
        for lease, raw in zip(session.leases, md):
            m = re_pb2.ExecuteOperationMetadata()
            m.ParseFromString(raw)
            if m.action_digest.hash:
                self.lease_digest[lease.id] = m.action_digest.hash

    def create_session(self) -> None:
        delay = 0.2
        while True:
            try:
                req = bots_pb2.CreateBotSessionRequest(parent=self.args.instance, bot_session=self.new_session_proto())
                # A short deadline: BuildGrid then answers at once (it waits for no lease
                # when the deadline is < 3.75 s), so we learn the session name before any
                # lease can be given to it; all the waiting happens in UpdateBotSession.
                session, call = self.bots.CreateBotSession.with_call(req, metadata=self.md, timeout=3)
                self._note_metadata(session, call)
                self.session = session
                log(f"bot session {session.name} (bot id {self.name})")
                return
            except grpc.RpcError as e:
                log(f"CreateBotSession: {e.code().name} {e.details()}; retrying")
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def update(self, long_poll: bool) -> None:
        """UpdateBotSession with self.session; on success self.session is the server's answer."""
        assert self.session is not None
        timeout = self.args.poll_seconds if long_poll else 20
        failures = 0
        while True:
            try:
                req = bots_pb2.UpdateBotSessionRequest(name=self.session.name, bot_session=self.session)
                session, call = self.bots.UpdateBotSession.with_call(req, metadata=self.md, timeout=timeout)
                self._note_metadata(session, call)
                self.session = session
                self.last_heartbeat = time.monotonic()
                return
            except grpc.RpcError as e:
                code = e.code()
                failures += 1
                transient = code in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.StatusCode.CANCELLED,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    grpc.StatusCode.INTERNAL,
                    grpc.StatusCode.UNKNOWN,
                )
                if transient and failures < 30:
                    if failures in (1, 10):
                        log(f"UpdateBotSession: {code.name} {e.details()}; retrying")
                    time.sleep(min(0.1 * failures, 1.0))
                    continue
                log(f"UpdateBotSession: {code.name} {e.details()}; new bot session")
                raise SessionLost() from e

    def run(self) -> None:
        if self.args.start_when:
            while not os.path.exists(self.args.start_when):
                time.sleep(0.05)
        self.create_session()
        try:
            while True:
                assert self.session is not None
                lease = next((l for l in self.session.leases if l.state == bots_pb2.ACTIVE), None)
                try:
                    if lease is None:
                        self.update(long_poll=True)
                        continue
                    self.handle(lease)
                except SessionLost:
                    self.create_session()
        finally:
            self.say_goodbye()

    def say_goodbye(self) -> None:
        """On SIGTERM/SIGINT: hand back a lease in progress (UNAVAILABLE, which BuildGrid
        re-queues at once) and mark the session BOT_TERMINATING so it gets no new lease.
        BuildGrid has no call to end a bot session: it stays until --bot-keepalive expires."""
        if self.session is None:
            return
        try:
            self.session.status = bots_pb2.BOT_TERMINATING
            for l in self.session.leases:
                if l.state == bots_pb2.ACTIVE:
                    l.state = bots_pb2.COMPLETED
                    l.status.CopyFrom(status_pb2.Status(code=code_pb2.UNAVAILABLE, message="worker terminating"))
            req = bots_pb2.UpdateBotSessionRequest(name=self.session.name, bot_session=self.session)
            self.bots.UpdateBotSession(req, metadata=self.md, timeout=3)
            log("session marked BOT_TERMINATING")
        except Exception as e:  # best effort
            log(f"goodbye failed: {e!r}")

    def heartbeat(self, lease_id: str) -> None:
        """Keep the session (and the lease) alive; raises Cancelled if the lease is gone."""
        if time.monotonic() - self.last_heartbeat < self.args.heartbeat_seconds:
            return
        self.update(long_poll=False)
        assert self.session is not None
        if not any(l.id == lease_id and l.state == bots_pb2.ACTIVE for l in self.session.leases):
            raise Cancelled()

    # ------------------------------------------------------------------ one lease
    def handle(self, lease: bots_pb2.Lease) -> None:
        started = time.monotonic()
        self.last_heartbeat = started
        entry: dict = {
            "worker": self.name,
            "action": self.lease_digest.get(lease.id, ""),
            "exit_code": None,
            "argv": [],
            "cwd": "",
            "outputs": [],
            "status": "OK",
            "lease": lease.id,
        }
        status = status_pb2.Status(code=code_pb2.OK)
        result = re_pb2.ActionResult()
        work = os.path.join(self.stage_base, lease.id)
        cancelled = lost = False
        try:
            action = re_pb2.Action()
            if lease.payload.Is(re_pb2.Action.DESCRIPTOR):
                lease.payload.Unpack(action)
                if not entry["action"]:
                    entry["action"] = hashlib.sha256(action.SerializeToString()).hexdigest()
            elif lease.payload.Is(re_pb2.Digest.DESCRIPTOR):
                d = re_pb2.Digest()
                lease.payload.Unpack(d)
                entry["action"] = d.hash
                action = self.cas.read_message(d, re_pb2.Action)
            else:
                raise ValueError(f"unexpected lease payload {lease.payload.type_url}")
            log(f"lease {lease.id}: action {entry['action'][:16]}")
            status, result = self.execute(lease.id, action, work, entry)
        except SessionLost:
            lost = True
            entry["status"] = "SESSION_LOST"
        except Cancelled:
            cancelled = True
            entry["status"] = "CANCELLED"
            log(f"lease {lease.id}: cancelled by the server")
        except MissingBlobs as e:
            status = precondition_missing(e.digests)
        except (ValueError, OSError) as e:
            status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=str(e))
        except grpc.RpcError as e:
            status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message=f"worker CAS access: {e.code().name}")
        except Exception as e:  # a worker bug: report it rather than hang the client
            status = status_pb2.Status(code=code_pb2.INTERNAL, message=f"worker: {e!r}")
        finally:
            rmtree(work)
        if not (cancelled or lost) and status.code != code_pb2.OK:
            entry["status"] = code_pb2.Code.Name(status.code)
            log(f"lease {lease.id}: {entry['status']} {status.message}")
        entry["seconds"] = round(time.monotonic() - started, 3)
        self.lease_digest.pop(lease.id, None)
        with open(self.args.log, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
        if lost:
            raise SessionLost()
        if cancelled:
            return
        # Complete the lease: state COMPLETED, status, result = Any(ActionResult).
        assert self.session is not None
        for l in self.session.leases:
            if l.id == lease.id:
                l.state = bots_pb2.COMPLETED
                l.status.CopyFrom(status)
                l.result.Pack(result)
        self.update(long_poll=False)
        log(f"lease {lease.id}: completed, exit code {entry['exit_code']}, {entry['seconds']} s")

    def execute(self, lease_id: str, action: re_pb2.Action, work: str, entry: dict) -> tuple:
        meta = re_pb2.ExecutedActionMetadata(worker=self.name)
        meta.input_fetch_start_timestamp.CopyFrom(now_ts())
        command = self.cas.read_message(action.command_digest, re_pb2.Command)
        entry["argv"] = list(command.arguments)
        entry["cwd"] = command.working_directory
        if not command.arguments:
            raise ValueError("Command.arguments is empty")
        wd_rel = safe_rel(command.working_directory)
        root = os.path.join(work, "root")
        rmtree(work)
        os.makedirs(work)
        self.stage(action.input_root_digest, root, lease_id)
        if command.output_paths:
            outputs = [(p, None) for p in command.output_paths]
        else:
            outputs = [(p, "file") for p in command.output_files] + [(p, "dir") for p in command.output_directories]
        wd = os.path.normpath(os.path.join(root, wd_rel))
        for p, _ in outputs:
            full = os.path.normpath(os.path.join(wd, safe_rel(p)))
            if not (full + "/").startswith(root + "/"):
                raise ValueError(f"output path leaves the input root: {p!r}")
            os.makedirs(os.path.dirname(full), exist_ok=True)
        meta.input_fetch_completed_timestamp.CopyFrom(now_ts())

        # Run, chrooted.
        env = {v.name: v.value for v in command.environment_variables}
        timeout = action.timeout.seconds + action.timeout.nanos / 1e9 if action.HasField("timeout") else 0
        timeout = timeout if timeout > 0 else self.args.timeout
        out_path, err_path = os.path.join(work, "stdout"), os.path.join(work, "stderr")
        chdir_to = "/" + wd_rel if wd_rel != "." else "/"

        meta.execution_start_timestamp.CopyFrom(now_ts())
        timed_out = False
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            # No preexec_fn: a fork() of this multi-threaded gRPC process runs gRPC's
            # pthread_atfork handlers and then Python code in the child (once, a cold run
            # ended in a silent SIGABRT). Without it Popen uses vfork+exec, and the tiny
            # CHROOT_HELPER does the chroot, the chdir and the exec with exactly `env`.
            helper = [sys.executable, "-I", "-S", "-c", CHROOT_HELPER, root, chdir_to, str(os.getpid())]
            helper += [str(len(env))] + [f"{k}={v}" for k, v in env.items()] + list(command.arguments)
            proc = subprocess.Popen(
                helper,
                env={},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                close_fds=True,
            )
            deadline = time.monotonic() + timeout
            try:
                while True:
                    try:
                        rc = proc.wait(timeout=min(1.0, max(0.01, deadline - time.monotonic())))
                        break
                    except subprocess.TimeoutExpired:
                        if time.monotonic() >= deadline:
                            timed_out = True
                            kill_group(proc.pid)
                            rc = proc.wait()
                            break
                        self.heartbeat(lease_id)
            finally:
                kill_group(proc.pid)  # stragglers, and the command itself on Cancelled
                if proc.returncode is None:
                    proc.wait()
            exit_code = rc if rc >= 0 else 128 - rc
        meta.execution_completed_timestamp.CopyFrom(now_ts())
        entry["exit_code"] = exit_code

        # Outputs, stdout, stderr.
        meta.output_upload_start_timestamp.CopyFrom(now_ts())
        result = re_pb2.ActionResult(exit_code=exit_code)
        blobs: dict = {}
        for p, kind in outputs:
            full = os.path.normpath(os.path.join(wd, safe_rel(p)))
            if not os.path.lexists(full):
                continue
            if os.path.islink(full):
                target = os.readlink(full)
                if kind == "file":
                    result.output_file_symlinks.add(path=p, target=target)
                elif kind == "dir":
                    result.output_directory_symlinks.add(path=p, target=target)
                else:
                    result.output_symlinks.add(path=p, target=target)
            elif os.path.isdir(full):
                if kind == "file":
                    continue
                tree = self.tree_of(full, blobs)
                data = tree.SerializeToString()
                td = digest_of(data)
                blobs[(td.hash, td.size_bytes)] = data
                result.output_directories.add(path=p, tree_digest=td)
            elif os.path.isfile(full):
                if kind == "dir":
                    continue
                d = digest_of_file(full)
                blobs[(d.hash, d.size_bytes)] = ("file", full)
                result.output_files.add(path=p, digest=d, is_executable=is_exe(full))
            else:
                continue
            entry["outputs"].append(p)
        for path, field in ((out_path, result.stdout_digest), (err_path, result.stderr_digest)):
            d = digest_of_file(path)
            blobs[(d.hash, d.size_bytes)] = ("file", path)
            field.CopyFrom(d)
        self.cas.upload(blobs)
        meta.output_upload_completed_timestamp.CopyFrom(now_ts())
        result.execution_metadata.CopyFrom(meta)
        if timed_out:
            return status_pb2.Status(code=code_pb2.DEADLINE_EXCEEDED, message=f"timed out after {timeout} s"), result
        return status_pb2.Status(code=code_pb2.OK), result

    def tree_of(self, top: str, blobs: dict) -> re_pb2.Tree:
        children: dict = {}

        def walk(path: str) -> re_pb2.Directory:
            d = re_pb2.Directory()
            for name in sorted(os.listdir(path)):
                full = os.path.join(path, name)
                if os.path.islink(full):
                    d.symlinks.add(name=name, target=os.readlink(full))
                elif os.path.isdir(full):
                    sub = walk(full)
                    data = sub.SerializeToString()
                    sd = digest_of(data)
                    children[sd.hash] = sub
                    d.directories.add(name=name, digest=sd)
                elif os.path.isfile(full):
                    fd = digest_of_file(full)
                    blobs[(fd.hash, fd.size_bytes)] = ("file", full)
                    d.files.add(name=name, digest=fd, is_executable=is_exe(full))
            return d

        root = walk(top)
        return re_pb2.Tree(root=root, children=list(children.values()))

    # ------------------------------------------------------------------ staging
    def stage(self, root_digest: re_pb2.Digest, root: str, lease_id: str) -> None:
        # The whole tree of Directory messages, level by level.
        dirs: dict = {}
        level = [root_digest]
        while level:
            self.heartbeat(lease_id)
            got: dict = {}
            self.cas.read_many(level, lambda d, data: got.setdefault(d.hash, data))
            nxt = []
            for h, data in got.items():
                msg = re_pb2.Directory()
                msg.ParseFromString(data)
                dirs[h] = msg
                nxt += [c.digest for c in msg.directories if c.digest.hash not in dirs]
            level = nxt
        # Every file blob, once per (digest, executable), into the local CAS.
        need: dict = {}
        for msg in dirs.values():
            for f in msg.files:
                if f.digest.size_bytes == 0 or self.local.has(f.digest, f.is_executable):
                    continue
                if self.local.put_copy(f.digest, f.is_executable):
                    continue
                need.setdefault((f.digest.hash, f.digest.size_bytes), set()).add(f.is_executable)
        if need:
            digests = [re_pb2.Digest(hash=h, size_bytes=s) for (h, s) in need]

            def sink(d: re_pb2.Digest, data: bytes) -> None:
                for exe in need[(d.hash, d.size_bytes)]:
                    self.local.put(d, exe, data)

            self.cas.read_many(digests, sink)
        # Materialize.
        self._materialize(dirs, root_digest.hash, root)

    def _materialize(self, dirs: dict, h: str, path: str) -> None:
        os.mkdir(path)
        msg = dirs[h]
        for f in msg.files:
            if not valid_name(f.name):
                raise ValueError(f"bad file name {f.name!r}")
            dest = os.path.join(path, f.name)
            if f.digest.size_bytes == 0:
                with open(dest, "wb"):
                    pass
                os.chmod(dest, 0o555 if f.is_executable else 0o444)
            else:
                os.link(self.local.path(f.digest, f.is_executable), dest)
        for s in msg.symlinks:
            if not valid_name(s.name):
                raise ValueError(f"bad symlink name {s.name!r}")
            os.symlink(s.target, os.path.join(path, s.name))
        for d in msg.directories:
            if not valid_name(d.name):
                raise ValueError(f"bad directory name {d.name!r}")
            self._materialize(dirs, d.digest.hash, os.path.join(path, d.name))


def is_exe(path: str) -> bool:
    return bool(os.stat(path).st_mode & stat.S_IXUSR)


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def precondition_missing(digests: list) -> status_pb2.Status:
    pf = error_details_pb2.PreconditionFailure()
    for d in digests:
        pf.violations.add(type="MISSING", subject=f"blobs/{d.hash}/{d.size_bytes}")
    st = status_pb2.Status(code=code_pb2.FAILED_PRECONDITION, message=f"{len(digests)} input blob(s) missing")
    st.details.add().Pack(pf)
    return st


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoint", required=True, help="grpc://127.0.0.1:PORT or grpcs://...")
    p.add_argument("--instance", default="main")
    p.add_argument("--name", required=True, help="bot id; also names the log lines")
    p.add_argument("--dir", required=True, help="local CAS and staging dirs go here")
    p.add_argument("--log", required=True, help="one JSON line per lease handled is appended here")
    p.add_argument("--start-when", help="create the bot session only once this file exists")
    p.add_argument("--timeout", type=float, default=120.0, help="per-action timeout unless Action.timeout")
    p.add_argument("--token", help="file with a bearer token (JWT) to send")
    p.add_argument("--ca", help="PEM CA certificate for grpcs://")
    p.add_argument("--property", action="append", help="device property KEY=VALUE (default OSFamily=linux, ISA=x86-64)")
    p.add_argument("--poll-seconds", type=float, default=10.0, help="UpdateBotSession long-poll deadline")
    p.add_argument("--heartbeat-seconds", type=float, default=2.0, help="UpdateBotSession period while busy")
    args = p.parse_args()
    if args.poll_seconds < 4:
        p.error("--poll-seconds must be >= 4 (BuildGrid assigns no lease to a bot polling for < 3.75 s)")

    def on_term(signum, _frame):  # type: ignore[no-untyped-def]
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    os.makedirs(args.dir, exist_ok=True)
    Worker(args).run()


if __name__ == "__main__":
    main()
