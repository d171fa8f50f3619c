"""The node agent: registers a node with the control plane, heartbeats, runs its tasks, reports exit codes.

Standard library only, so it starts fast and runs on bare VMs: `python -m batchai.agent --help`.
The protocol is described in agent.py; running one task in runner.py.
"""

from batchai.agent.agent import Agent, ControlPlane
from batchai.agent.runner import TaskRunner

__all__ = ["Agent", "ControlPlane", "TaskRunner"]
