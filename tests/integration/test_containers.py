"""containerSettings for real: a 2-node job and its preparation in a locally built image (docker).

Images cannot be pulled here, so the fixture builds one: `docker import` of a root filesystem
made from Debian's busybox-static. dockerd is started by the fixture on a private socket when
no docker daemon answers; the test skips, saying why, only where dockerd cannot start.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from azure.mgmt.batchai import models

from tests.integration.conftest import Server, kill_agents, make_sdk, sdk_cluster
from tests.support.naming import unique_name
from tests.support.waiting import WaitTimedOut, until

pytestmark = pytest.mark.timeout(300)
IMAGE = "local/batchai-busybox:test"
RG, WS, EXP = "rg", unique_name("containers"), "exp"


def _docker(*args, env=None, check=True, **kw):
    return subprocess.run(["docker", *args], env=env, capture_output=True, text=True, check=check, timeout=120, **kw)


@pytest.fixture(scope="module")
def docker_env():
    env = dict(os.environ)
    if not (shutil.which("docker") and Path("/bin/busybox").exists()):
        pytest.skip("docker or busybox-static is not installed (scripts/setup.sh installs them where it can)")
    daemon = None
    if _docker("info", env=env, check=False).returncode != 0:
        if not shutil.which("dockerd"):
            pytest.skip("no docker daemon answers and dockerd is not installed")
        state = Path(tempfile.mkdtemp(prefix="batchai-dockerd-"))
        env["DOCKER_HOST"] = f"unix://{state}/docker.sock"
        log = open(state / "dockerd.log", "wb")
        daemon = subprocess.Popen(
            [
                "dockerd",
                "--data-root",
                str(state / "root"),
                "--exec-root",
                str(state / "exec"),
                "--pidfile",
                str(state / "docker.pid"),
                "-H",
                env["DOCKER_HOST"],
            ],
            stdout=log,
            stderr=log,
        )
        try:
            until(
                lambda: daemon.poll() is not None or _docker("info", env=env, check=False).returncode == 0,
                60,
                "dockerd to answer, or exit",
                interval=0.3,
            )
        except WaitTimedOut:
            pass
        if daemon.poll() is not None or _docker("info", env=env, check=False).returncode != 0:
            daemon.kill()
            pytest.skip(f"dockerd cannot start here: {(state / 'dockerd.log').read_text()[-600:]}")
    rootfs = Path(tempfile.mkdtemp(prefix="batchai-rootfs-"))
    (rootfs / "bin").mkdir()
    (rootfs / "tmp").mkdir()
    shutil.copy("/bin/busybox", rootfs / "bin" / "busybox")
    for applet in ("sh", "sleep", "cat", "echo", "test", "mkdir", "ls", "env", "hostname", "grep"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(["docker", "import", "-", IMAGE], stdin=tar.stdout, env=env, check=True, capture_output=True, timeout=120)
    tar.wait()
    yield env
    if daemon is not None:
        daemon.terminate()
        daemon.wait(30)


@pytest.fixture(scope="module")
def docker_server(docker_env, tmp_path_factory):
    # the server and its node agents find the daemon as the test does
    srv = Server(tmp_path_factory.mktemp("containers"), env=docker_env).start()
    yield srv
    srv.stop()
    kill_agents(srv.data_dir)


@pytest.fixture(scope="module")
def sdk_c(docker_server):
    return make_sdk(docker_server)


def test_a_two_node_job_and_its_preparation_run_in_the_image(docker_server, sdk_c, docker_env):
    sdk = sdk_c
    cluster = sdk_cluster(sdk, RG, WS, "c", nodes=2, experiment=EXP)
    share = Path(docker_server.data_dir, "storage", "files", "acct", "share")
    share.mkdir(parents=True)
    (share / "train.sh").write_text(
        "test -f /.dockerenv || exit 9\n"  # we are in a container, not on the host
        f"test -e {docker_server.data_dir}/store.db && exit 7\n"  # the control plane's databases are not bound in
        'test "$(cat /tmp/prepared)" = ready || exit 8\n'  # preparation's files are in this container
        'echo "rank $RANK in $(hostname) sees $(cat $AZ_BATCHAI_JOB_MOUNT_ROOT/afs/input.txt)"\n'
        'echo "$RANK" > $AZ_BATCHAI_OUTPUT_MODEL/rank-$RANK.txt\n'
    )
    (share / "input.txt").write_text("shared input")
    sdk.jobs.begin_create(
        RG,
        WS,
        EXP,
        "boxed",
        models.JobCreateParameters(
            cluster=models.ResourceId(id=cluster.id),
            node_count=2,
            std_out_err_path_prefix="$AZ_BATCHAI_JOB_MOUNT_ROOT/afs/logs",
            container_settings=models.ContainerSettings(image_source_registry=models.ImageSourceRegistry(image=IMAGE), shm_size="64m"),
            job_preparation=models.JobPreparation(command_line="echo ready > /tmp/prepared"),
            mount_volumes=models.MountVolumes(
                azure_file_shares=[
                    models.AzureFileShareReference(
                        account_name="acct",
                        azure_file_url="https://acct.file.core.windows.net/share",
                        relative_mount_path="afs",
                        credentials=models.AzureStorageCredentialsInfo(account_key="a2V5"),
                    )
                ]
            ),
            output_directories=[models.OutputDirectory(id="MODEL", path_prefix="$AZ_BATCHAI_JOB_MOUNT_ROOT/afs/out")],
            py_torch_settings=models.PyTorchSettings(
                python_interpreter_path="/bin/sh", python_script_file_path="$AZ_BATCHAI_JOB_MOUNT_ROOT/afs/train.sh"
            ),
        ),
    ).result()
    job = until(
        lambda: (j := sdk.jobs.get(RG, WS, EXP, "boxed")).execution_state in ("succeeded", "failed") and j,
        120,
        "job boxed to end",
        interval=0.3,
    )
    logs = share / "logs" / job.job_output_directory_path_segment / "stdouterr"
    assert job.execution_state == "succeeded", (job.execution_info.errors, [(p.name, p.read_text()) for p in logs.glob("*")])
    assert (logs / "stdout-0.txt").read_text().startswith("rank 0 in ") and "sees shared input" in (logs / "stdout-1.txt").read_text()
    assert sorted(p.name for p in (share / "out" / job.job_output_directory_path_segment / "outputs").iterdir()) == [
        "rank-0.txt",
        "rank-1.txt",
    ]
    assert "container batchai-" in (logs / "execution-node-0.log").read_text()
    assert _docker("ps", "-aq", "--filter", "name=batchai-", env=docker_env).stdout.strip() == ""  # removed with the tasks
    sdk.workspaces.begin_delete(RG, WS).result()
