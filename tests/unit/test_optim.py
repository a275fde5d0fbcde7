import subprocess
import sys

import torch

from inrsr.optim import FusedAdam


def test_fused_adam_matches_torch_adam_fused_with_a_decaying_rate():
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(5, 4, generator=gen), torch.randn(3, generator=gen), torch.randn(2, 2, generator=gen)]
    targets = [torch.randn(p.shape, generator=gen) for p in start]
    ours = [torch.nn.Parameter(p.clone()) for p in start]
    theirs = [torch.nn.Parameter(p.clone()) for p in start]
    opt = FusedAdam(ours, lr=0.08, betas=(0.9, 0.99), eps=1e-15)
    ref = torch.optim.Adam(theirs, lr=0.08, betas=(0.9, 0.99), eps=1e-15, fused=True)
    sched = torch.optim.lr_scheduler.ExponentialLR(ref, 0.97)
    for step in range(6):
        for params, o in ((ours, opt), (theirs, ref)):
            o.zero_grad()
            # the last parameter gets no gradient on odd steps: its state must not move then
            used = params if step % 2 == 0 else params[:-1]
            loss = sum(((p - t) ** 2 * (1 + i)).sum() for i, (p, t) in enumerate(zip(used, targets, strict=False)))
            loss.backward()
            o.step()
        opt.lr *= 0.97
        sched.step()
        for a, b in zip(ours, theirs, strict=True):
            assert torch.equal(a, b)
    assert opt.lr == ref.param_groups[0]["lr"]


def test_fused_adam_leaves_the_compiler_stack_unloaded():
    code = (
        "import sys, torch\n"
        "from inrsr.optim import FusedAdam\n"
        "w = torch.nn.Parameter(torch.ones(3)); opt = FusedAdam([w], lr=0.1)\n"
        "(w ** 2).sum().backward(); opt.step(); opt.zero_grad()\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
