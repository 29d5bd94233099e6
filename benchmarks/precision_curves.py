"""Does bf16 training change what is learned? Same-seed learning curves of two runs side by side.

Reads the training logs of two runs that differ only in `precision` (checked from their configs), and writes
their greedy skill at every checkpoint both reached, with each run's steps to skill (the two-consecutive
rule of `atoms.policies.time_to_skill`) and its training time, to `--out/precision_curves.parquet` with a
manifest. One seed says nothing about a systematic effect by itself; it shows whether the two curves stay
within the evaluation noise (about ±0.04 at 200 points) of each other.

    .venv/bin/python benchmarks/precision_curves.py runs/pong__a2c__nature__1 runs/precision/pong__a2c__nature_fp32__1
"""
import argparse, json
from pathlib import Path
import pandas as pd
from atoms.core import artifacts_dir, save_table, write_manifest
from atoms.policies import time_to_skill
from atoms.training import RESUME_IGNORED

SKILL = 'charts/points_won_rate'
IGNORED = {'precision', *RESUME_IGNORED}


def read_run(folder: Path) -> tuple[dict, pd.DataFrame]:
    "The run's config and its checkpoint rows of the log."
    for name in ('config.json', 'log.parquet'):
        if not (folder/name).exists(): raise SystemExit(f'precision_curves: {folder/name}: missing')
    log = pd.read_parquet(folder/'log.parquet')
    return json.loads((folder/'config.json').read_text()), log[log['checkpoint']]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('runs', nargs=2, type=Path, help='two run folders that differ only in precision')
    ap.add_argument('--out', type=Path, default=artifacts_dir()/'benchmarks'/'precision')
    args = ap.parse_args()
    (cfg_a, log_a), (cfg_b, log_b) = map(read_run, args.runs)
    differ = sorted(k for k in cfg_a.keys() | cfg_b.keys()
                    if k not in IGNORED and cfg_a.get(k) != cfg_b.get(k))
    if differ: raise SystemExit(f'precision_curves: the runs differ in {differ}, not only precision')
    a, b = cfg_a['precision'], cfg_b['precision']
    both = log_a[['global_step', SKILL]].merge(log_b[['global_step', SKILL]], on='global_step',
                                               suffixes=(f'_{a}', f'_{b}'))
    both.columns = ['global_step', f'skill_{a}', f'skill_{b}']
    args.out.mkdir(parents=True, exist_ok=True)
    save_table(both, args.out/'precision_curves.parquet')
    summary = {p: dict(time_to_skill(log), last_step=int(log.global_step.iloc[-1]),
                       train_minutes=float(log['time/elapsed_s'].iloc[-1]) / 60)
               for p, log in ((a, log_a), (b, log_b))}
    gap = (both[f'skill_{a}'] - both[f'skill_{b}']).abs()
    write_manifest(args.out, config=dict(runs=[str(r) for r in args.runs]), seed=cfg_a['seed'],
                   summary=summary)
    print(both.iloc[::10].to_string(index=False, float_format=lambda x: f'{x:.3f}'))
    for p, s in summary.items():
        print(f'{p}: steps to skill {s["steps"]:,.0f}, trained to {s["last_step"]:,} steps in '
              f'{s["train_minutes"]:.1f} min, final skill {s["final"]:.3f}')
    print(f'|skill gap| over {len(both)} common checkpoints: median {gap.median():.3f}, '
          f'max {gap.max():.3f}')


if __name__ == '__main__':
    main()
