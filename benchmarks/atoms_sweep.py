"""Benchmark the ATOM sweep: two-pass LRP + ATOMs of one checkpoint of the NATURE net on 150 frames, extrapolated
to a run of 100 checkpoints (goal <= 5 min), and the cost of our LRP per frame·neuron relative to a plain autograd
backward of the same seeds through the same network (goal <= 1.5x).

    .venv/bin/python benchmarks/atoms_sweep.py [--frames 150] [--checkpoints 100] [--repeats 3] [--threads 2]
    .venv/bin/python benchmarks/atoms_sweep.py --out artifacts/benchmarks/atoms_sweep   # + a table

With `--out FOLDER` the measured rows also go to FOLDER/atoms_sweep.parquet (one row per measurement: wall and
CPU seconds, both per frame·neuron, and their ratios to plain autograd), with a manifest naming the command and
git revision. CPU seconds of this process are steadier than wall time on a machine shared with other jobs.

Random initialisation (no trained agent needed); frames are `synthetic_frames` (two paddles and a ball).
Every figure is the median of `--repeats` runs. The machine's load is printed: timings under contention are noisy.

What it measures is `checkpoint_atoms` on its default path (two-pass z⁺/Flat LRP, fused straight to the ATOM
inputs, see the Relevance chapter), 150 frames of the NATURE net per checkpoint, against plain autograd. Notes
from running it: on a 2-core machine shared with training, one torch thread (`checkpoint_atoms(..., threads=1)`,
restored afterwards) is much the faster setting; the fused path is faster than computing the full per-neuron
maps, because the second convolution's transposed convolution is replaced by a small matrix product per frame.
"""
import argparse, os, statistics, sys, time
from pathlib import Path

import torch
import torch.nn.functional as F

from atoms.core import save_table, write_manifest
from atoms.nets import NATURE, make_net
from atoms.relevance import (RELEVANCE_SEEDS, checkpoint_atoms, synthetic_frames, zplus_forward,
                             fast_neuron_relevance, fast_pixel_relevance, zennit_pixel_relevance,
                             fused_inputs, relevant_indices)


class Seconds(float):
    "A median wall time in seconds that also carries the median CPU time of the same calls, `.cpu`."
    cpu = float('nan')


def median_time(fn, repeats):
    "Median wall time of `repeats` calls of `fn` (after one untimed warm-up call), with `.cpu`."
    fn(); ts, cs = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time(); fn()
        ts.append(time.perf_counter() - t0); cs.append(time.process_time() - c0)
    out = Seconds(statistics.median(ts))
    out.cpu = statistics.median(cs)
    return out


def plain_repeated(net, x, neurons, batch):
    "Plain autograd: forward + backward of each (frame, neuron) seed, rows of repeated frames, into the same output."
    out = torch.zeros(*neurons.shape, *x.shape[1:])
    fr, col = torch.nonzero(neurons >= 0, as_tuple=True)
    for a in range(0, len(fr), batch):
        f, c = fr[a:a+batch], col[a:a+batch]
        xin = x[f].requires_grad_()
        act = net.body(xin)
        g, = torch.autograd.grad(act, xin, grad_outputs=F.one_hot(neurons[f, c], act.shape[1]).to(act))
        out[f, c] = g
    return out


def plain_batched_grads(net, x, neurons, per_call):
    "Plain autograd, backward only: one forward of the X frames, then the seeds as batched grad_outputs (vmap)."
    xin = x.requires_grad_()
    act = net.body(xin)
    K, J = act.shape[1], neurons.shape[1]
    seeds = (F.one_hot(neurons.clamp(min=0), K).float() * (neurons >= 0).unsqueeze(-1)).transpose(0, 1)   # (J, X, K)
    out = []
    for a in range(0, J, per_call):
        g, = torch.autograd.grad(act, xin, grad_outputs=seeds[a:a+per_call], retain_graph=True, is_grads_batched=True)
        out.append(g)
    return torch.cat(out).transpose(0, 1)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--frames', type=int, default=150)
    p.add_argument('--checkpoints', type=int, default=100)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--relevance_seed', default='output', choices=RELEVANCE_SEEDS,
                   help="LRP pass-1 seed: 'output' (the paper's choice), 'softmax', 'action', 'above_mean'")
    p.add_argument('--batch', type=int, default=256, help='rows (frame x neuron pairs) per backward')
    p.add_argument('--zennit-frames', type=int, default=10, help='frames for the (slow) zennit comparison')
    p.add_argument('--out', default=None, help='also write atoms_sweep.parquet and a manifest to this folder')
    a = p.parse_args()
    load = os.getloadavg()[0]
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    net = make_net('actor_critic', NATURE).eval()
    obs, labels, objects = synthetic_frames(a.frames)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f} '
          f'on {os.cpu_count()} cores; NATURE actor-critic (random init), {a.frames} frames, pass-1 seed {a.relevance_seed!r}')

    records, out = zplus_forward(net, obs)
    neurons = relevant_indices(fast_neuron_relevance(records, out, a.relevance_seed), 0.9)
    n_pairs = int((neurons >= 0).sum())
    print(f'|S(x)|: mean {n_pairs / a.frames:.1f}, max {neurons.shape[1]} of {net.cfg.hidden} F_c neurons -> {n_pairs} frame·neuron pairs')

    t_ckpt = median_time(lambda: checkpoint_atoms(
        net, obs, labels, objects, step=0, relevance_seed=a.relevance_seed, batch=a.batch), a.repeats)
    sweep = t_ckpt * a.checkpoints
    rows = [dict(measure='checkpoint_atoms, one checkpoint', seconds=t_ckpt, cpu_seconds=t_ckpt.cpu,
                 frames=a.frames, pairs=n_pairs),
            dict(measure=f'sweep of {a.checkpoints} checkpoints (extrapolated)', seconds=sweep,
                 cpu_seconds=t_ckpt.cpu * a.checkpoints, frames=a.frames, pairs=n_pairs)]
    print(f'one checkpoint (two-pass LRP + all ATOMs): {t_ckpt:.2f} s -> {a.checkpoints} checkpoints: '
          f'{sweep / 60:.1f} min (goal <= 5 min: {"met" if sweep <= 300 else "NOT met"})')

    chunks = [(obs[i:i+16], neurons[i:i+16], labels[i:i+16]) for i in range(0, a.frames, 16)]
    nr1 = torch.ones(neurons.shape)
    fused = median_time(lambda: [fused_inputs(zplus_forward(net, x)[0], n, nr1[:len(n)], l, objects, a.batch) for x, n, l in chunks], a.repeats)
    ours = median_time(lambda: [fast_pixel_relevance(zplus_forward(net, x)[0], n, a.batch) for x, n, _ in chunks], a.repeats)
    plain = median_time(lambda: plain_repeated(net, obs.float(), neurons, a.batch), a.repeats)
    us = lambda t: f'{1e6 * t / n_pairs:.0f} µs'
    print(f'pass 2 per frame·neuron, plain autograd forward+backward of the same seeds (the baseline): {us(plain)}')
    print(f'  ours, full maps R^k_p (fast z⁺ incl. its forward): {us(ours)} -> {ours / plain:.2f}x (goal <= 1.5x)')
    print(f'  ours, fused to the ATOM inputs (what the sweep runs): {us(fused)} -> {fused / plain:.2f}x')
    for name, t in (('pass 2, plain autograd forward+backward (baseline)', plain),
                    ('pass 2, ours: full maps (fast z+)', ours), ('pass 2, ours: fused to the ATOM inputs', fused)):
        rows.append(dict(measure=name, seconds=t, cpu_seconds=t.cpu, frames=a.frames, pairs=n_pairs))
    try:
        bwd = median_time(lambda: plain_batched_grads(net, obs.float(), neurons, max(1, a.batch // a.frames)), a.repeats)
        print(f'  plain autograd backward only (one forward, seeds via is_grads_batched, padded to Kmax) {us(bwd)} '
              f'-> ratio {ours / bwd:.2f}x')
        rows.append(dict(measure='pass 2, plain autograd backward only (batched seeds)', seconds=bwd,
                         cpu_seconds=bwd.cpu, frames=a.frames, pairs=n_pairs))
    except Exception as e: print(f'  plain backward-only baseline failed: {type(e).__name__}: {e}')
    if a.zennit_frames > 0: rows.append(zennit_row(a, net, obs, neurons, plain / n_pairs))
    if a.out: write_out(a, rows, (plain / n_pairs, plain.cpu / n_pairs), load)


def zennit_row(a, net, obs, neurons, plain_per_pair: float):
    "Time zennit's hooks on the first `--zennit-frames` frames (slow), print and return the row."
    sub = neurons[:a.zennit_frames]; n_sub = int((sub >= 0).sum())
    z = median_time(lambda: zennit_pixel_relevance(net, obs[:a.zennit_frames], sub, batch=a.batch), max(1, a.repeats))
    print(f'  zennit hooks (ZPlusFlat, same seeds, {a.zennit_frames} frames): {1e6 * z / n_sub:.0f} µs per frame·neuron '
          f'-> {z / n_sub / plain_per_pair:.2f}x plain')
    return dict(measure='pass 2, zennit hooks (ZPlusFlat)', seconds=z, cpu_seconds=z.cpu, frames=a.zennit_frames,
                pairs=n_sub)


def write_out(a, rows, plain_per_pair: tuple, load_before: float):
    "The rows as OUT/atoms_sweep.parquet (per-pair wall and CPU cost, ratio to plain autograd) with a manifest."
    import pandas as pd   # lazy: only --out needs tables
    table = pd.DataFrame(rows)
    is_pass2 = table.measure.str.startswith('pass 2')
    for suffix, column, plain in (('', 'seconds', plain_per_pair[0]), ('_cpu', 'cpu_seconds', plain_per_pair[1])):
        per_pair = table[column] / table.pairs
        table[f'us_per_pair{suffix}'] = (1e6 * per_pair).where(is_pass2)
        table[f'ratio_to_plain{suffix}'] = (per_pair / plain).where(is_pass2)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    save_table(table, out/'atoms_sweep.parquet')
    config = {k: v for k, v in vars(a).items() if k != 'out'}
    write_manifest(out, command='python ' + ' '.join(sys.argv), config=config, seed=0, cpus=os.cpu_count(),
                   torch=torch.__version__, load_average=[load_before, os.getloadavg()[0]])
    print(f'wrote {out}/atoms_sweep.parquet')


if __name__ == '__main__':
    main()
