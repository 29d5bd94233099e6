"""Combinatorial attention c(T) at several thresholds α, on the committed checkpoints of runs.

    .venv/bin/python tools/alpha_sensitivity.py artifacts/runs/*__a2c__* --out artifacts/alpha

c(T) counts the relevance of the neurons whose set of attended objects is exactly T, an object
being attended when its mean relevance exceeds α times the largest object's (see the Attention
chapter). The packages store c(T) at α = 0.25 only, and not the per-neuron relevance it is made
from, so other values of α need the relevance again. This script computes it once per checkpoint
(two-pass z⁺ LRP, softmax seed, on the game's evaluation set, chunk by chunk) and c(T) for every α
from it, and writes `alpha.parquet` (run, game, net, seed, step, alpha, object, value) with a
manifest into `--out`. Runs without committed checkpoints are skipped (and listed).
"""
import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from atoms.analysis import eval_inputs
from atoms.attention import combinatorial_from, object_attention, subset_name
from atoms.core import save_table, write_manifest
from atoms.phases import run_name_parts, run_net
from atoms.policies import load_checkpoint
from atoms.relevance import Mode, RelevanceSeed, explain


def chunk_c(net, obs, labels, objects: dict, alphas, chunk: int = 16) -> dict:
    "c(T) for every α on the frames `obs`: alpha -> {subset name: c}, from one relevance pass."
    names, total = list(objects), {a: {} for a in alphas}
    for start in range(0, len(obs), chunk):
        x, lab = obs[start:start + chunk], labels[start:start + chunk]
        e = explain(net, x, 'lrp', mode=Mode.TWO_PASS, relevance_seed=RelevanceSeed.SOFTMAX)
        nr = e.neuron_relevance.numpy().astype(np.float64)
        oa = object_attention(e.pixel_relevance, lab, objects)
        for a in alphas:   # c is a mean over frames: chunks add up weighted by their size
            for t, v in combinatorial_from(nr, oa, names, a).items():
                key = subset_name(t)
                total[a][key] = total[a].get(key, 0.0) + v * len(x) / len(obs)
    return total


def run_rows(run: Path, alphas, n_frames, every: bool) -> list[dict]:
    "Rows of c(T) at every α for the committed checkpoints of one run (the last only if not every)."
    parts = run_name_parts(run.name)
    checkpoints = sorted((run/'checkpoints').glob('step_*.safetensors'))
    rows = []
    for path in checkpoints if every else checkpoints[-1:]:
        net, meta = load_checkpoint(path)
        obs, labels, objects = eval_inputs(meta, n_frames=n_frames)
        c = chunk_c(net, obs, labels, objects, alphas)
        rows += [dict(run=run.name, game=parts['game'], net=run_net(run, parts['net']),
                      seed=parts['seed'], step=int(meta['step']), alpha=a, object=t, value=v)
                 for a, values in c.items() for t, v in values.items()]
        print(f'{run.name} step {meta["step"]}: done', flush=True)
    return rows


def main(argv=None):
    "Parse the arguments, compute, write the table and its manifest."
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('runs', nargs='+', type=Path, help='run folders with committed checkpoints')
    p.add_argument('--out', type=Path, required=True, help='output folder')
    p.add_argument('--alphas', type=float, nargs='+', default=[0.1, 0.25, 0.5])
    p.add_argument('--n_frames', type=int, default=None, help='first n frames (default: all)')
    p.add_argument('--every', action='store_true', help='every committed checkpoint, not the last')
    p.add_argument('--threads', type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    with_ckpt = [r for r in args.runs if list((r/'checkpoints').glob('step_*.safetensors'))]
    skipped = sorted(r.name for r in args.runs if r not in with_ckpt)
    if skipped: print('no committed checkpoints, skipped:', ', '.join(skipped))
    rows = [row for r in with_ckpt for row in run_rows(r, args.alphas, args.n_frames, args.every)]
    args.out.mkdir(parents=True, exist_ok=True)
    save_table(pd.DataFrame(rows), args.out/'alpha.parquet')
    given = sys.argv[1:] if argv is None else list(map(str, argv))
    command = shlex.join(['python', 'tools/alpha_sensitivity.py', *given])
    write_manifest(args.out, command=command,
                   config=dict(alphas=args.alphas, n_frames=args.n_frames, every=args.every,
                               runs=sorted(r.name for r in with_ckpt), skipped=skipped,
                               method='lrp_two_pass', relevance_seed=RelevanceSeed.SOFTMAX))


if __name__ == '__main__':
    main()
