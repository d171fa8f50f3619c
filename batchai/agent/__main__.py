"""`python -m batchai.agent --node-id ID --cluster-id CLUSTER --name NAME --root DIR (--url URL | --control-plane-file FILE)`.

The node token comes from the environment variable BATCHAI_NODE_TOKEN and is never printed.
The agent logs to {root}/agent.log.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from batchai.agent.agent import TOKEN_ENV, Agent, ControlPlane


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m batchai.agent", description="Batch AI node agent.")
    p.add_argument("--node-id", required=True)
    p.add_argument("--cluster-id", required=True, help="the cluster's ARM id")
    p.add_argument("--name", required=True, help="the node's name")
    p.add_argument("--root", required=True, help="the node's root directory (its disk)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="the control plane's base URL")
    where.add_argument("--control-plane-file", help='JSON file {"url": ...}, re-read whenever a request fails')
    p.add_argument("--address", default="127.0.0.1", help="the address this node is reachable at")
    p.add_argument("--heartbeat", type=float, default=1.0, help="seconds between heartbeats (until the control plane says)")
    p.add_argument(
        "--orphan-timeout", type=float, default=600.0, help="exit when the control plane is unreachable this long and no task runs"
    )
    p.add_argument("--run-as", help="run jobs as this user (not the agent's): they cannot read what only the agent may")
    return p.parse_args(argv)


def log_to(root: str) -> logging.Logger:
    """The agent logs to {root}/agent.log (created with the root)."""
    os.makedirs(root, exist_ok=True)
    handler = logging.FileHandler(os.path.join(root, "agent.log"), encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("batchai.agent")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    token = os.environ.pop(TOKEN_ENV, "")  # in this process's memory only: no child inherits it
    root = os.path.abspath(args.root)
    logger = log_to(root)
    if not token:
        logger.warning("%s is not set: the control plane will refuse this node", TOKEN_ENV)
    control_plane = ControlPlane(token=token, url=args.url, url_file=args.control_plane_file)
    agent = Agent(
        node_id=args.node_id,
        cluster_id=args.cluster_id,
        name=args.name,
        root=root,
        control_plane=control_plane,
        address=args.address,
        heartbeat=args.heartbeat,
        orphan_timeout=args.orphan_timeout,
        run_as=args.run_as,
    )
    return agent.run()


if __name__ == "__main__":
    sys.exit(main())
