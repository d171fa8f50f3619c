"""What the agent makes of `nvidia-smi --query-gpu=index,name,memory.total,uuid --format=csv,noheader,nounits`."""

from __future__ import annotations

from batchai.agent.gpus import MAX_GPUS, parse


def test_parse_reads_each_gpu_and_skips_what_is_not_one():
    text = "0, NVIDIA H200, 143771, GPU-aaaa\n1, Tesla V100-SXM2-16GB, [N/A], GPU-bbbb\nNo devices were found\n\n"
    assert parse(text) == [
        {"index": "0", "name": "NVIDIA H200", "memoryMiB": 143771, "uuid": "GPU-aaaa"},
        {"index": "1", "name": "Tesla V100-SXM2-16GB", "memoryMiB": None, "uuid": "GPU-bbbb"},
    ]


def test_parse_is_bounded():
    many = "".join(f"{i}, {'x' * 500}, 1, GPU-{i}\n" for i in range(MAX_GPUS + 10))
    gpus = parse(many)
    assert len(gpus) == MAX_GPUS and len(gpus[0]["name"]) == 128
