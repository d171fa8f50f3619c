"""`mpirun`'s remote shell on local clusters: `rsh.py HOST COMMAND...` runs COMMAND on node HOST.

Standard library only. OpenMPI calls its `plm_rsh_agent` like ssh, with the host name and the
daemon's command line; this connects to that node's agent (its exec service, found in
`BATCHAI_EXEC_HOSTS` = `name=address:port,...`), authenticates with the job's
`BATCHAI_EXEC_SECRET`, relays the command's output and exits with its exit code. Being killed
(as mpirun does when it aborts) hangs up, which kills the command on the node. A node that has
not started the job's task yet refuses the secret; it is asked again, with a growing pause, for
up to `BATCHAI_EXEC_WAIT_SECONDS` (READY_WAIT by default).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

from batchai.agent.exec_server import HOSTS_ENV, READY_WAIT, REFUSED, SECRET_ENV, read_frame

WAIT_ENV = "BATCHAI_EXEC_WAIT_SECONDS"
RETRY_PAUSE_MAX = 1.0


def parse_hosts(text: str) -> dict[str, tuple[str, int]]:
    hosts = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        name, _, endpoint = entry.partition("=")
        address, _, port = endpoint.rpartition(":")
        hosts[name] = (address.strip("[]"), int(port))
    return hosts


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: rsh HOST COMMAND...", file=sys.stderr)
        return REFUSED
    host, command = argv[0], " ".join(argv[1:])
    hosts = parse_hosts(os.environ.get(HOSTS_ENV, ""))
    if host not in hosts:
        print(f"rsh: unknown node '{host}' (not one of this job's nodes: {', '.join(sorted(hosts)) or 'none'})", file=sys.stderr)
        return REFUSED
    try:
        wait = min(max(float(os.environ.get(WAIT_ENV, READY_WAIT)), 0.0), READY_WAIT)
    except ValueError:
        wait = READY_WAIT
    deadline, pause = time.monotonic() + wait, 0.05
    while True:
        code, retry = _run_once(host, hosts[host], command, last=time.monotonic() >= deadline)
        if not retry:
            return code
        time.sleep(pause)
        pause = min(pause * 2, RETRY_PAUSE_MAX)


def _run_once(host: str, endpoint: tuple[str, int], command: str, last: bool) -> tuple[int, bool]:
    """(exit code, whether to ask again: the node does not know the job yet and this is not the `last` try)."""
    try:
        sock = socket.create_connection(endpoint, timeout=10)
    except OSError as e:
        print(f"rsh: cannot reach the node agent of '{host}': {e}", file=sys.stderr)
        return REFUSED, False
    with sock:
        sock.settimeout(None)
        sock.sendall(json.dumps({"secret": os.environ.get(SECRET_ENV, ""), "command": command}).encode() + b"\n")
        out, err = sys.stdout.buffer, sys.stderr.buffer
        while (message := read_frame(sock)) is not None:
            kind, payload = message
            if kind == b"x":
                result = json.loads(payload)
                if result.get("retry") and not last:
                    return REFUSED, True
                if result.get("error"):
                    print(f"rsh: {host}: {result['error']}", file=sys.stderr)
                return int(result.get("exitCode", REFUSED)), False
            stream = out if kind == b"o" else err
            stream.write(payload)
            stream.flush()
    print(f"rsh: the node agent of '{host}' closed the connection", file=sys.stderr)
    return REFUSED, False


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
