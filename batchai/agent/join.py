"""A machine joins an attached cluster: `batchai node join --url URL --token TOKEN [--root DIR] [--name NAME]`.

Standard library only. The enrollment token is exchanged for a node of this machine's own and its
credential (`POST /internal/v1/nodes/_enroll`); the agent then runs in this process with that
credential, which lives only in its memory: it is never written to disk nor put in any
environment, so the jobs it runs cannot read it. Restarting the agent enrolls again (the old node,
silent by then, is replaced under the same name).
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

from batchai.agent.__main__ import log_to
from batchai.agent.agent import REGISTER_TIMEOUT, Agent, ControlPlane, HttpError, Unreachable

ENROLL_PATH = "/internal/v1/nodes/_enroll"


class JoinFailed(Exception):
    pass


def reachable_address(url: str) -> str:
    """This machine's address on the route to the control plane: where its peers reach it too."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect((host, parts.port or 80))  # no packet is sent: this only picks the route
        return s.getsockname()[0]


def join(*, url: str, token: str, root: str, name: str | None, address: str | None, heartbeat: float = 1.0) -> int:
    """Enrolls, then runs the node agent until it is stopped or its node is removed; its exit status."""
    root = os.path.abspath(root)
    log_to(root)
    body = {"name": name} if name else {}
    try:
        enrolled = ControlPlane(token=token, url=url).post(ENROLL_PATH, body, REGISTER_TIMEOUT)
    except (HttpError, Unreachable) as e:
        raise JoinFailed(f"enrolling with {url} failed: {e}") from None
    control_plane = ControlPlane(token=str(enrolled["credential"]), url=url)
    agent = Agent(
        node_id=str(enrolled["nodeId"]),
        cluster_id=str(enrolled["clusterId"]),
        name=str(enrolled["name"]),
        root=root,
        control_plane=control_plane,
        address=address or reachable_address(url),
        heartbeat=heartbeat,
        orphan_timeout=float("inf"),  # a machine keeps trying: the control plane may be down for long
    )
    print(f"joined as node {agent.name} ({agent.node_id}) at {agent.address}; logs in {root}/agent.log", flush=True)
    return agent.run()
