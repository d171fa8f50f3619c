"""The node agent's loop: register, heartbeat (long poll), start and kill tasks, report results.

Standard library only. The heartbeat (a long poll) is made by a worker thread; the main thread
only waits for a stop (SIGTERM/SIGINT, `action: "shutdown"`, or being orphaned) and then shuts
down. A finished task is reported at once by a short extra heartbeat (`waitSeconds: 0`) rather
than when the long poll in flight returns: otherwise every job would end up to one heartbeat
interval late, and a queue of short jobs would run at one job per interval per node. Every heartbeat
and report also carries the new lines of each task's metrics file (`AZ_BATCHAI_METRICS_FILE`, see
batchai/metrics.py), a finished task's last ones before its result. Tasks run in their own threads (see runner.py), so heartbeats go on while they
run. Finished results are re-sent on every heartbeat until the control plane acknowledges them.

The pids of the tasks' running processes (each its own process group) are kept in
`{root}/agent.pids`, one per line, so that something outside the agent (LocalCompute.kill_node)
can kill a node's tasks after the agent itself is gone.
"""

from __future__ import annotations

import ctypes
import http.client
import json
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from urllib.parse import quote, urlsplit

from batchai.agent import gpus
from batchai.agent.environment import inherited
from batchai.agent.exec_server import ExecServer
from batchai.agent.remote_login import RemoteLogin
from batchai.agent.runner import KILL_GRACE_SECONDS, PYTHON_ENV, TERMINATED, TaskRunner, utc_now
from batchai.agent.uploads import Uploads, sync_quietly
from batchai.frameworks.plan import NodeTask
from batchai.metrics import MAX_LINE_BYTES, MAX_LINES_PER_REPORT, MAX_REPORT_BYTES

log = logging.getLogger("batchai.agent")

TOKEN_ENV = "BATCHAI_NODE_TOKEN"
ENROLL_TOKEN_ENV = "BATCHAI_ENROLL_TOKEN"  # how `batchai node join` is best given its token (argv is readable by all)
# never handed to a task: the node's credential, its cluster's enrollment token, and the control
# plane's own token should a local agent inherit it
REVOKED = "revoked"
PR_SET_DUMPABLE = 4
BACKOFF_MIN, BACKOFF_MAX = 0.2, 2.0
REGISTER_TIMEOUT = 10.0
LONG_POLL_SLACK = 10.0  # client timeout of a heartbeat = waitSeconds + this
SHUTDOWN_KILL_GRACE = 2.0  # on SIGTERM of the agent: tasks get this long between SIGTERM and SIGKILL
FINAL_REPORT_TIMEOUT = 2.0
PIDS_FILE = "agent.pids"
INTERNAL_ERROR = "internal error"


def _not_dumpable() -> None:
    """Jobs running as this agent's user cannot read its memory nor its first environment (where a
    local node's credential came in) through /proc: the kernel makes those root's alone."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: nothing of the kind to close
        log.debug("prctl(PR_SET_DUMPABLE) is not available here")


class HttpError(Exception):
    def __init__(self, status: int, text: str):
        super().__init__(f"HTTP {status}: {text[:200]}")
        self.status = status


class Unreachable(Exception):
    pass


class ControlPlane:
    """Where the control plane is (a fixed URL, or a JSON file re-read after failures) and how to call it."""

    def __init__(self, *, token: str, url: str | None = None, url_file: str | None = None):
        if not url and not url_file:
            raise ValueError("a URL or a control-plane file is needed")
        self._token = token
        self._file = url_file
        self.url = url.rstrip("/") if url else None
        self._pool_lock = threading.Lock()
        self._idle: list[tuple[str, http.client.HTTPConnection]] = []
        if self._file:
            self.reload()

    @property
    def credential(self) -> str:
        """The node's credential: what the control plane's exec tickets for this node are signed with."""
        return self._token

    def reload(self) -> bool:
        """Re-reads the control-plane file; true if the URL changed."""
        if not self._file:
            return False
        try:
            with open(self._file, encoding="utf-8") as f:
                url = str(json.load(f)["url"]).rstrip("/")
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.debug("cannot read the control-plane file %s: %s", self._file, e)
            return False
        if url == self.url:
            return False
        log.info("control plane at %s", url)
        self.url = url
        self.close()
        return True

    def close(self) -> None:
        """Closes the kept-alive connections."""
        with self._pool_lock:
            idle, self._idle = self._idle, []
        for _, conn in idle:
            conn.close()

    def post(self, path: str, body: dict, timeout: float) -> dict:
        url = self.url
        if not url:
            raise Unreachable("the control plane's address is not known yet")
        data = json.dumps(body).encode()
        path = urlsplit(url).path.rstrip("/") + path
        # Connections are kept alive (a node calls at least once a second; a new one per call cost both
        # sides more than the call). A kept one the server has closed since fails before any answer:
        # that call is made again on a new connection.
        conn, reused = self._connection(url, timeout)
        try:
            try:
                status, text, reusable = self._exchange(conn, path, data)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                if not reused:
                    raise
                conn, reused = self._connection(url, timeout, fresh=True)
                status, text, reusable = self._exchange(conn, path, data)
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise Unreachable(f"{type(e).__name__}: {e}") from None
        with self._pool_lock:
            kept = reusable and url == self.url  # not after a move: reload() closed the pool
            if kept:
                self._idle.append((url, conn))
        if not kept:
            conn.close()
        if status != 200:
            raise HttpError(status, text)
        try:
            answer = json.loads(text) if text else {}
        except ValueError:
            raise Unreachable("the control plane's answer is not JSON") from None
        if not isinstance(answer, dict):
            raise Unreachable("the control plane's answer is not a JSON object")
        return answer

    def _connection(self, url: str, timeout: float, fresh: bool = False) -> tuple[http.client.HTTPConnection, bool]:
        """(a connection to `url` whose calls time out after `timeout`, whether it was kept from before)."""
        conn = None
        if not fresh:
            with self._pool_lock:
                while self._idle and conn is None:
                    kept_url, kept = self._idle.pop()
                    if kept_url == url:
                        conn = kept
                    else:
                        kept.close()
        if conn is not None and conn.sock is not None:
            conn.sock.settimeout(timeout)
            return conn, True
        parts = urlsplit(url)
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        return cls(parts.hostname or "127.0.0.1", parts.port, timeout=timeout), False

    def _exchange(self, conn: http.client.HTTPConnection, path: str, data: bytes) -> tuple[int, str, bool]:
        """(status, body, whether the connection can carry another call) of one POST."""
        headers = {"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"}
        conn.request("POST", path, body=data, headers=headers)
        resp = conn.getresponse()
        text = resp.read().decode("utf-8", "replace")
        return resp.status, text, not resp.will_close


class MetricsTail:
    """The lines of one task's metrics file not yet delivered to the control plane. The file is emptied when
    the task starts (a job's node directory outlives an attempt); lines count from 0 for the task."""

    READ_BYTES = 1 << 20

    def __init__(self, path: str):
        self.path = path
        self.offset = 0  # bytes read
        self.sent = 0  # lines delivered
        self.pending: list[str] = []
        self.partial = b""
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            open(path, "wb").close()
        except OSError as e:
            log.warning("cannot prepare the metrics file %s: %s", path, e)

    def report(self, task_id: str, budget: int) -> dict | None:
        """The undelivered lines, as many as fit in `budget` bytes (the rest go with a later heartbeat)."""
        data = b""
        if len(self.pending) < MAX_LINES_PER_REPORT:  # a job writing faster than heartbeats relay waits in its file
            try:
                with open(self.path, "rb") as f:
                    f.seek(self.offset)
                    data = f.read(self.READ_BYTES)
            except OSError:
                pass
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        self.pending += [line.decode("utf-8", "replace") for line in lines if line.strip() and len(line) <= MAX_LINE_BYTES]
        if len(self.partial) > MAX_LINE_BYTES:  # an endless line is dropped, not kept in memory
            self.partial = b""
        chosen: list[str] = []
        size = 0
        for line in self.pending[:MAX_LINES_PER_REPORT]:
            size += len(line) + 8  # its JSON quoting, roughly
            if size > budget:
                break
            chosen.append(line)
        return {"taskId": task_id, "from": self.sent, "lines": chosen} if chosen else None

    def delivered(self, report: dict) -> None:
        """The control plane has the report's lines (a concurrent report may have delivered some already)."""
        end = report["from"] + len(report["lines"])
        if end > self.sent:
            del self.pending[: end - self.sent]
            self.sent = end


class Agent:
    def __init__(
        self,
        *,
        node_id: str,
        cluster_id: str,
        name: str,
        root: str,
        control_plane: ControlPlane,
        address: str = "127.0.0.1",
        heartbeat: float = 1.0,
        orphan_timeout: float = 600.0,
        run_as: str | None = None,
    ):
        self.run_as = run_as  # jobs run as this user (the agent itself stays root on a VM: it mounts)
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.name = name
        self.root = os.path.abspath(root)
        self.cp = control_plane
        self.address = address
        self.interval = heartbeat
        self.orphan_timeout = orphan_timeout
        self.boot_id = uuid.uuid4().hex
        self.base_env = inherited(os.environ)
        self.base_env[PYTHON_ENV] = sys.executable
        self._paths = f"/internal/v1/nodes/{quote(node_id, safe='')}"
        self._lock = threading.Lock()
        self._runners: dict[str, TaskRunner] = {}  # running tasks
        self._finished: dict[str, dict] = {}  # results not yet acknowledged
        self._seen: set[str] = set()  # every task id this boot has accepted
        self._metrics: dict[str, MetricsTail] = {}  # tasks' metrics files, until all their lines are delivered
        self._changes = 0  # tasks finished and answers acted on: a heartbeat sees whether any came while it was out
        self._pids_written: list[int] | None = None  # what agent.pids holds (None: a file of an earlier boot)
        self._stopping = False
        self._stop_reason: str | None = None  # set by the signal handler or the worker
        self._stop = threading.Event()  # set by the main thread once it shuts down
        self._wake = threading.Event()  # a task finished: heartbeat now
        self._reporting = threading.Lock()  # at most one immediate report in flight
        self._registered = False
        self._last_ok = time.monotonic()
        self._backoff = BACKOFF_MIN
        self._failing = False
        self._exec: ExecServer | None = None
        self.gpus = gpus.detect()
        self._uploads = Uploads(lambda what, body, timeout: self.cp.post(f"{self._paths}/{what}", body, timeout))
        self._uploading = threading.Lock()  # one sync at a time: the uploads thread, or a task's last one

    # ----- main thread ------------------------------------------------------------------------

    def run(self) -> int:
        _not_dumpable()
        os.makedirs(self.root, exist_ok=True)
        self._write_pids()
        sessions = RemoteLogin(
            node_id=self.node_id,
            node_name=self.name,
            credential=self.cp.credential,
            root=self.root,
            base_env=self.base_env,
            runners=self._running_tasks,
        )
        self._exec = ExecServer(self.address, self._running_tasks, remote_login=sessions)
        self._exec.start()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        log.info("agent %s (node %s, boot %s, pid %d) starting", self.name, self.node_id, self.boot_id, os.getpid())
        worker = threading.Thread(target=self._work, name="heartbeat", daemon=True)
        worker.start()
        threading.Thread(target=self._upload_loop, name="uploads", daemon=True).start()
        while self._stop_reason is None:
            self._stop.wait(0.1)  # the signal handler only sets a field: no locks in handlers
        return self._shutdown(self._stop_reason)

    def request_stop(self, reason: str) -> None:
        if self._stop_reason is None:
            self._stop_reason = reason

    def _on_signal(self, signum, frame) -> None:
        self.request_stop(f"signal {signum}")

    def _shutdown(self, reason: str) -> int:
        log.info("stopping (%s)", reason)
        with self._lock:
            self._stopping = True
            runners = list(self._runners.values())
        self._stop.set()
        self._wake.set()
        for r in runners:
            r.kill(grace=SHUTDOWN_KILL_GRACE)
        deadline = time.monotonic() + SHUTDOWN_KILL_GRACE + 1.0
        for r in runners:
            r.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            running = sorted(self._runners)
            finished = list(self._finished.values())
        if finished and reason != "orphaned":
            try:
                self.cp.post(
                    f"{self._paths}/heartbeat",
                    {
                        "bootId": self.boot_id,
                        "running": running,
                        "finished": finished,
                        "waitSeconds": 0,
                    },
                    timeout=FINAL_REPORT_TIMEOUT,
                )
                log.info("reported %d finished task(s)", len(finished))
            except (Unreachable, HttpError) as e:
                log.warning("could not report the last results: %s", e)
        self._write_pids()
        self.cp.close()
        if self._exec is not None:
            self._exec.stop()
        log.info("agent stopped")
        return 1 if reason == INTERNAL_ERROR else 0

    # ----- worker thread ----------------------------------------------------------------------

    def _work(self) -> None:
        try:
            while not self._stop.is_set() and self._stop_reason is None:
                if not self._registered:
                    self._register()
                else:
                    self._heartbeat()
        except Exception:  # noqa: BLE001 - a bug here must stop the agent, not leave it mute
            log.exception("the agent's loop failed")
            self.request_stop(INTERNAL_ERROR)

    def _call(self, what: str, body: dict, timeout: float) -> dict:
        try:
            answer = self.cp.post(f"{self._paths}/{what}", body, timeout)
        except HttpError as e:
            if e.status == 403:  # this node was removed (or its credential is not its own): nothing to retry
                log.warning("the control plane refused this node's credential: %s", e)
                self.request_stop(REVOKED)
                raise
            # refused, not unreachable: a heartbeat refused with 401/404 registers again at once
            self._failed(what, e, pause=not (what == "heartbeat" and e.status in (401, 404)))
            raise
        except Unreachable as e:
            self._failed(what, e)
            raise
        if self._failing:
            log.info("control plane reachable again")
        self._failing = False
        self._last_ok = time.monotonic()
        self._backoff = BACKOFF_MIN
        return answer

    def _failed(self, what: str, error: Exception, pause: bool = True) -> None:
        if not self._failing:
            log.warning("%s failed: %s", what, error)
        else:
            log.debug("%s failed: %s", what, error)
        self._failing = True
        moved = self.cp.reload()
        with self._lock:
            idle = not self._runners
        if idle and time.monotonic() - self._last_ok > self.orphan_timeout:
            log.warning("no answer from the control plane for %.0f s and no task running", self.orphan_timeout)
            self.request_stop("orphaned")
            return
        if moved:  # the control plane is somewhere else now: try there at once
            self._backoff = BACKOFF_MIN
            return
        if not pause:
            self._stop.wait(BACKOFF_MIN)
            return
        self._stop.wait(self._backoff)
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)

    def _register(self) -> None:
        body = {
            "clusterId": self.cluster_id,
            "name": self.name,
            "address": self.address,
            "pid": os.getpid(),
            "bootId": self.boot_id,
            "root": self.root,
            "execPort": self._exec.port if self._exec else None,
            "gpus": self.gpus,
        }
        try:
            answer = self._call("register", body, REGISTER_TIMEOUT)
        except (Unreachable, HttpError):
            return
        seconds = answer.get("heartbeatSeconds")
        if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds > 0:
            self.interval = float(seconds)
        self._registered = True
        log.info("registered with %s (heartbeat %.2f s)", self.cp.url, self.interval)

    def _heartbeat(self) -> None:
        with self._lock:
            running = sorted(self._runners)
            finished = list(self._finished.values())
            reports = self._metric_reports()
            changes = self._changes
        sent = time.monotonic()
        body = {"bootId": self.boot_id, "running": running, "finished": finished, "metrics": reports, "waitSeconds": self.interval}
        try:
            answer = self._call("heartbeat", body, self.interval + LONG_POLL_SLACK)
            self._delivered(reports)
        except HttpError as e:
            if e.status in (401, 404):
                log.info("heartbeat refused (%d): registering again", e.status)
                self._registered = False
            return
        except Unreachable:
            return
        # Also when a task finished or a report's answer changed something while this call was out: its
        # answer may be orders carried out already (a start, the acks of results both carried), given
        # without holding the poll, and a wait would leave the node deaf to its next start.
        if self._apply(answer) or self._changes != changes:
            self._wake.clear()
            return
        remaining = self.interval - (time.monotonic() - sent)
        if remaining > 0:
            self._wake.wait(remaining)
        self._wake.clear()

    def _apply(self, answer: dict) -> bool:
        """Acts on a heartbeat's answer; true if anything changed (then heartbeat again at once).

        Orders that change nothing (a start of a known task, a kill of an unknown one) do not count,
        so a control plane that repeats them cannot make the agent spin.
        """
        action = answer.get("action") or "ok"
        if action == "shutdown":
            log.info("the control plane asked this node to shut down")
            self.request_stop("shutdown")
            return True
        with self._lock:
            acked = [t for t in answer.get("ack") or [] if isinstance(t, str) and self._finished.pop(t, None) is not None]
        started = [self._start(spec) for spec in answer.get("start") or []]
        killed = [self._kill(task_id) for task_id in answer.get("kill") or []]
        if action == "register":
            log.info("the control plane asked this node to register again")
            self._registered = False
        changed = bool(acked) or any(started) or any(killed) or action != "ok"
        if changed:
            with self._lock:
                self._changes += 1
        return changed

    # ----- tasks ------------------------------------------------------------------------------

    def _start(self, spec) -> bool:
        """Starts a task unless this boot already has it; true if it did something."""
        task_id = spec.get("task_id") if isinstance(spec, dict) else None
        if not isinstance(task_id, str):
            log.warning("ignoring a task without an id")
            return False
        with self._lock:
            if self._stopping or task_id in self._seen:
                return False
            self._seen.add(task_id)
            try:
                task = NodeTask.from_json(spec)
            except (TypeError, ValueError, KeyError, AttributeError) as e:
                log.warning("task %s is malformed: %s", task_id, e)
                now = utc_now()
                self._finished[task_id] = {
                    "taskId": task_id,
                    "exitCode": 1,
                    "error": f"the node agent cannot read the task: {e}",
                    "startTime": now,
                    "endTime": now,
                }
                self._wake.set()
                return True
            runner = TaskRunner(
                task,
                node_name=self.name,
                base_env=self.base_env,
                run_as=self.run_as,
                on_pids=self._write_pids,
                on_done=self._task_done,
                after=self._prepared_state(task.after) if task.after else None,
            )
            self._runners[task_id] = runner
            if task.env.get("AZ_BATCHAI_METRICS_FILE"):
                self._metrics[task_id] = MetricsTail(task.env["AZ_BATCHAI_METRICS_FILE"])
        log.info("task %s (job %s) starting", task_id, task.job_id)
        runner.start()
        return True

    def _prepared_state(self, task_id: str) -> Callable[[float], bool | None]:
        """Whether this boot's task `task_id` has prepared the node: True, False (ended without), None (not yet)."""

        def state(timeout: float) -> bool | None:
            with self._lock:
                runner = self._runners.get(task_id)
                ended = runner is None and (task_id in self._finished or task_id in self._seen)
            if runner is not None:
                if runner.prepared.wait(timeout):
                    return True
                return False if runner.result is not None else None
            if ended:
                return False
            time.sleep(timeout)
            return None

        return state

    def _running_tasks(self) -> list[TaskRunner]:
        with self._lock:
            return list(self._runners.values())

    def _kill(self, task_id) -> bool:
        """Kills a running task (idempotent); true if this order started the kill."""
        with self._lock:
            runner = self._runners.get(task_id) if isinstance(task_id, str) else None
        if runner is None or not runner.kill(grace=KILL_GRACE_SECONDS):
            return False
        log.info("killing task %s", task_id)
        return True

    def _upload_loop(self) -> None:
        """Sends running tasks' files every heartbeat interval (only tasks on machines that joined have any)."""
        while not self._stop.wait(self.interval):
            for runner in self._running_tasks():
                if runner.task.uploads and self._registered:
                    with self._uploading:
                        sync_quietly(self._uploads, runner.task)

    def _task_done(self, runner: TaskRunner) -> None:
        if runner.task.uploads:  # before the result: a job seen ended has all its files at the control plane
            with self._uploading:
                sync_quietly(self._uploads, runner.task)
                self._uploads.forget(runner.task_id)
        result = dict(runner.result or {})
        with self._lock:
            self._runners.pop(runner.task_id, None)
            self._finished[runner.task_id] = result
            self._changes += 1
        log.info(
            "task %s finished with exit code %s%s",
            runner.task_id,
            result.get("exitCode"),
            f" ({result['error']})" if result.get("error") == TERMINATED else "",
        )
        self._write_pids()
        self._report_now()  # on the task's own thread, which ends with it: a thread per task fewer

    def _report_now(self) -> None:
        """Send finished results now; the answer (acks, new tasks) is applied like a heartbeat's.

        Loops while tasks finish during a report, so none waits for the long poll. A task that finishes
        just as the report in flight has looked for the last time finds it still in flight and leaves
        its result to it: so that report looks once more after letting go.
        """
        sent: set[str] = set()
        while self._registered and self._reporting.acquire(blocking=False):
            try:
                if not self._report_finished(sent):
                    return  # failed: the heartbeat carries the results
            finally:
                self._reporting.release()
            with self._lock:
                if self._stopping or set(self._finished) <= sent:
                    return

    def _report_finished(self, sent: set[str]) -> bool:
        """Report what finished and is not in `sent` (and add it), until nothing is; False if a report failed."""
        while True:
            with self._lock:
                if self._stopping:
                    return True
                running = sorted(self._runners)
                finished = list(self._finished.values())
                if not finished or {f["taskId"] for f in finished} <= sent:
                    return True
                reports = self._metric_reports()
            sent |= {f["taskId"] for f in finished}
            body = {"bootId": self.boot_id, "running": running, "finished": finished, "metrics": reports, "waitSeconds": 0}
            try:
                answer = self.cp.post(f"{self._paths}/heartbeat", body, FINAL_REPORT_TIMEOUT + self.interval)
            except (Unreachable, HttpError) as e:
                log.debug("immediate report failed (the heartbeat will carry it): %s", e)
                return False
            self._delivered(reports)
            if answer.get("action", "ok") == "ok":
                self._apply(answer)

    def _metric_reports(self) -> list[dict]:
        """New metric lines of every task (under the lock, after the finished results were read: a finished
        task's file is complete by then)."""
        reports, budget = [], MAX_REPORT_BYTES
        for task_id, tail in self._metrics.items():
            report = tail.report(task_id, budget)
            if report is not None:
                reports.append(report)
                budget -= sum(len(line) + 8 for line in report["lines"])
        return reports

    def _delivered(self, reports: list[dict]) -> None:
        with self._lock:
            for report in reports:
                tail = self._metrics.get(report["taskId"])
                if tail is not None:
                    tail.delivered(report)
            for task_id in [
                t for t, tail in self._metrics.items() if not tail.pending and t not in self._runners and t not in self._finished
            ]:
                del self._metrics[task_id]

    def _write_pids(self) -> None:
        """`{root}/agent.pids`: the pid (= process group id) of every running task process."""
        with self._lock:
            pids = sorted({pid for r in self._runners.values() for pid in r.pids()})
            if pids == self._pids_written:  # a file made and renamed costs the node more than a short task
                return
            path = os.path.join(self.root, PIDS_FILE)
            tmp = f"{path}.{os.getpid()}.tmp"
            try:
                with open(tmp, "w", encoding="utf-8") as f:
                    f.write("".join(f"{pid}\n" for pid in pids))
                os.replace(tmp, path)
                self._pids_written = pids
            except OSError as e:
                log.warning("cannot write %s: %s", path, e)
