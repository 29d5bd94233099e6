"""The seeds table of a study: for every finished run, env steps and minutes to skill, and final skill.

Runs are found by reading each folder's `config.json` and manifest (never by folder name); only runs whose
manifest says training completed count. Skill is `atoms.policies.time_to_skill`'s rule. Prints one row per
run, then per (game, algo, net) the median and range of steps to skill over seeds, and the CPU-hours of
training summed over the runs.

    .venv/bin/python benchmarks/study_table.py runs            # a study's run folders
    .venv/bin/python benchmarks/study_table.py artifacts/runs --net nature
    .venv/bin/python benchmarks/study_table.py artifacts/runs --out artifacts/benchmarks/study  # + a table

With `--out FOLDER` the table also goes to FOLDER/study.parquet with a sealed manifest (command, config, git
revision), which the book's performance appendix reads.
"""
import argparse, json, sys
from pathlib import Path
import pandas as pd
from atoms.core import ArtifactError, read_manifest, save_table, write_manifest
from atoms.policies import skill_row


def finished_runs(root: Path) -> list[tuple[Path, dict]]:
    "(folder, config) of every run under `root` whose manifest says it finished (or is a package)."
    out = []
    for cfg_path in sorted(root.glob('*/config.json')):
        try: manifest = read_manifest(cfg_path.parent)
        except ArtifactError: continue
        packaged = 'source' in manifest           # `atoms package` copies only finished runs
        if manifest.get('complete') is True or 'analyse' in manifest.get('config', {}) or packaged:
            out.append((cfg_path.parent, json.loads(cfg_path.read_text())))
    return out


def seeds_table(root: Path, **match) -> pd.DataFrame:
    "One row per finished run under `root` whose config matches `match` (e.g. net='nature')."
    rows = []
    for folder, cfg in finished_runs(root):
        if any(cfg.get(k) != v for k, v in match.items()): continue
        rows.append(dict(game=cfg['game'], algo=cfg['algo'], net=cfg['net'], seed=cfg['seed'],
                         total_steps=cfg['total_steps'],
                         **skill_row(pd.read_parquet(folder/'log.parquet')), run=folder.name))
    return pd.DataFrame(rows).sort_values(['game', 'algo', 'net', 'seed'], ignore_index=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('root', type=Path, help='folder holding run folders')
    ap.add_argument('--net', choices=['small', 'nature'])
    ap.add_argument('--algo', choices=['a2c', 'ppo', 'dqn'])
    ap.add_argument('--out', type=Path, help='also write study.parquet and a manifest to this folder')
    args = ap.parse_args()
    if not args.root.is_dir(): ap.error(f'{args.root}: not a folder')
    match = {k: v for k, v in dict(net=args.net, algo=args.algo).items() if v}
    table = seeds_table(args.root, **match)
    if table.empty: ap.error(f'{args.root}: no finished run matches {match or "any config"}')
    pd.set_option('display.width', 200)
    print(table.drop(columns='run').to_string(
        index=False, float_format=lambda x: f'{x:,.0f}' if abs(x) >= 1000 else f'{x:.4g}'))
    groups = table.groupby(['game', 'algo', 'net'])
    summary = groups['steps_to_skill'].agg(['count', 'median', 'min', 'max'])
    # does the budget fit what learning needs? the slowest seed's steps to skill as a share of it
    summary['total_steps'] = groups['total_steps'].max()
    summary['max / total'] = (summary['max'] / summary['total_steps']).map(lambda x: f'{x:.2f}')
    print('\nenv steps to skill over seeds (NaN: not reached; max / total: the slowest seed against '
          'the training budget):')
    print(summary.to_string(float_format=lambda x: f'{x:,.0f}'))
    print(f'\ntraining CPU-hours (one thread per run), summed: {table.train_minutes.sum() / 60:.2f}')
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        save_table(table, args.out/'study.parquet')
        write_manifest(args.out, command='python ' + ' '.join(sys.argv),
                       config=dict(root=str(args.root), **match))
        print(f'wrote {args.out}/study.parquet')


if __name__ == '__main__':
    main()
