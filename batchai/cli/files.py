"""`cluster file list` (the node setup task's logs) and `job file list|stream|download`, with az's flags."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer

from batchai.cli.client import Client, CliError
from batchai.cli.common import TERMINAL, ExperimentOpt, WorkspaceOpt, cluster_file_app, job_file_app, named, run, show

FILE_COLUMNS = [
    ("name", lambda r: r["name"]),
    ("type", lambda r: r["fileType"]),
    ("size", lambda r: r.get("properties", {}).get("contentLength")),
    ("modified", lambda r: r.get("properties", {}).get("lastModified")),
]
ExpiryOpt = typer.Option(60, "--expiry", help="Minutes the download URLs stay valid (5 to 600).")
PathOpt = typer.Option(".", "--path", "-p", help="A sub-directory to list.")
OutputDirOpt = typer.Option("stdouterr", "--output-directory-id", "--output-dir", "-d", help="stdouterr or an output directory id.")
MAX_DOWNLOAD_FILES = 10_000
MAX_DEPTH = 32
STREAM_POLL_SECONDS = 1.0


def list_files(client: Client, job_path: str, output_dir: str, directory: str = ".", expiry: int = 60) -> list[dict]:
    return client.list(
        f"{job_path}/listOutputFiles", method="POST", outputdirectoryid=output_dir, directory=directory, linkexpiryinminutes=expiry
    )


@cluster_file_app.command("list")
@named("cluster", "--cluster", "-c")
def cluster_file_list(ctx: typer.Context, cluster: str, workspace: str = WorkspaceOpt, path: str = PathOpt, expiry: int = ExpiryOpt):
    """The node setup task's log files: one directory per node (`-p NODE` lists its stdout.txt, stderr.txt)."""
    c = ctx.obj

    def listing():
        rid = c.client.cluster(workspace, cluster)
        show(c, c.client.list(f"{rid}/listNodeSetupFiles", directory=path, linkexpiryinminutes=expiry), FILE_COLUMNS)

    run(listing)


@job_file_app.command("list")
@named("job", "--job", "-j")
def job_file_list(
    ctx: typer.Context,
    job: str,
    workspace: str = WorkspaceOpt,
    experiment: str = ExperimentOpt,
    output_dir: str = OutputDirOpt,
    path: str = PathOpt,
    expiry: int = ExpiryOpt,
):
    """A job's log files (stdouterr) or the files of one of its output directories."""
    c = ctx.obj
    run(lambda: show(c, list_files(c.client, c.client.job(workspace, experiment, job), output_dir, path, expiry), FILE_COLUMNS))


@job_file_app.command("stream")
@named("job", "--job", "-j")
def job_file_stream(
    ctx: typer.Context,
    job: str,
    workspace: str = WorkspaceOpt,
    experiment: str = ExperimentOpt,
    file_name: str = typer.Option(..., "--file-name", "-f", help="The file to stream, e.g. stdout.txt."),
    output_dir: str = OutputDirOpt,
    path: str = PathOpt,
):
    """Print a file as it grows, until the job ends (waiting for the job to make it)."""
    c = ctx.obj

    def stream():
        client = c.client
        job_path = c.client.job(workspace, experiment, job)
        offset, told = 0, False
        while True:
            ended = client.get(job_path)["properties"]["executionState"] in TERMINAL
            entry = next(
                (f for f in list_files(client, job_path, output_dir, path) if f["name"] == file_name and f["fileType"] == "file"), None
            )
            if entry is None and not told and not ended:
                typer.echo(f"waiting for the job to make {file_name}", err=True)
                told = True
            if entry is not None:
                chunk = client.download(entry["downloadUrl"], offset)
                offset += len(chunk)
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            if ended:
                if entry is None:
                    raise CliError(f"the job ended without a file {file_name} in {output_dir}/{path}", exit_code=3)
                return
            time.sleep(STREAM_POLL_SECONDS)

    run(stream)


@job_file_app.command("download")
@named("job", "--job", "-j")
def job_file_download(
    ctx: typer.Context,
    job: str,
    workspace: str = WorkspaceOpt,
    experiment: str = ExperimentOpt,
    output_dir: str = OutputDirOpt,
    path: str = PathOpt,
    file_name: str | None = typer.Option(None, "--file-name", "-f", help="Only this file (default: every file, sub-directories too)."),
    dest: Path = typer.Option(Path("."), "--dest", help="The local directory to write into."),
):
    """Download a job's files (its logs, or an output directory's files) into --dest, keeping their paths."""
    c = ctx.obj

    def download():
        client = c.client
        job_path = c.client.job(workspace, experiment, job)
        done: list[dict] = []

        def walk(directory: str, local: Path, depth: int) -> None:
            if depth > MAX_DEPTH:
                raise CliError(f"{directory}: deeper than {MAX_DEPTH} directories")
            for entry in list_files(client, job_path, output_dir, directory):
                if "/" in entry["name"] or entry["name"] in ("", ".", ".."):
                    raise CliError(f"the service listed a file named {entry['name']!r}: not written")
                if entry["fileType"] == "directory":
                    if file_name is None:
                        walk(f"{directory}/{entry['name']}", local / entry["name"], depth + 1)
                    continue
                if file_name is not None and entry["name"] != file_name:
                    continue
                if len(done) >= MAX_DOWNLOAD_FILES:
                    raise CliError(f"more than {MAX_DOWNLOAD_FILES} files: download a sub-directory (--path)")
                target = local / entry["name"]
                size = client.download_to(entry["downloadUrl"], target)
                done.append({"name": str(target), "size": size})

        walk(path, dest, 0)
        if file_name is not None and not done:
            raise CliError(f"no file {file_name} in {output_dir}/{path}", exit_code=3)
        show(c, done, [("file", lambda r: r["name"]), ("bytes", lambda r: r["size"])])

    run(download)
