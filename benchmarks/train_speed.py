"""Training-loop speed of A2C per network and precision, against this CPU's measured matmul peak.

For each (net, precision) it times `REPEATS` blocks of `UPDATES` A2C updates (rollout of 16 games × 5 steps,
then one forward + backward + RMSprop step on the 80 frames) with one torch thread, after a warm-up, and prints
the median agent steps per second. The arithmetic floor: an agent step costs one forward pass in the rollout
plus a forward and backward pass (about 3 forwards) in the update, so ~4 forwards; the script counts the
network's multiply-adds exactly and prints the fraction of the one-thread matmul peak (a 1024² GEMM in the same
precision, measured in the same run) that the loop reaches. Evaluation and checkpoints are not included.

    .venv/bin/python benchmarks/train_speed.py            # both nets, fp32 and bf16
    .venv/bin/python benchmarks/train_speed.py --nets nature
"""
import argparse, statistics, tempfile, time
import torch
from torch import nn
from atoms.training import TrainConfig, Trainer, ac_step, anneal_lr, precise_step

UPDATES, REPEATS, WARMUP, GEMM = 40, 3, 5, 1024
DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16}


def forward_flops(net: nn.Module, frames: int = 4, size: int = 84) -> int:
    "Floating-point operations (2 per multiply-add) of one forward pass on one frame stack."
    flops = []
    def count(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels
            flops.append(2 * k * output[0].numel())
        elif isinstance(module, nn.Linear):
            flops.append(2 * module.in_features * module.out_features)
    hooks = [m.register_forward_hook(count) for m in net.modules()]
    with torch.no_grad(): net(torch.zeros(1, frames, size, size, dtype=torch.uint8))
    for h in hooks: h.remove()
    return sum(flops)


def gemm_peak(dtype: torch.dtype) -> float:
    "FLOP/s of a square GEMM on one thread (median of 5), a practical peak of this CPU."
    a, b = (torch.randn(GEMM, GEMM).to(dtype) for _ in range(2))
    for _ in range(3): a @ b
    times = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(10): a @ b
        times.append((time.perf_counter() - t) / 10)
    return 2 * GEMM ** 3 / statistics.median(times)


def loop_speed(net: str, precision: str) -> tuple[float, int]:
    "Median agent steps/s of the A2C update loop, and the forward FLOPs of its network."
    cfg = TrainConfig(net=net, precision=precision, progress=False, threads=1,
                      run_dir=tempfile.mkdtemp(prefix='atoms-speed-'))
    trainer = Trainer(cfg)
    for _ in range(WARMUP): precise_step(trainer, ac_step)
    speeds = []
    for _ in range(REPEATS):
        t = time.perf_counter()
        for _ in range(UPDATES):
            anneal_lr(trainer)
            precise_step(trainer, ac_step)
        speeds.append(UPDATES * trainer.cfg.num_envs * trainer.cfg.n_steps / (time.perf_counter() - t))
    return statistics.median(speeds), forward_flops(trainer.net)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--nets', nargs='+', default=['small', 'nature'], choices=['small', 'nature'])
    args = ap.parse_args()
    torch.set_num_threads(1)
    peaks = {p: gemm_peak(d) for p, d in DTYPES.items()}
    print('one-thread GEMM peak: ' + ', '.join(f'{p} {v / 1e9:.1f} GFLOP/s' for p, v in peaks.items()))
    print(f'{"net":<8}{"precision":<11}{"steps/s":>9}{"MFLOP/step":>12}{"GFLOP/s":>9}{"of peak":>9}')
    base = {}
    for net in args.nets:
        for precision in DTYPES:
            sps, fwd = loop_speed(net, precision)
            per_step = 4 * fwd
            base.setdefault(net, sps)
            achieved = sps * per_step
            print(f'{net:<8}{precision:<11}{sps:>9.0f}{per_step / 1e6:>12.1f}{achieved / 1e9:>9.2f}'
                  f'{achieved / peaks[precision]:>9.1%}   (×{sps / base[net]:.2f} of fp32)')


if __name__ == '__main__':
    main()
