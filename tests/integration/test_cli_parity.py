"""`az batchai` parity: every command group of the CLI against a live `batchai serve`, as a script drives it.

Output formats and --query, exit codes, --no-wait and --yes, cluster create's flags and config file,
resize and auto-scale, node list/exec/evict, setup-task files, job storage flags with the
AZURE_BATCHAI_STORAGE_* fallback, job file list/stream/download, job node list/exec, port forwards to
a server a job started, file servers, list-usages, pause/resume.
"""

from __future__ import annotations

import importlib.util
import json
import re
import socket
import subprocess
import sys

import httpx
import pytest
import yaml

from tests.integration.conftest import CLI, ROOT, as_json, cli_env
from tests.support.naming import unique_name
from tests.support.waiting import until

WS, EXP = unique_name("par"), "e"
SERVE = """\
import http.server, socketserver
with open("marker.txt", "w") as f:
    f.write("served by the job")
with socketserver.TCPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler) as server:
    print("PORT", server.server_address[1], flush=True)
    server.serve_forever()
"""


@pytest.fixture(scope="module")
def ws(cli):
    cli("workspace", "create", WS)
    cli("experiment", "create", EXP, "-w", WS)
    cli("cluster", "create", "c1", "-w", WS, "-t", "2")
    cli("file-server", "create", "fs", "-w", WS, "--disk-count", "2", "--disk-size", "20", "-u", "admin", "-p", "fs-secret")
    yield WS
    cli("workspace", "delete", WS, "--yes")


def test_output_formats_query_and_options_after_the_command(cli, ws):
    assert cli("workspace", "list", "-o", "tsv", "--query", "[].name").stdout.split() == [WS]
    assert cli("-o", "tsv", "--query", "[?name=='c1'].[name, properties.currentNodeCount]", "cluster", "list", "-w", WS).stdout == "c1\t2\n"
    shown = yaml.safe_load(cli("cluster", "show", "c1", "-w", WS, "-o", "yaml").stdout)
    assert shown["name"] == "c1" and shown["properties"]["scaleSettings"]["manual"]["targetNodeCount"] == 2
    assert as_json(cli("cluster", "show", "c1", "-w", WS, "-o", "jsonc"))["name"] == "c1"  # no terminal: plain JSON
    assert as_json(cli("--json", "cluster", "show", "c1", "-w", WS)) == as_json(cli("cluster", "show", "c1", "-w", WS, "--output=json"))
    table = cli("cluster", "show", "c1", "-w", WS, "--query", "{cluster: name, vm: properties.vmSize}").stdout
    assert "cluster" in table and "STANDARD_D1_V2" in table
    assert cli("cluster", "show", "c1", "-w", WS, "-o", "none").stdout == ""
    bad = cli("cluster", "show", "c1", "-w", WS, "--query", "[?", check=False)
    assert bad.returncode == 2 and "JMESPath" in bad.stderr
    assert cli("cluster", "list", "-w", WS, "-o", "xml", check=False).returncode == 2


def test_names_go_as_the_argument_or_as_azs_name_flag(cli, ws):
    assert cli("cluster", "show", "-n", "c1", "-w", WS, "-o", "tsv", "--query", "name").stdout == "c1\n"
    assert cli("workspace", "show", "--name", WS, "-o", "tsv", "--query", "name").stdout == f"{WS}\n"
    cli("experiment", "create", "-n", "named", "-w", WS)
    cli("job", "create", "--name", "byflag", "-w", WS, "-e", "named", "-c", "c1", "--command", "true", "-n", "1")  # -n: nodes here
    assert cli("job", "wait", "-n", "byflag", "-w", WS, "-e", "named", "-o", "tsv", "--query", "properties.nodeCount").stdout == "1\n"
    both = cli("cluster", "show", "c1", "-n", "other", "-w", WS, check=False)
    assert both.returncode == 2 and "two names" in both.stderr
    assert cli("cluster", "show", "-w", WS, check=False).returncode == 2


def test_exit_codes_scripts_can_use(cli, ws):
    missing = cli("cluster", "show", "nope", "-w", WS, check=False)
    assert missing.returncode == 3 and missing.stderr.startswith("error: ResourceNotFound")
    refused = cli("cluster", "resize", "c1", "-w", WS, "-t", "-1", check=False)
    assert refused.returncode == 1 and "targetNodeCount" in refused.stderr
    cli("job", "create", "fails", "-w", WS, "-e", EXP, "-c", "c1", "--command", "echo going down; exit 42")
    waited = cli("job", "wait", "fails", "-w", WS, "-e", EXP, "--interval", "0.2", check=False)
    assert waited.returncode == 42
    assert cli("job", "show", "fails", "-w", WS, "-e", EXP, "-o", "tsv", "--query", "properties.executionInfo.exitCode").stdout == "42\n"
    assert "going down" in cli("job", "file", "stream", "-j", "fails", "-w", WS, "-e", EXP, "-f", "stdout.txt").stdout


def test_node_list_and_exec_runs_hostname_on_a_node(cli, ws):
    nodes = as_json(cli("cluster", "node", "list", "-c", "c1", "-w", WS, "-o", "json"))
    assert sorted(n["nodeId"] for n in nodes) == ["node-0", "node-1"]
    assert all(n["ipAddress"] == "127.0.0.1" and n["port"] > 0 for n in nodes)  # the agents' exec service: reachable
    ran = cli("cluster", "node", "exec", "c1", "-w", WS, "-n", "node-1", "--exec", "hostname")
    assert ran.stdout.strip() == socket.gethostname()  # local nodes are processes of this machine
    where = cli(
        "cluster", "node", "exec", "-c", "c1", "-w", WS, "-n", "node-1", "--exec", 'echo "$AZ_BATCHAI_NODE_NAME $PWD"'
    ).stdout.split()
    assert where[0] == "node-1" and where[1].endswith("/node-1")  # the node's own directory
    failed = cli("cluster", "node", "exec", "c1", "-w", WS, "--exec", "echo to stderr >&2; exit 7", check=False)
    assert failed.returncode == 7 and "to stderr" in failed.stderr
    assert cli("cluster", "node", "exec", "c1", "-w", WS, "--exec", "tr a-z A-Z", input="piped in\n").stdout == "PIPED IN\n"
    shell = cli("cluster", "node", "exec", "c1", "-w", WS, input="echo from a shell on $AZ_BATCHAI_NODE_NAME\nexit 4\n", check=False)
    assert shell.returncode == 4 and "from a shell on node-0" in shell.stdout
    nobody = cli("cluster", "node", "exec", "c1", "-w", WS, "-n", "node-9", "--exec", "true", check=False)
    assert nobody.returncode == 3


def test_a_port_forward_reaches_a_server_a_job_started_on_a_node(cli, server, ws, tmp_path):
    script = tmp_path / "serve.py"
    script.write_text(SERVE)
    cli("job", "create", "web", "-w", WS, "-e", EXP, "-c", "c1", "--command", f"{sys.executable} {script}")
    port = until(
        lambda: (m := re.search(r"PORT (\d+)", cli("job", "logs", "web", "-w", WS, "-e", EXP, check=False).stdout)) and int(m.group(1)),
        60,
        "the job's server to print its port",
        interval=0.3,
    )
    node = as_json(cli("job", "node", "list", "web", "-w", WS, "-e", EXP, "-o", "json"))[0]["nodeId"]
    inside = cli("job", "node", "exec", "-j", "web", "-w", WS, "-e", EXP, "--exec", "echo $AZ_BATCHAI_JOB_NAME; cat marker.txt").stdout
    assert inside.startswith("web\nserved by the job")  # the job's environment and directory
    forward = subprocess.Popen(
        [*CLI, "job", "node", "exec", "web", "-w", WS, "-e", EXP, "-n", node, "-L", f"0:127.0.0.1:{port}"],
        env=cli_env(server),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = forward.stderr.readline()
        local = int(re.search(r"forwarding 127\.0\.0\.1:(\d+) -> 127\.0\.0\.1:\d+ on node-\d", line).group(1))
        for _ in range(3):  # each connection is relayed (a browser opens many)
            assert httpx.get(f"http://127.0.0.1:{local}/marker.txt", timeout=10).text.startswith("served by the job")
    finally:
        forward.terminate()
        forward.wait(10)
    cli("job", "terminate", "web", "-w", WS, "-e", EXP)
    assert cli("job", "node", "list", "web", "-w", WS, "-e", EXP, "-o", "tsv").stdout == ""  # ended: no nodes


def test_cluster_create_from_flags_with_setup_task_and_mounts(cli, ws, server, tmp_path):
    config = tmp_path / "cluster.json"
    config.write_text(
        json.dumps(
            {
                "properties": {
                    "vmSize": "STANDARD_NC6",
                    "userAccountSettings": {"adminUserName": "fromfile"},
                    "nodeSetup": {
                        "mountVolumes": {
                            "azureFileShares": [
                                {
                                    "accountName": "<AZURE_BATCHAI_STORAGE_ACCOUNT>",
                                    "azureFileUrl": "https://<AZURE_BATCHAI_STORAGE_ACCOUNT>.file.core.windows.net/data",
                                    "relativeMountPath": "data",
                                }
                            ]
                        }
                    },
                }
            }
        )
    )
    created = as_json(
        cli(
            "cluster", "create", "mounted", "-w", WS, "-f", str(config), "-t", "1", "-i", "UbuntuLTS", "-u", "alice", "-p", "s3cret",
            "--subnet", "/subscriptions/s/resourceGroups/r/providers/Microsoft.Network/virtualNetworks/v/subnets/default",
            "--setup-task", "echo set up $AZ_BATCHAI_NODE_NAME; ls $AZ_BATCHAI_MOUNT_ROOT",
            "--setup-task-output", "$AZ_BATCHAI_MOUNT_ROOT/logs",
            "--nfs", "fs", "--afs-name", "share", "--bfs-name", "container", "--bfs-mount-path", "blobs",
            "-o", "json",
            env={"AZURE_BATCHAI_STORAGE_ACCOUNT": "acct", "AZURE_BATCHAI_STORAGE_KEY": "acct-key"},
        )
    )  # fmt: skip
    props = created["properties"]
    assert props["vmSize"] == "STANDARD_NC6" and props["nodeStateCounts"]["idleNodeCount"] == 1
    assert props["virtualMachineConfiguration"]["imageReference"]["offer"] == "UbuntuServer"
    assert props["userAccountSettings"]["adminUserName"] == "alice" and "adminUserPassword" not in props["userAccountSettings"]
    assert props["subnet"]["id"].endswith("/subnets/default")
    volumes = props["nodeSetup"]["mountVolumes"]
    assert [(v["accountName"], v["relativeMountPath"]) for v in volumes["azureFileShares"]] == [("acct", "data"), ("acct", "afs")]
    assert [(v["containerName"], v["relativeMountPath"]) for v in volumes["azureBlobFileSystems"]] == [("container", "blobs")]
    assert volumes["fileServers"][0]["fileServer"]["id"].endswith(f"/workspaces/{WS}/fileServers/fs")
    assert "acct-key" not in json.dumps(created)  # the key reached the service, and is never returned

    listed = as_json(cli("cluster", "file", "list", "mounted", "-w", WS, "-o", "json"))
    assert [(f["name"], f["fileType"]) for f in listed] == [("node-0", "directory")]
    logs = as_json(cli("cluster", "file", "list", "-c", "mounted", "-w", WS, "-p", "node-0", "-o", "json"))
    stdout = next(f for f in logs if f["name"] == "stdout.txt")
    text = httpx.get(stdout["downloadUrl"]).text
    assert text.startswith("set up node-0") and {"afs", "blobs", "data", "nfs", "logs"} <= set(text.split())

    bad = cli("cluster", "create", "bad", "-w", WS, "--min", "1", check=False)
    assert bad.returncode == 1 and "--min and --max" in bad.stderr
    no_key = cli("cluster", "create", "bad", "-w", WS, "--afs-name", "s", "--storage-account-name", "a", check=False)
    assert no_key.returncode == 1 and "AZURE_BATCHAI_STORAGE_KEY" in no_key.stderr
    cli("cluster", "delete", "mounted", "-w", WS, "--yes")


def test_resize_auto_scale_pause_resume_and_evict(cli, ws):
    auto = as_json(cli("cluster", "create", "auto", "-w", WS, "--min", "0", "--max", "2", "--vm-priority", "lowpriority", "-o", "json"))
    assert auto["properties"]["scaleSettings"]["autoScale"] == {"minimumNodeCount": 0, "maximumNodeCount": 2, "initialNodeCount": 0}
    resized = as_json(cli("cluster", "resize", "auto", "-w", WS, "-t", "1", "-o", "json"))
    assert resized["properties"]["scaleSettings"]["manual"]["targetNodeCount"] == 1
    until(
        lambda: (
            cli("cluster", "show", "auto", "-w", WS, "-o", "tsv", "--query", "properties.nodeStateCounts.idleNodeCount").stdout == "1\n"
        ),
        60,
        "the resized cluster's node",
        interval=0.3,
    )
    evicted = as_json(cli("cluster", "node", "evict", "auto", "node-0", "-w", WS, "-o", "json"))
    assert evicted == {"node": "node-0", "evicted": True}
    scaled = as_json(cli("cluster", "auto-scale", "auto", "-w", WS, "--min", "0", "--max", "3", "-o", "json"))
    assert scaled["properties"]["scaleSettings"]["autoScale"]["maximumNodeCount"] == 3
    cli("cluster", "pause", "auto", "-w", WS)
    cli("job", "create", "held", "-w", WS, "-e", EXP, "-c", "auto", "--command", "echo ran")
    assert cli("job", "show", "held", "-w", WS, "-e", EXP, "-o", "tsv", "--query", "properties.executionState").stdout == "queued\n"
    cli("cluster", "resume", "auto", "-w", WS)
    assert cli("job", "wait", "held", "-w", WS, "-e", EXP, "--interval", "0.2", "-o", "none").returncode == 0


def test_job_storage_flags_with_the_environment_fallback_and_job_files(cli, ws, tmp_path):
    created = as_json(
        cli(
            "job", "create", "stored", "-w", WS, "-e", EXP, "-c", "c1", "-o", "json",
            "--command", "mkdir -p $AZ_BATCHAI_OUTPUT_MODEL/sub; echo w > $AZ_BATCHAI_OUTPUT_MODEL/sub/w.txt; ls $AZ_BATCHAI_JOB_MOUNT_ROOT",
            "--afs-name", "jobshare", "--afs-mount-path", "inputs", "--nfs", "fs", "--nfs-mount-path", "shared",
            env={"AZURE_BATCHAI_STORAGE_ACCOUNT": "envacct", "AZURE_BATCHAI_STORAGE_KEY": "envkey"},
        )
    )  # fmt: skip
    share = created["properties"]["mountVolumes"]["azureFileShares"][0]
    assert share["accountName"] == "envacct" and share["azureFileUrl"].endswith("envacct.file.core.windows.net/jobshare")
    cli("job", "wait", "stored", "-w", WS, "-e", EXP, "-o", "none")
    listed = as_json(cli("job", "file", "list", "-j", "stored", "-w", WS, "-e", EXP, "-o", "json"))
    assert {"stdout.txt", "stderr.txt"} <= {f["name"] for f in listed}
    streamed = cli("job", "file", "stream", "stored", "-w", WS, "-e", EXP, "-f", "stdout.txt").stdout
    assert {"inputs", "shared"} <= set(streamed.split())
    downloaded = as_json(
        cli("job", "file", "download", "-j", "stored", "-w", WS, "-e", EXP, "--dest", str(tmp_path / "logs"), "-o", "json")
    )
    assert (tmp_path / "logs" / "stdout.txt").read_text() == streamed and len(downloaded) >= 2
    absent = cli("job", "file", "stream", "stored", "-w", WS, "-e", EXP, "-f", "nothing.txt", check=False)
    assert absent.returncode == 3


def test_job_output_directory_download_keeps_sub_directories(cli, ws, tmp_path):
    job = tmp_path / "job.json"
    job.write_text(
        json.dumps(
            {
                "properties": {
                    "nodeCount": 1,
                    "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT",
                    "outputDirectories": [{"id": "MODEL", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT"}],
                    "customToolkitSettings": {
                        "commandLine": "mkdir -p $AZ_BATCHAI_OUTPUT_MODEL/a/b; echo deep > $AZ_BATCHAI_OUTPUT_MODEL/a/b/c.txt"
                    },
                }
            }
        )
    )
    cli("job", "create", "outs", "-w", WS, "-e", EXP, "-c", "c1", "--config-file", str(job))
    cli("job", "wait", "outs", "-w", WS, "-e", EXP, "-o", "none")
    cli("job", "file", "download", "outs", "-w", WS, "-e", EXP, "-d", "MODEL", "--dest", str(tmp_path / "model"))
    assert (tmp_path / "model" / "a" / "b" / "c.txt").read_text() == "deep\n"


def test_file_servers_and_usages(cli, ws):
    cli("file-server", "create", "fs2", "-w", WS, "-s", "STANDARD_D2_V2", "--storage-sku", "Premium_LRS", "--no-wait")
    shown = as_json(cli("file-server", "show", "fs2", "-w", WS, "-o", "json"))
    assert shown["properties"]["dataDisks"]["storageAccountType"] == "Premium_LRS" and shown["properties"]["vmSize"] == "STANDARD_D2_V2"
    assert "fs2" in cli("file-server", "list", "-w", WS, "-o", "tsv", "--query", "[].name").stdout.split()
    cli("file-server", "delete", "fs2", "-w", WS, "--yes")
    assert cli("file-server", "show", "fs2", "-w", WS, check=False).returncode == 3
    usages = cli("list-usages", "-l", "local", "-o", "tsv", "--query", "[].[name.value, currentValue]").stdout.splitlines()
    workspaces = int(next(line.split("\t")[1] for line in usages if line.startswith("Workspaces")))
    assert workspaces >= 1


def test_no_wait_deletes_return_before_the_resource_is_gone(cli, ws):
    cli("cluster", "create", "brief", "-w", WS, "-t", "0")
    cli("cluster", "delete", "brief", "-w", WS, "--yes", "--no-wait")
    until(lambda: cli("cluster", "show", "brief", "-w", WS, check=False).returncode == 3, 60, "the cluster to go", interval=0.3)
    cli("experiment", "create", "gone", "-w", WS)
    cli("experiment", "delete", "gone", "-w", WS, "-y", "--no-wait")
    until(lambda: cli("experiment", "show", "gone", "-w", WS, check=False).returncode == 3, 60, "the experiment to go", interval=0.3)


def test_exec_sessions_need_the_users_token_and_a_valid_body(cli, server, ws):
    cli("job", "create", "ended", "-w", WS, "-e", EXP, "-c", "c1", "--command", "true")
    cli("job", "wait", "ended", "-w", WS, "-e", EXP, "--interval", "0.2", "-o", "none")
    base = f"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/default/providers/Microsoft.BatchAI/workspaces/{WS}"
    path, v = f"{base}/clusters/c1/nodes/node-0/execSession", {"api-version": "2018-05-01"}
    assert httpx.post(f"{server.url}{path}", params=v, json={"command": "id"}).status_code == 401
    with server.http() as http:
        bad = http.post(path, params=v, json={"forward": {"port": 70000}})
        assert bad.status_code == 400 and bad.json()["error"]["target"] == "forward.port"
        assert http.post(path, params=v, json={"command": ""}).json()["error"]["target"] == "command"
        assert http.post(f"{base}/clusters/c1/nodes/nope/execSession", params=v, json={}).status_code == 404
        answer = http.post(path, params=v, json={"command": "id"}).json()
        assert answer["nodeId"] == "node-0" and answer["port"] > 0 and answer["ticket"] and answer["expiresAt"].endswith("Z")
        idle = http.post(f"{base}/experiments/{EXP}/jobs/ended/nodes/node-0/execSession", params=v, json={"command": "id"})
        assert idle.status_code == 409  # an ended job has no nodes to log in to


@pytest.mark.skipif(
    importlib.util.find_spec("batchai.queue_view") is None,
    reason="the cluster queue route comes with the dashboard (batchai/queue_view.py)",
)
def test_queue_show_lists_a_clusters_queue_in_order_with_reasons(cli, ws):
    cli("cluster", "create", "q", "-w", WS, "-t", "1")
    cli("cluster", "pause", "q", "-w", WS)
    for name in ("first", "second"):
        cli("job", "create", name, "-w", WS, "-e", EXP, "-c", "q", "--command", "true")
    rows = cli("queue", "show", "-w", WS, "-c", "q", "-o", "tsv", "--query", "value[].[position, name, reason.code]").stdout
    assert rows == "1\tfirst\tClusterPaused\n2\tsecond\tClusterPaused\n"
    assert "ClusterPaused" in cli("queue", "show", "-w", WS, "-c", "q").stdout
    cli("cluster", "resume", "q", "-w", WS)
    cli("job", "wait", "second", "-w", WS, "-e", EXP, "-o", "none")
    assert as_json(cli("queue", "show", "-w", WS, "-c", "q", "-o", "json"))["value"] == []


def test_generate_ssh_keys_makes_a_key_pair_once_and_uses_it(cli, ws, tmp_path):
    home = {"HOME": str(tmp_path)}
    made = cli("file-server", "create", "keyed", "-w", WS, "--generate-ssh-keys", "-o", "none", env=home)
    private, public = tmp_path / ".ssh" / "id_rsa", tmp_path / ".ssh" / "id_rsa.pub"
    assert "made an SSH key pair" in made.stderr and private.stat().st_mode & 0o777 == 0o600
    assert public.read_text().startswith("ssh-rsa ")
    again = cli("file-server", "create", "keyed2", "-w", WS, "--generate-ssh-keys", "-k", str(public), "-o", "none", env=home)
    assert "made" not in again.stderr  # the pair exists: kept
    bad = cli("cluster", "create", "badkey", "-w", WS, "-k", "not a key", check=False)
    assert bad.returncode == 1 and "--ssh-key" in bad.stderr
