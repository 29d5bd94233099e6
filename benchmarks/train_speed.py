"""Training-loop speed of A2C per network and precision, against this CPU's measured matmul peak.

For each (net, precision) it times `REPEATS` blocks of `UPDATES` A2C updates (rollout of 16 games × 5 steps,
then one forward + backward + RMSprop step on the 80 frames) with one torch thread, after a warm-up, and prints
the median agent steps per second. The arithmetic floor: an agent step costs one forward pass in the rollout
plus a forward and backward pass (about 3 forwards) in the update, so ~4 forwards; the script counts the
network's multiply-adds exactly and prints the fraction of the one-thread matmul peak (a 1024² GEMM in the same
precision, measured in the same run) that the loop reaches. Evaluation and checkpoints are not included.

    .venv/bin/python benchmarks/train_speed.py            # both nets, fp32 and bf16
    .venv/bin/python benchmarks/train_speed.py --nets nature
    .venv/bin/python benchmarks/train_speed.py --out artifacts/benchmarks/train_speed   # + a table

Every rate is also measured per CPU second of this process (one thread), which a machine shared with other
jobs disturbs less than wall time. With `--out FOLDER` the rows also go to FOLDER/train_speed.parquet (net,
precision, steps/s, FLOP per step, achieved FLOP/s, the GEMM peak and the share of it, per wall and per CPU
second), with a manifest naming the command and the git revision.
"""
import argparse, os, statistics, sys, tempfile, time
from pathlib import Path
import torch
from torch import nn
from atoms.core import cpu_model, save_table, write_manifest
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


def gemm_peak(dtype: torch.dtype) -> tuple[float, float]:
    "FLOP per wall second and per CPU second of a square GEMM on one thread (medians of 5): a practical peak."
    a, b = (torch.randn(GEMM, GEMM).to(dtype) for _ in range(2))
    for _ in range(3): a @ b
    times, cpu = [], []
    for _ in range(5):
        t, c = time.perf_counter(), time.process_time()
        for _ in range(10): a @ b
        times.append((time.perf_counter() - t) / 10)
        cpu.append((time.process_time() - c) / 10)
    return 2 * GEMM ** 3 / statistics.median(times), 2 * GEMM ** 3 / statistics.median(cpu)


def loop_speed(net: str, precision: str) -> tuple[float, float, int]:
    "Median agent steps per wall and per CPU second of the A2C update loop, and its network's forward FLOPs."
    cfg = TrainConfig(net=net, precision=precision, progress=False, threads=1,
                      run_dir=tempfile.mkdtemp(prefix='atoms-speed-'))
    trainer = Trainer(cfg)
    for _ in range(WARMUP): precise_step(trainer, ac_step)
    speeds, cpu = [], []
    steps = UPDATES * trainer.cfg.num_envs * trainer.cfg.n_steps
    for _ in range(REPEATS):
        t, c = time.perf_counter(), time.process_time()
        for _ in range(UPDATES):
            anneal_lr(trainer)
            precise_step(trainer, ac_step)
        speeds.append(steps / (time.perf_counter() - t))
        cpu.append(steps / max(time.process_time() - c, 1e-9))
    return statistics.median(speeds), statistics.median(cpu), forward_flops(trainer.net)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--nets', nargs='+', default=['small', 'nature'], choices=['small', 'nature'])
    ap.add_argument('--out', default=None, help='also write train_speed.parquet and a manifest to this folder')
    args = ap.parse_args()
    load = os.getloadavg()[0]
    torch.set_num_threads(1)
    measured = {p: gemm_peak(d) for p, d in DTYPES.items()}
    peaks = {p: wall for p, (wall, _) in measured.items()}
    cpu_peaks = {p: cpu for p, (_, cpu) in measured.items()}
    print(f'CPU: {cpu_model(bf16=True)}')
    print('one-thread GEMM peak: ' + ', '.join(f'{p} {v / 1e9:.1f} GFLOP/s' for p, v in peaks.items())
          + ' (per CPU second: ' + ', '.join(f'{p} {v / 1e9:.1f}' for p, v in cpu_peaks.items()) + ')')
    print(f'{"net":<8}{"precision":<11}{"steps/s":>9}{"MFLOP/step":>12}{"GFLOP/s":>9}{"of peak":>9}'
          f'{"steps/cpu-s":>13}{"of peak":>9}')
    base, rows = {}, []
    for net in args.nets:
        for precision in DTYPES:
            sps, sps_cpu, fwd = loop_speed(net, precision)
            per_step = 4 * fwd
            base.setdefault(net, sps)
            achieved = sps * per_step
            cpu_share = sps_cpu * per_step / cpu_peaks[precision]
            print(f'{net:<8}{precision:<11}{sps:>9.0f}{per_step / 1e6:>12.1f}{achieved / 1e9:>9.2f}'
                  f'{achieved / peaks[precision]:>9.1%}{sps_cpu:>13.0f}{cpu_share:>9.1%}'
                  f'   (×{sps / base[net]:.2f} of fp32)')
            rows.append(dict(net=net, precision=precision, steps_per_s=sps, flop_per_step=per_step,
                             flop_per_s=achieved, gemm_peak_flop_per_s=peaks[precision],
                             share_of_peak=achieved / peaks[precision], speedup_vs_fp32=sps / base[net],
                             steps_per_cpu_s=sps_cpu, gemm_peak_cpu_flop_per_s=cpu_peaks[precision],
                             share_of_peak_cpu=cpu_share))
    if args.out: write_out(args, rows, load)


def write_out(args, rows, load_before):
    "The rows as OUT/train_speed.parquet with a manifest (command, settings, load, git revision)."
    import pandas as pd   # lazy: only --out needs tables
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_table(pd.DataFrame(rows), out/'train_speed.parquet')
    config = dict(nets=args.nets, updates=UPDATES, repeats=REPEATS, warmup=WARMUP, gemm=GEMM, threads=1)
    write_manifest(out, command='python ' + ' '.join(sys.argv), config=config, cpus=os.cpu_count(),
                   cpu=cpu_model(bf16=True),
                   load_average=[load_before, os.getloadavg()[0]])
    print(f'wrote {out}/train_speed.parquet')


if __name__ == '__main__':
    main()
