"""Wall-clock time of a study from empty folders: `atoms study` on the local Dask cluster, timed end to end.

The goal: the primary study (A2C on the Nature net, 3 games x 5 seeds, each run trained, analysed, tested
by the DBDT, cross-evaluated and packaged) within 4 hours on 2 cores. A whole study is longer than a
working session here, so this times a slice of it -- all games, some seeds -- and projects the whole: the
runs of one game take alike times whatever the seed (their steps are fixed), and `atoms study` hands each
run, start to end, to the next free worker thread, so the whole study's wall time follows from the timed
runs by packing 5 seeds' worth of them onto the workers in study order (checked on the slice itself; the
measured difference, cluster start and all, is added). It also prints the lower bound of perfect packing
(task-seconds / workers) and the task-seconds per step kind.

    .venv/bin/python benchmarks/study_wall.py --seeds 1 2 --runs-root /tmp/sw/runs \
        --out artifacts/benchmarks/study_wall

The run folders go to --runs-root (which must not exist yet: the clock starts from nothing) and the packages
next to it (`<runs-root>_packages`), never into artifacts/. With --out, the per-step table and a sealed
manifest (command, config, git revision, CPU, load) go to that folder; the performance appendix reads it.
"""
import argparse, os, sys, time
from pathlib import Path
import pandas as pd
from atoms.core import cpu_model, git_revision, save_table, write_manifest
from atoms.study import StudyConfig, projected_wall, study

GOAL_H, FULL_SEEDS = 4.0, 5


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--seeds', type=int, nargs='+', default=[1])
    ap.add_argument('--games', nargs='+', default=list(StudyConfig.games))
    ap.add_argument('--nets', nargs='+', default=['nature'])
    ap.add_argument('--algos', nargs='+', default=['a2c'])
    ap.add_argument('--steps', nargs='+', default=['train', 'analyse', 'dbdt', 'crosseval', 'package'])
    ap.add_argument('--total-steps', type=int, help="agent steps per run (default: each run's own)")
    ap.add_argument('--checkpoints', type=int, default=StudyConfig.checkpoints)
    ap.add_argument('--eval-points', type=int, default=StudyConfig.eval_points)
    ap.add_argument('--workers', type=int, default=os.cpu_count())
    ap.add_argument('--runs-root', type=Path, required=True, help='a folder that does not exist yet')
    ap.add_argument('--out', type=Path, help='write study_wall.parquet and a manifest here')
    args = ap.parse_args()
    if args.runs_root.exists(): ap.error(f'{args.runs_root}: exists; the clock must start from empty folders')
    packages = args.runs_root.with_name(args.runs_root.name + '_packages')
    if packages.exists(): ap.error(f'{packages}: exists; the packages must start from an empty folder')
    cfg = StudyConfig(games=tuple(args.games), algos=tuple(args.algos), nets=tuple(args.nets),
                      seeds=tuple(args.seeds), total_steps=args.total_steps, steps=tuple(args.steps),
                      checkpoints=args.checkpoints, eval_points=args.eval_points,
                      workers=args.workers, runs_root=str(args.runs_root), packages=str(packages),
                      progress=True)
    revision, load_before, t0 = git_revision(), os.getloadavg(), time.monotonic()
    table = study(cfg)
    wall_s, load_after = time.monotonic() - t0, os.getloadavg()
    if table.attrs.get('failed'):
        sys.exit(f'{table.attrs["failed"]} step(s) failed or were blocked: no timing written; see the logs above')
    table['game'] = table.run.str.split('__').str[0]
    per_kind = table.groupby('step', sort=False).seconds.agg(['count', 'sum', 'median', 'max'])
    print(f'\ntask seconds per step kind (one single-threaded worker per task):\n'
          f'{per_kind.to_string(float_format=lambda x: f"{x:,.0f}")}')
    task_h, n = table.seconds.sum() / 3600, len(args.seeds)
    primary = (set(args.games) == set(StudyConfig.games) and args.nets == ['nature'] and args.algos == ['a2c']
               and args.total_steps is None and args.checkpoints == StudyConfig.checkpoints
               and args.eval_points == StudyConfig.eval_points and args.workers == 2)
    model_s, projected_s = projected_wall(table, wall_s, args.workers, FULL_SEEDS)
    projected_h = projected_s / 3600
    print(f'\n{len(table.run.unique())} runs ({n} seed(s)) on {args.workers} workers, {cpu_model()}: '
          f'wall {wall_s / 3600:.2f} h, task time {task_h:.2f} h '
          f'(perfect packing: {task_h / args.workers:.2f} h; load average before/after '
          f'{load_before[1]:.2f}/{load_after[1]:.2f})')
    print(f'the packing model gives {model_s / 3600:.2f} h for this slice (measured {wall_s / 3600:.2f} h); '
          f'{FULL_SEEDS} seeds, each run as long as its game\'s timed run(s), plus the measured '
          f'difference: {projected_h:.2f} h wall (perfect packing '
          f'{task_h * FULL_SEEDS / n / args.workers:.2f} h)' + (
          f'; goal <= {GOAL_H:g} h: {"met" if projected_h <= GOAL_H else "MISSED"}' if primary else
          ' (not the primary study: no goal)'))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        save_table(table[['run', 'game', 'step', 'status', 'seconds']], args.out/'study_wall.parquet')
        write_manifest(args.out, command='python ' + ' '.join(sys.argv),
                       config={k: getattr(cfg, k) for k in ('games', 'algos', 'nets', 'seeds', 'total_steps',
                                                            'checkpoints', 'eval_points', 'steps', 'workers')},
                       cpu=cpu_model(bf16=True), cpus=os.cpu_count(), wall_s=round(wall_s, 1),
                       projected_seeds=FULL_SEEDS, projected_wall_h=round(projected_h, 3),
                       model_wall_s=round(model_s, 1), started_git_revision=revision,
                       load_average=[load_before[1], load_after[1]])
        print(f'wrote {args.out}/study_wall.parquet')


if __name__ == '__main__':
    main()
