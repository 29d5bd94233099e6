"""Does bf16 training change what is learned? Same-seed learning curves of two runs side by side.

Reads the training logs of two runs that differ only in `precision` (checked from their configs), and writes
their greedy skill at every checkpoint both reached, with each run's steps to skill (the two-consecutive
rule of `atoms.policies.time_to_skill`) and its training time, to `--out/precision_curves.parquet` with a
manifest. One seed says nothing about a systematic effect by itself; it shows whether the two curves stay
within the evaluation noise (about ±0.04 at 200 points) of each other.

    .venv/bin/python benchmarks/precision_curves.py runs/pong__a2c__nature__1 runs/precision/pong__a2c__nature_fp32__1

Over seeds: give every run of both precisions (any seeds; the curves are drawn for the smallest seed
that both precisions have). Steps to skill per seed and precision also go to `precision_seeds.parquet`,
with the median and range per precision and a two-sided Mann-Whitney U test (scipy) where each
precision has at least two seeds.

    .venv/bin/python benchmarks/precision_curves.py artifacts/runs/pong__a2c__nature__{1,2,3,4,5} \
        runs/precision/pong__a2c__nature_fp32__{1,2,3}

A run must have ended (trained to its steps, or stopped by its own rule such as `--stop_at_skill`).
`--keep_logs` copies the config and log of every input run that is not a committed package into
`--out/logs/NAME/` (tens of kB each), so that seeds trained in different sessions can be compared
once `runs/` is gone: pass `artifacts/benchmarks/precision/logs/NAME` as a run folder next time.
"""
import argparse, json, shutil
from pathlib import Path
import pandas as pd
from scipy.stats import mannwhitneyu
from atoms.core import artifacts_dir, save_table, write_manifest
from atoms.policies import time_to_skill
from atoms.training import RESUME_IGNORED, ended

SKILL = 'charts/points_won_rate'
IGNORED = {'precision', *RESUME_IGNORED}


def read_run(folder: Path) -> tuple[dict, pd.DataFrame]:
    "The run's config and its checkpoint rows of the log (a run folder must have ended training)."
    for name in ('config.json', 'log.parquet'):
        if not (folder/name).exists(): raise SystemExit(f'precision_curves: {folder/name}: missing')
    if (folder/'manifest.json').exists() and not ended(folder):   # a kept log has no manifest
        raise SystemExit(f'precision_curves: {folder}: training has not ended (still running, '
                         'or interrupted: resume it with its `atoms train` command)')
    log = pd.read_parquet(folder/'log.parquet')
    return json.loads((folder/'config.json').read_text()), log[log['checkpoint']]


def seeds_table(runs: list[tuple[dict, pd.DataFrame]]) -> pd.DataFrame:
    "Steps to skill and final skill per run: one row per (precision, seed)."
    return pd.DataFrame([dict(precision=cfg['precision'], seed=cfg['seed'],
                              steps_to_skill=time_to_skill(log)['steps'],
                              final_skill=time_to_skill(log)['final'],
                              last_step=int(log.global_step.iloc[-1])) for cfg, log in runs])


def keep_logs(folders: list[Path], logs: Path):
    "Copy config.json and log.parquet of each run folder outside the committed packages to `logs`."
    packages = (artifacts_dir()/'runs').resolve()
    for folder in (f.resolve() for f in folders):
        dest = (logs/folder.name).resolve()
        if packages in folder.parents or dest == folder: continue
        dest.mkdir(parents=True, exist_ok=True)
        for name in ('config.json', 'log.parquet'): shutil.copy2(folder/name, dest/name)
        print(f'kept {folder.name}: {dest}')


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('runs', nargs='+', type=Path,
                    help='run folders that differ only in precision (and seed)')
    ap.add_argument('--out', type=Path, default=artifacts_dir()/'benchmarks'/'precision')
    ap.add_argument('--keep_logs', action='store_true',
                    help='copy config and log of each input run outside artifacts/runs to OUT/logs/')
    args = ap.parse_args()
    runs = [read_run(r) for r in args.runs]
    first = runs[0][0]
    for folder, (cfg, _) in zip(args.runs, runs):
        differ = sorted(k for k in first.keys() | cfg.keys()
                        if k not in IGNORED | {'seed'} and first.get(k) != cfg.get(k))
        if differ: raise SystemExit(f'precision_curves: {folder} differs from {args.runs[0]} in '
                                    f'{differ}, not only in precision or seed')
    by = {(cfg['precision'], cfg['seed']): (cfg, log) for cfg, log in runs}
    precisions = sorted({p for p, _ in by})
    if len(precisions) != 2: raise SystemExit(f'precision_curves: need runs of two precisions, '
                                              f'got {precisions}')
    a, b = precisions
    common = sorted({s for p, s in by if p == a} & {s for p, s in by if p == b})
    if not common: raise SystemExit('precision_curves: no seed has runs of both precisions')
    seed = common[0]
    (_, log_a), (_, log_b) = by[(a, seed)], by[(b, seed)]
    both = log_a[['global_step', SKILL]].merge(log_b[['global_step', SKILL]], on='global_step',
                                               suffixes=(f'_{a}', f'_{b}'))
    both.columns = ['global_step', f'skill_{a}', f'skill_{b}']
    table = seeds_table(runs).sort_values(['precision', 'seed'], ignore_index=True)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.keep_logs: keep_logs(args.runs, args.out/'logs')
    save_table(both, args.out/'precision_curves.parquet')
    save_table(table, args.out/'precision_seeds.parquet')
    summary = {p: dict(time_to_skill(log), last_step=int(log.global_step.iloc[-1]),
                       train_minutes=float(log['time/elapsed_s'].iloc[-1]) / 60)
               for p, log in ((a, log_a), (b, log_b))}
    steps = {p: table[table.precision == p].steps_to_skill.dropna() for p in precisions}
    test = None
    if min(len(v) for v in steps.values()) >= 2:
        test = float(mannwhitneyu(steps[a], steps[b], alternative='two-sided').pvalue)
    gap = (both[f'skill_{a}'] - both[f'skill_{b}']).abs()
    write_manifest(args.out, config=dict(runs=[str(r) for r in args.runs]), seed=seed,
                   summary=summary, mann_whitney_p=test)
    print(both.iloc[::10].to_string(index=False, float_format=lambda x: f'{x:.3f}'))
    for p, s in summary.items():
        print(f'seed {seed}, {p}: steps to skill {s["steps"]:,.0f}, trained to '
              f'{s["last_step"]:,} steps in {s["train_minutes"]:.1f} min, final skill '
              f'{s["final"]:.3f}')
    print(f'|skill gap| over {len(both)} common checkpoints: median {gap.median():.3f}, '
          f'max {gap.max():.3f}')
    print('\nenv steps to skill over seeds:')
    for p, v in steps.items():
        n = int((table.precision == p).sum())
        spread = f'median {v.median():,.0f} (range {v.min():,.0f} to {v.max():,.0f})' if len(v) \
            else 'never reached'
        print(f'  {p}: {len(v)} of {n} seeds reached skill, {spread}')
    print(f'  Mann-Whitney U, two-sided: p = {test:.3g}' if test is not None else
          '  Mann-Whitney U: needs two seeds of each precision that reached skill')


if __name__ == '__main__':
    main()
