"""The pass-1 seed on real agents: frames with an empty S, and how much h agrees between the choices.

    .venv/bin/python benchmarks/pass1_seed.py                       # every committed run, 8 checkpoints each
    .venv/bin/python benchmarks/pass1_seed.py --out artifacts/benchmarks/pass1_seed

For every committed checkpoint of artifacts/runs/* (on its game's committed evaluation set) and every
`relevance_seed` choice of two-pass z+/Flat LRP: the number of frames whose set S of relevant F_c neurons
is empty, the mean |S| over the others, and the Spearman rank correlation, over the objects, of the
hierarchical attention h with that of every other choice, over all frames (`rho_{other}`) and over the
frames where both choices have a non-empty S (`rho_common_{other}`). One forward pass per checkpoint serves
all choices (the fast z+ path of atoms.relevance). As a check, h of the default choice is compared with
the committed atoms.parquet rows of the same checkpoint. Writes pass1_seed.parquet and a manifest to --out.
The Relevance chapter states the criterion for the default and reads this table.
"""
import argparse, sys, time
from pathlib import Path
import numpy as np
import pandas as pd
import torch
from scipy.stats import rankdata
from atoms.attention import Metric
from atoms.core import artifacts_dir, load_table, read_manifest, save_table, write_manifest
from atoms.evalset import load_eval_set
from atoms.policies import load_checkpoint
from atoms.relevance import (RELEVANCE_SEEDS, RelevanceSeed, Method, fast_neuron_relevance, fused_inputs,
                             relevant_indices, zplus_forward)

MASS = 0.9   # the fraction of positive relevance that S holds (explain's default)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    "Spearman's rank correlation of two vectors (ties get their mean rank); NaN if one is constant."
    ra, rb = rankdata(a), rankdata(b)
    if ra.std() == 0 or rb.std() == 0 or np.isnan(a).any() or np.isnan(b).any():
        return float('nan')
    return float(np.corrcoef(ra, rb)[0, 1])


def frame_attention(records, out, relevance_seed: str, labels, objects: dict) -> tuple:
    "Per frame: sum_k R_k(x) R̄_g^k(x) (X, G), and the size of S (X,), for one pass-1 seed."
    r = fast_neuron_relevance(records, out, relevance_seed)
    neurons = relevant_indices(r, MASS)
    nr = torch.where(neurons >= 0, torch.gather(r, 1, neurons.clamp(min=0)), 0.)
    object_att, _ = fused_inputs(records, neurons, nr, labels, objects)
    contributions = (nr.double().numpy()[..., None] * object_att).sum(1)
    return contributions, (neurons >= 0).sum(1).numpy()


def checkpoint_rows(run: Path, step: int, evalsets: dict, committed: pd.DataFrame) -> list[dict]:
    "One row per pass-1 seed choice of one checkpoint."
    net, meta = load_checkpoint(run/'checkpoints'/f'step_{step:09d}.safetensors')
    cfg = meta['config']
    es = evalsets.setdefault(cfg['game'], load_eval_set(cfg['game']))
    records, out = zplus_forward(net.eval(), torch.as_tensor(es['obs']))
    per_choice = {c: frame_attention(records, out, c, es['labels'], es['objects']) for c in RELEVANCE_SEEDS}
    old = committed[(committed.step == step) & (committed.metric == Metric.HIERARCHICAL)
                     & (committed.method == Method.LRP_TWO_PASS)].set_index('object').value
    h_default = per_choice[RelevanceSeed.OUTPUT][0].mean(0)
    if len(old):   # the committed table was made with the default: it must agree
        np.testing.assert_allclose(h_default, old[list(es['objects'])].to_numpy(), atol=1e-6, rtol=0,
                                   err_msg=f'{run.name} step {step}: h differs from atoms.parquet')
    rows = []
    for c, (contrib, s_size) in per_choice.items():
        row = dict(run=run.name, game=cfg['game'], algo=cfg['algo'], step=step, relevance_seed=c,
                   frames=len(s_size), empty_s=int((s_size == 0).sum()),
                   mean_s_size=float(s_size[s_size > 0].mean()) if (s_size > 0).any() else np.nan)
        for other, (contrib2, s_size2) in per_choice.items():
            common = (s_size > 0) & (s_size2 > 0)
            row[f'rho_{other}'] = spearman(contrib.mean(0), contrib2.mean(0))
            row[f'rho_common_{other}'] = (spearman(contrib[common].mean(0), contrib2[common].mean(0))
                                          if common.any() else np.nan)
        rows.append(row)
    return rows


def shown(run: Path) -> str:
    "A run folder as recorded: relative to the repository where it lies inside it."
    root = artifacts_dir().resolve().parent
    return str(run.resolve().relative_to(root)) if run.resolve().is_relative_to(root) else str(run)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--runs', nargs='*', help='run folders (default: every artifacts/runs/* with checkpoints)')
    ap.add_argument('--out', default=None, help='write pass1_seed.parquet and a manifest to this folder')
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)   # nothing here draws random numbers; fixed and recorded all the same
    runs = [Path(r) for r in a.runs] if a.runs else sorted(
        p for p in (artifacts_dir()/'runs').iterdir() if (p/'checkpoints').is_dir())
    rows, evalsets, t0 = [], {}, time.time()
    for run in runs:
        committed = load_table(run/'atoms.parquet')
        for step in read_manifest(run)['checkpoint_steps']:
            rows += checkpoint_rows(run, step, evalsets, committed)
        print(f'{run.name}: done ({time.time() - t0:.0f} s)', flush=True)
    table = pd.DataFrame(rows)
    summary = table.groupby('relevance_seed', sort=False).agg(
        empty_s=('empty_s', 'sum'), frames=('frames', 'sum'), rho_output=('rho_common_output', 'mean'))
    print(summary.to_string())
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        save_table(table, out/'pass1_seed.parquet')
        write_manifest(out, command='python ' + ' '.join(sys.argv), seed=0,
                       config=dict(runs=[shown(r) for r in runs], mass=MASS, choices=list(RELEVANCE_SEEDS)))
        print(f'wrote {out}')


if __name__ == '__main__':
    main()
