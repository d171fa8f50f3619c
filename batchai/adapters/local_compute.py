"""Local compute: every node of a local cluster is a node agent process on this machine.

Each agent (`python -m batchai.agent`) gets its own root directory, `{data_dir}/nodes/{cluster}/{node}`,
which plays the node's disk; it logs to `{root}/agent.log` and lists its running task pids
(each task process leads its own process group) in `{root}/agent.pids`.

Why agents start in their own session (`start_new_session=True`): a node is a machine, and
machines do not die with the control plane. In their own session the agents are not in the
foreground terminal's process group, so a Ctrl-C (SIGINT to that group) or a closed terminal
(SIGHUP) stops the control plane but not the nodes and the jobs they run; they are not killed
either when the control plane is `kill -9`ed. A restarted control plane finds them again by pid
(checked against /proc/<pid>/cmdline, since pids get reused), they re-read the control-plane file
to find its new port, and jobs go on. To stop nodes, the control plane calls stop_node.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import batchai
from batchai.adapters import local_storage
from batchai.agent.environment import inherited
from batchai.ports import start_each

TOKEN_ENV = "BATCHAI_NODE_TOKEN"
PIDS_FILE = "agent.pids"
EVICTED_MARK = "evicted"
_PACKAGE_PARENT = str(Path(batchai.__file__).resolve().parent.parent)


class LocalCompute:
    """Starts and stops node agents as local processes (the `Compute` port)."""

    remote = False

    def __init__(
        self,
        data_dir: Path,
        *,
        control_plane_file: Path,
        credential: Callable[[str], str],
        python: str = sys.executable,
        heartbeat: float = 1.0,
    ):
        self.data_dir = Path(data_dir)
        self.control_plane_file = Path(control_plane_file)
        self.credential = credential  # node id -> that node's credential
        self.python = python
        self.heartbeat = heartbeat
        self._children: dict[int, subprocess.Popen] = {}  # agents this process started

    def mount(self, root: str, mount_volumes: dict | None, file_server_export) -> list[str]:
        """Make the volumes appear under `root` on every node (locally: links to shared dirs)."""
        return local_storage.mount(self.data_dir, root, mount_volumes, file_server_export)

    def unmount(self, root: str, mount_volumes: dict | None) -> None:
        local_storage.unmount(root, mount_volumes)

    def evict(self, node: dict) -> None:
        """Simulates a low-priority eviction: the machine vanishes at once (agent and tasks killed), and its
        root carries a mark that `evicted` reports until a new node starts under the same name."""
        if node.get("root") and Path(node["root"]).is_dir():
            (Path(node["root"]) / EVICTED_MARK).write_text("evicted\n")
        self.kill_node(node)

    def evicted(self, nodes: list[dict]) -> list[str]:
        """Ids of the nodes an eviction took (their roots carry the mark)."""
        return [n["id"] for n in nodes if n.get("root") and (Path(n["root"]) / EVICTED_MARK).exists()]

    def node_root(self, cluster_key: str, node_name: str) -> Path:
        root = self.data_dir / "nodes" / cluster_key / node_name
        root.mkdir(parents=True, exist_ok=True)
        return root

    def start_nodes(self, *, cluster_id: str, cluster_key: str, nodes: list[tuple[str, str]]) -> list[dict | Exception]:
        return start_each(self, cluster_id=cluster_id, cluster_key=cluster_key, nodes=nodes)

    def start_node(self, *, node_id: str, cluster_id: str, cluster_key: str, name: str) -> dict:
        root = self.node_root(cluster_key, name)
        (root / EVICTED_MARK).unlink(missing_ok=True)  # a new machine under an evicted one's name
        env = inherited(os.environ)  # never the control plane's secrets
        env[TOKEN_ENV] = self.credential(node_id)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_PARENT, env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        cmd = [
            self.python,
            "-m",
            "batchai.agent",
            "--node-id",
            node_id,
            "--cluster-id",
            cluster_id,
            "--name",
            name,
            "--root",
            str(root),
            "--control-plane-file",
            str(self.control_plane_file.resolve()),
            "--address",
            "127.0.0.1",
            "--heartbeat",
            repr(float(self.heartbeat)),
        ]
        with open(root / "agent.log", "ab") as out:  # a crash before logging starts still lands there
            proc = subprocess.Popen(
                cmd,
                cwd=str(root),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                close_fds=True,
            )
        self._children[proc.pid] = proc
        _await_command_line(proc)
        return {"id": node_id, "pid": proc.pid, "root": str(root), "address": "127.0.0.1", "machine": None}

    def is_alive(self, node: dict) -> bool:
        pid = node.get("pid")
        node_id = str(node.get("id") or "")
        if not pid or not node_id:
            return False
        try:
            cmdline = Path(f"/proc/{int(pid)}/cmdline").read_bytes()  # empty for a zombie
        except OSError:
            cmdline = b""
        if node_id.encode() in cmdline.split(b"\0"):
            return True
        self._reap(int(pid))
        return False

    def stop_node(self, node: dict, *, grace: float = 5.0) -> None:
        """SIGTERM (the agent kills its tasks and reports them), then SIGKILL after `grace` seconds."""
        pid = node.get("pid")
        root = self._root_of(node)
        if pid and self.is_alive(node):
            _signal(pid, signal.SIGTERM)
            self._wait_gone(node, grace)
            if self.is_alive(node):
                _signal(pid, signal.SIGKILL)
                self._wait_gone(node, 2.0)
        # whatever the agent could not stop (it was SIGKILLed, or died earlier) goes now
        self._kill_tasks(root)

    def kill_node(self, node: dict) -> None:
        """SIGKILL to the agent and to its tasks' process groups: the machine just died."""
        root = self._root_of(node)
        pid = node.get("pid")
        if pid and self.is_alive(node):
            _signal(pid, signal.SIGKILL)
            self._wait_gone(node, 2.0)  # first, so that it starts no task after the list is read
        self._kill_tasks(root)

    def close(self) -> None:
        """Nothing to release: the agents are machines, and outlive this process by design (see above)."""

    # ----- internals --------------------------------------------------------------------------

    def _reap(self, pid: int, timeout: float = 0.0) -> None:
        """Collects the exit status of an agent this instance started, once it is gone."""
        proc = self._children.get(pid)
        if proc is None:
            return
        try:
            proc.wait(timeout) if timeout else proc.poll()
        except subprocess.TimeoutExpired:
            pass
        if proc.returncode is not None:
            self._children.pop(pid, None)

    def _wait_gone(self, node: dict, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.is_alive(node) and time.monotonic() < deadline:
            time.sleep(0.02)
        if node.get("pid"):
            self._reap(int(node["pid"]), timeout=max(0.1, deadline - time.monotonic()))

    def _root_of(self, node: dict) -> str | None:
        if node.get("root"):
            return str(node["root"])
        try:  # a node record without its root: ask the agent's command line
            args = Path(f"/proc/{int(node['pid'])}/cmdline").read_bytes().split(b"\0")
        except (OSError, KeyError, TypeError, ValueError):
            return None
        if str(node.get("id", "")).encode() in args and b"--root" in args:
            i = args.index(b"--root")
            if i + 1 < len(args):
                return args[i + 1].decode()
        return None

    def _kill_tasks(self, root: str | None) -> None:
        if not root:
            return
        path = Path(root) / PIDS_FILE
        try:
            lines = path.read_text().split()
        except OSError:
            return
        for line in lines:
            try:
                pgid = int(line)
            except ValueError:
                continue
            if pgid > 1 and _is_our_group(pgid):
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        try:
            path.write_text("")
        except OSError:
            pass


def _await_command_line(proc: subprocess.Popen, timeout: float = 2.0) -> None:
    """Until the agent's command line shows in /proc, `is_alive` cannot recognise it: Popen may return (after
    a vfork) before the kernel has set up the new program's arguments, and /proc/<pid>/cmdline reads empty."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if Path(f"/proc/{proc.pid}/cmdline").read_bytes():
                return
        except OSError:
            return
        time.sleep(0.001)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(int(pid), sig)
    except (ProcessLookupError, PermissionError):
        pass


def _is_our_group(pgid: int) -> bool:
    """Whether killpg(pgid) can only reach a task's process group, not a process that reused the pid.

    A task process leads its own group. If the pid now belongs to a process that does not lead its
    group, the pid was reused. If no process has the pid, the kernel does not hand it out while a
    group of that id still has members, so the group (if any) is still the task's.
    """
    try:
        stat = Path(f"/proc/{pgid}/stat").read_text()
    except OSError:
        return True
    fields = stat[stat.rindex(")") + 2 :].split()  # state ppid pgrp ...
    return int(fields[2]) == pgid
