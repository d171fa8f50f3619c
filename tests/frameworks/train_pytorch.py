"""Real PyTorch DDP over gloo, rendezvous at AZ_BATCHAI_PYTORCH_INIT_METHOD (the pyTorch toolkit's plan)."""

import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
dist.init_process_group(
    os.environ["AZ_BATCHAI_PYTORCH_BACKEND"], init_method=os.environ["AZ_BATCHAI_PYTORCH_INIT_METHOD"], rank=rank, world_size=world
)
torch.manual_seed(0)
model = DistributedDataParallel(torch.nn.Linear(4, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
gen = torch.Generator().manual_seed(rank)
x = torch.randn(256, 4, generator=gen)
y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1
for _step in range(50):
    opt.zero_grad()
    loss = ((model(x).squeeze(1) - y) ** 2).mean()
    loss.backward()
    opt.step()
weights = model.module.weight.detach().clone()
gathered = [torch.zeros_like(weights) for _ in range(world)]
dist.all_gather(gathered, weights)
assert all(torch.equal(g, weights) for g in gathered), "the ranks' models differ"
print(f"rank {rank} of {world} loss {loss.item():.4f}", flush=True)
with open(os.path.join(os.environ["AZ_BATCHAI_OUTPUT_OUT"], f"rank-{rank}.txt"), "w") as f:
    f.write(f"{loss.item()}\n")
dist.destroy_process_group()
