"""Runs one NodeTask on this host: directories, files, preparation, then all processes at once.

Standard library only. Every OS process of a task runs as `/bin/bash -c command` in its own
session (so its process group id is its pid and a kill reaches everything it started), with
stdout/stderr files opened for append and handed to the child, so output lands in the files as it
is written. Lifecycle lines go to the task's execution log; environment values never do.

A task's exit code is the first non-zero exit code in `processes` order (a process killed by a
signal counts as 128 + signal), else 0. A non-zero preparation ends the task before any process
starts. A kill sends SIGTERM to every process group of the task and SIGKILL `grace` seconds later.

Processes marked `daemon` (servers, e.g. TensorFlow parameter servers) do not count: they are
stopped once the task's other processes have ended. A task with no other process holds its node
for the job (after its preparation) until it is killed, and then ends with 0: an MPI job's other
nodes run nothing of their own, but a peer's `mpirun` starts its daemons there through `exec`
(see exec_server.py), inside the task, so they are killed with it and their pids are tracked
like the task's own.
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from batchai.agent import containers
from batchai.frameworks.container import PASSWORD_ENV, ContainerSpec, exec_command
from batchai.frameworks.plan import NodeTask, Process

KILL_GRACE_SECONDS = 5.0
DAEMON_STOP_GRACE = 2.0
TERMINATED = "terminated"
PYTHON_ENV = "BATCHAI_PYTHON"  # the interpreter the agent runs on: jobs on machines that joined use it


def utc_now() -> str:
    """UTC ISO-8601 with a Z, millisecond precision."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def exit_code_of(returncode: int) -> int:
    """Popen's returncode as a shell would report it: -N (killed by signal N) -> 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _process_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, process group, start time) of every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # state ppid pgrp ... (starttime is field 22 of the line)
        table[int(entry)] = (int(fields[1]), int(fields[2]), fields[19])
    return table


def descendants(groups: list[int]) -> dict[int, str]:
    """Every process in `groups` or below one of them: pid -> start time (to tell a reused pid).

    Some of a task's processes leave its process groups: the ranks OpenMPI's daemons start each lead
    a group of their own, and outlive a daemon killed first. They are found through their parents.
    """
    table = _process_table()
    found = {pid for pid, (_, pgrp, _) in table.items() if pgrp in groups}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    stack = list(found)
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return {pid: table[pid][2] for pid in found}


def _signal_processes(processes: dict[int, str], sig: int) -> None:
    """Signals the processes still running under the pids `descendants` found (not a reused pid)."""
    if not processes:  # the common end of a task: reading every process's stat is most of its cost
        return
    table = _process_table()
    for pid, start in processes.items():
        if pid in table and table[pid][2] == start:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass


def kill_tree(groups: list[int]) -> None:
    """SIGKILL to the process groups and to every process below them (found first: the orphans of a
    killed parent are not found after)."""
    processes = descendants(groups) if groups else {}
    for pgid in groups:
        _signal_group(pgid, signal.SIGKILL)
    _signal_processes(processes, signal.SIGKILL)


def _parents(*paths: str) -> None:
    for path in paths:
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)


class TaskRunner:
    """Runs one task, synchronously with run() or in its own thread with start().

    `base_env` is the agent's environment without its token; task.env and process.env go on top.
    `on_pids` is called (no arguments) whenever the set of live pids changes; `on_done` is called
    with the runner once the result is known.
    """

    def __init__(
        self,
        task: NodeTask,
        *,
        node_name: str,
        base_env: dict[str, str] | None = None,
        on_pids: Callable[[], None] | None = None,
        on_done: Callable[[TaskRunner], None] | None = None,
        after: Callable[[float], bool | None] | None = None,
        run_as: str | None = None,
    ):
        self.task = task
        self.user = pwd.getpwnam(run_as) if run_as else None  # KeyError: no such user
        self.node_name = node_name
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.on_pids = on_pids
        self.on_done = on_done
        self.after = after  # task.after's state: True prepared, False never will be, None not yet
        self.result: dict | None = None
        self._lock = threading.Lock()
        self._live: dict[int, subprocess.Popen] = {}  # pid -> process, while it runs
        self._groups: list[int] = []  # every process group this task started
        self._killed = False
        self._released = threading.Event()  # set by kill(): a holding task ends
        self._container: tuple[str, ContainerSpec] | None = None  # (runtime, spec) while it runs
        self.warnings: list[str] = []
        self._prepared = threading.Event()  # preparation done (or none): peers may start processes here
        self._over = False  # every process has exited: a kill comes too late
        self._thread: threading.Thread | None = None
        self._log_lock = threading.Lock()

    # ----- public -----------------------------------------------------------------------------

    @property
    def task_id(self) -> str:
        return self.task.task_id

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"task-{self.task_id}", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return self.result is not None

    def exec(self, command: str, wait: float = 0.0) -> subprocess.Popen | None:
        """Start a process for this task from outside (a daemon sent by a peer's mpirun).

        Waits up to `wait` seconds for the task's preparation to finish, as the job's processes
        do. Its output is piped to the caller; None if the task is not ready, killed or over.
        """
        if not self._prepared.wait(wait):
            return None
        env = {**self.base_env, **self.task.env}
        with self._lock:
            if self._killed or self._over:
                return None
            proc = subprocess.Popen(
                ["/bin/bash", "-c", self._command(command, {})],
                cwd=self.task.cwd,
                env=env,
                **self._as_user(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
            )
            self._live[proc.pid] = proc
            self._groups.append(proc.pid)
        self._pids_changed()
        self._log(f"remote launch started pid {proc.pid}")
        return proc

    def reap(self, proc: subprocess.Popen) -> int:
        """Wait for a process from exec() and forget it; its exit code does not count for the task."""
        rc = exit_code_of(proc.wait())
        self._exited(proc)
        self._log(f"remote launch pid {proc.pid} exited with {rc}")
        return rc

    def pids(self) -> list[int]:
        with self._lock:
            return sorted(self._live)

    def kill(self, grace: float = KILL_GRACE_SECONDS) -> bool:
        """SIGTERM to every live process group of the task now, SIGKILL after `grace` seconds.

        False if the task was killed already or has no process left to kill.
        """
        with self._lock:
            if self._over or self._killed:
                return False
            self._killed = True
            groups = list(self._groups)
            live = list(self._live)
        self._released.set()
        processes = descendants(groups)  # before any dies: an orphan's parent is gone
        for pgid in live:
            _signal_group(pgid, signal.SIGTERM)
        _signal_processes(processes, signal.SIGTERM)
        if self._container is not None:  # the runtime's exec clients die, not what they run in the container
            runtime, spec = self._container
            threading.Thread(target=containers.remove, args=(runtime, spec, dict(self.base_env)), daemon=True).start()
        timer = threading.Timer(grace, self._force_kill, args=(groups, processes))
        timer.daemon = True
        timer.start()
        return True

    def run(self) -> dict:
        """Runs the task to its end and returns its result (the heartbeat's `finished` entry)."""
        t = self.task
        start_time = utc_now()
        code, error = 0, None
        try:
            _parents(t.execution_log)
            self._log(f"task {t.task_id} started on node {self.node_name}")
            for d in t.dirs:
                os.makedirs(d, exist_ok=True)
            procs = ([t.preparation] if t.preparation else []) + list(t.processes)
            _parents(*(p.stdout for p in procs), *(p.stderr for p in procs))
            for path, content in t.files.items():
                _parents(path)
                with open(path, "w", encoding="utf-8") as f:
                    f.write(content)
            os.makedirs(t.cwd, exist_ok=True)
            self._give_to_user([*t.dirs, t.cwd, *t.files])
            error = self._script(t.mounts, "mounting the job's volumes")
            code, error = (1, error) if error else self._in_container(self._run_all)
        except Exception as e:  # noqa: BLE001 - any failure becomes the task's result
            code, error = 1, f"the node agent could not run the task: {e}"
            self._log(error)
        self._script(t.unmounts, "unmounting the job's volumes")
        with self._lock:
            self._over = True
            killed = self._killed
            leftovers = list(self._live)
        kill_tree(leftovers)  # daemons a peer started here (and what they started) do not outlive the task
        if killed and (not t.holds_only or code):
            error = TERMINATED
            code = code or 128 + signal.SIGTERM
        self._log(f"task {t.task_id} finished with exit code {code}")
        self.result = {
            "taskId": t.task_id,
            "exitCode": code,
            "error": error,
            "startTime": start_time,
            "endTime": utc_now(),
        }
        if self.warnings:
            self.result["warnings"] = list(self.warnings)
        if self.on_done is not None:
            self.on_done(self)
        return self.result

    # ----- internals --------------------------------------------------------------------------

    def _script(self, script: str, what: str) -> str | None:
        """Runs one of the task's own scripts as the agent (mounting needs root); its error, or None. The
        script holds keys: only its exit code and the end of its error output are logged."""
        if not script:
            return None
        done = subprocess.run(["/bin/bash", "-c", script], capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if done.returncode == 0:
            self._log(f"{what}: done")
            return None
        error = f"{what} failed with exit code {done.returncode}: {done.stderr.strip()[-500:]}"
        self._log(error)
        return error

    def _run_all(self) -> tuple[int, str | None]:
        t = self.task
        if t.after is not None and not self._wait_after():
            self._log(f"not started: task {t.after} of this node did not prepare it")
            return 0, None
        if t.preparation is not None:
            proc = self._spawn(t.preparation)
            if proc is None:  # killed before it started
                return 0, None
            rc = exit_code_of(proc.wait())
            self._exited(proc)
            self._log(f"preparation exited with {rc}")
            if rc != 0:
                return rc, f"job preparation failed with exit code {rc}"
        self._prepared.set()
        started: list[tuple[Process, subprocess.Popen]] = []
        try:
            for p in t.processes:
                proc = self._spawn(p)
                if proc is None:
                    break
                self._log(f"process {_label(p)} started pid {proc.pid}")
                started.append((p, proc))
        except Exception:
            for _, proc in started:  # all or nothing: no process may outlive a task that failed to start
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
                self._exited(proc)
            raise
        codes: list[int | None] = [None] * len(started)

        def wait(i: int, p: Process, proc: subprocess.Popen) -> None:
            codes[i] = exit_code_of(proc.wait())
            self._exited(proc)
            self._log(f"process {_label(p)} exited with {codes[i]}")

        main = [i for i, (p, _) in enumerate(started) if not p.daemon]
        if len(started) == 1 and main:  # one process: this thread waits for it itself
            wait(0, *started[0])
            return codes[0] or 0, None
        waiters = [threading.Thread(target=wait, args=(i, p, proc), daemon=True) for i, (p, proc) in enumerate(started)]
        for w in waiters:
            w.start()
        if main:
            for i in main:
                waiters[i].join()
        else:
            self._log("holding the node for the job")
            self._released.wait()
        self._stop_daemons([(started[i][1], waiters[i]) for i, (p, _) in enumerate(started) if p.daemon])
        return next((code for code in (codes[i] for i in main) if code), 0), None

    def _wait_after(self) -> bool:
        while not self._released.is_set():
            state = self.after(0.2) if self.after is not None else False
            if state is not None:
                return state
        return False

    @property
    def prepared(self) -> threading.Event:
        return self._prepared

    def _stop_daemons(self, daemons: list[tuple[subprocess.Popen, threading.Thread]]) -> None:
        """The job's own processes are done: servers get SIGTERM, then SIGKILL after the grace."""
        for proc, _ in daemons:
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + DAEMON_STOP_GRACE
        for proc, waiter in daemons:
            waiter.join(max(0.0, deadline - time.monotonic()))
            if waiter.is_alive():
                _signal_group(proc.pid, signal.SIGKILL)
                waiter.join()

    def _in_container(self, run: Callable[[], tuple[int, str | None]]) -> tuple[int, str | None]:
        """Run the task in its container when it has one and the node has a usable runtime."""
        spec = self.task.container
        if spec is None:
            return run()
        runtime = containers.usable_runtime()
        if runtime is None:
            warning = f"no usable container runtime (docker or podman) on {self.node_name}: ran on the host, not in {spec.image}"
            self.warnings.append(warning)
            self._log(warning)
            return run()
        env = {**self.base_env, **self.task.env}
        try:
            containers.start(runtime, spec, self.task.cwd, env)
        except containers.ContainerError as e:
            return 1, f"the job's container could not start: {e}"
        self._container = (runtime, spec)
        self._log(f"container {spec.name} started from {spec.image} ({runtime})")
        try:
            return run()
        finally:
            containers.remove(runtime, spec, env)
            self._log(f"container {spec.name} removed")

    def _give_to_user(self, paths: list[str]) -> None:
        """The job's own directories and files belong to the user it runs as (the agent made them)."""
        if self.user is not None:
            for path in paths:
                try:
                    os.chown(path, self.user.pw_uid, self.user.pw_gid)
                except OSError as e:  # a volume that keeps its own owners (blobfuse, cifs): as the volume allows
                    self._log(f"could not give {path} to {self.user.pw_name}: {e}")

    def _as_user(self, env: dict[str, str]) -> dict:
        """Popen arguments that run a process on the host as the job's user (a container's runtime stays the agent's)."""
        if self.user is None or self._container is not None:
            return {}
        env.update(HOME=self.user.pw_dir, USER=self.user.pw_name, LOGNAME=self.user.pw_name)
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def _command(self, command: str, extra_env: dict[str, str]) -> str:
        """`command` as run: as it is on the host, or exec'd into the task's container."""
        if self._container is None:
            return command
        runtime, spec = self._container
        names = [n for n in {**self.task.env, **extra_env} if n != PASSWORD_ENV]
        return exec_command(runtime, spec, self.task.cwd, names, command)

    def _spawn(self, p: Process) -> subprocess.Popen | None:
        env = {**self.base_env, **self.task.env, **p.env}
        if self._container is None:
            env.pop(PASSWORD_ENV, None)  # only the runtime's login reads it
        with self._lock:
            if self._killed:
                return None
            out = open(p.stdout, "ab")
            try:
                err = open(p.stderr, "ab")
                try:
                    proc = subprocess.Popen(
                        ["/bin/bash", "-c", self._command(p.command, p.env)],
                        cwd=self.task.cwd,
                        env=env,
                        **self._as_user(env),
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=err,
                        start_new_session=True,
                        close_fds=True,
                    )
                finally:
                    err.close()
            finally:
                out.close()
            self._live[proc.pid] = proc
            self._groups.append(proc.pid)
        self._pids_changed()
        return proc

    def _exited(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._live.pop(proc.pid, None)
        self._pids_changed()

    def _pids_changed(self) -> None:
        if self.on_pids is not None:
            try:
                self.on_pids()
            except Exception:  # noqa: BLE001 - bookkeeping must not break the task
                pass

    def _force_kill(self, groups: list[int], processes: dict[int, str]) -> None:
        for pgid in groups:
            _signal_group(pgid, signal.SIGKILL)
        _signal_processes(processes, signal.SIGKILL)

    def _log(self, line: str) -> None:
        """One timestamped lifecycle line in the execution log (never environment values)."""
        try:
            with self._log_lock, open(self.task.execution_log, "a", encoding="utf-8") as f:
                f.write(f"{utc_now()} {line}\n")
        except OSError:
            pass


def _label(p: Process) -> str:
    return p.name or "main"
