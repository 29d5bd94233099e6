"""Time to skill: how long the default training config takes to reach >= 90 % points won on each game.

    .venv/bin/python benchmarks/time_to_skill.py --runs_root runs/tts # all three games, Nature A2C, seed 1
    .venv/bin/python benchmarks/time_to_skill.py --runs runs/tts/* --out artifacts/benchmarks/time_to_skill
    .venv/bin/python benchmarks/time_to_skill.py --games pong --dqn   # also DQN on pong (30-min budget)
    .venv/bin/python benchmarks/time_to_skill.py --compare_rules      # old vs new rule, committed runs
    .venv/bin/python benchmarks/time_to_skill.py --skip_training --out artifacts/benchmarks/training_loop

Skill is reached at the first checkpoint from which two consecutive greedy evaluations are >= the
target, or at a single evaluation of at least 400 points that is >= the target (`atoms.policies.
skill_reached`; `time_to_skill` reports the step and time of the first of the two, and a run with
`stop_at_skill` stops at the second). One 200-point evaluation (+- 0.04) is not enough: in two of
three committed runs the evaluation after the first one >= 0.9 fell back below 0.9.

The committed table artifacts/benchmarks/time_to_skill/ comes from the first two commands, one run at a
time on an otherwise idle 2-core machine (2 torch threads). `--compare_rules` recomputes old (first single
evaluation >= target) and new steps to skill from the committed full runs without training anything.

Trains (or resumes, or just reads, if the run already finished) ROOT/{game}__{algo}__{net}__{seed}/ with the default
config, and prints, per game: wall time (training + checkpoint evaluations) and env steps until skill is
reached (the rule above), the training steps/s, and the best skill reached.
In the same run it prints a random policy's points-won rate (the opponent must stay a real opponent) and the
training throughput of our loop against a CleanRL-style loop (gymnasium SyncVectorEnv over single envs,
same network, same batch), median of several alternating measurements. With --skip_training --out FOLDER,
those two parts are also written to FOLDER/random_policy.parquet and FOLDER/loop_throughput.parquet with a
manifest.
"""
import argparse, json, os, statistics, sys, time
from pathlib import Path
import torch
import gymnasium as gym
from atoms.policies import evaluate, random_policy, time_to_skill
from atoms.training import TrainConfig, train, open_run, ac_step, resolve
from atoms.core import artifacts_dir, cpu_model, load_table
from atoms.games import GAMES, PongEnv

def compare_rules(runs, target: float = 0.9):
    "Steps and minutes to skill of each run's log under the old rule (one evaluation) and the new one."
    import pandas as pd   # lazy: only this mode and --out need tables
    rows = []
    for r in map(Path, runs):
        log = load_table(r/'log.parquet')
        old = time_to_skill(log, target, consecutive=1)   # consecutive=1: the old single-evaluation rule
        new = time_to_skill(log, target)
        rows.append(dict(run=r.name, old_steps=old['steps'], new_steps=new['steps'],
                         old_min=old['seconds'] / 60, new_min=new['seconds'] / 60,
                         best_skill=new['best'], final_skill=new['final']))
    return pd.DataFrame(rows)


def throughput(cfg, reference: bool, updates: int) -> tuple:
    "Training steps/s of `updates` A2C updates, and the milliseconds per agent step spent inside env.step."
    trainer = open_run(cfg)
    if reference:
        c = trainer.cfg
        make = lambda: PongEnv(c.game, stack=c.frames, frame_skip=c.frame_skip)
        trainer.env = gym.vector.SyncVectorEnv([make] * c.num_envs)
        trainer.obs, _ = trainer.env.reset(seed=c.seed)
    env_s, step = [0.0], trainer.env.step
    def timed(a):
        t = time.perf_counter()
        out = step(a)
        env_s[0] += time.perf_counter() - t
        return out
    trainer.env.step = timed
    for _ in range(3): ac_step(trainer)                       # warm-up
    env_s[0] = 0.0
    t = time.perf_counter()
    for _ in range(updates): ac_step(trainer)
    n = updates * trainer.cfg.num_envs * trainer.cfg.n_steps
    return n / (time.perf_counter() - t), 1e3 * env_s[0] / n


def write_loop_tables(a, randoms: list, loops: list, base):
    "The random-policy and loop-throughput rows as two tables in `a.out`, with a manifest."
    import pandas as pd   # lazy: only --out needs tables
    from atoms.core import save_table, write_manifest
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    save_table(pd.DataFrame(randoms), out/'random_policy.parquet')
    save_table(pd.DataFrame(loops), out/'loop_throughput.parquet')
    cfg = resolve(base)
    config = dict(games=a.games, repeats=a.repeats, updates=a.updates, game=cfg.game, algo=cfg.algo,
                  net=cfg.net, num_envs=cfg.num_envs, n_steps=cfg.n_steps, threads=1)
    write_manifest(out, command='python ' + ' '.join(sys.argv), config=config, seed=123,
                   load_average=[a.load_start, os.getloadavg()[0]], cpus=os.cpu_count())
    print(f'wrote {out}/random_policy.parquet and loop_throughput.parquet')


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--games', nargs='+', default=list(GAMES), choices=GAMES)
    ap.add_argument('--target', type=float, default=0.9)
    ap.add_argument('--budget_min', type=float, default=30, help='training time limit per run, minutes')
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--net', default='nature', choices=['nature', 'small'], help="network (the study's agent is 'nature')")
    ap.add_argument('--threads', type=int, default=2, help='torch threads of each training run (2: one run alone on 2 cores)')
    ap.add_argument('--dqn', action='store_true', help='also DQN on pong')
    ap.add_argument('--repeats', type=int, default=5, help='throughput measurements per loop')
    ap.add_argument('--updates', type=int, default=40, help='updates per throughput measurement')
    ap.add_argument('--skip_training', action='store_true', help='only the random-policy and throughput parts')
    ap.add_argument('--runs', nargs='+', help='report time to skill from these finished run folders instead of training')
    ap.add_argument('--out', default=None, help='with --runs: also write the table to OUT/time_to_skill.parquet with a manifest; '
                    'with --skip_training: the random-policy and loop-throughput tables')
    ap.add_argument('--runs_root', default='runs', help='train into ROOT/{game}__{algo}__{net}__{seed} (a finished run is just read)')
    ap.add_argument('--compare_rules', nargs='*', metavar='RUN',
                    help='only print old- vs new-rule steps to skill of these runs (default: artifacts/runs/*)')
    a = ap.parse_args()
    a.load_start = os.getloadavg()[0]
    torch.set_num_threads(1)
    if a.compare_rules is not None:
        runs = a.compare_rules or sorted(p.parent for p in (artifacts_dir()/'runs').glob('*/log.parquet'))
        print(f'\n## Steps to skill >= {a.target:.0%}: old rule (one evaluation) vs new rule')
        print(compare_rules(runs, a.target).to_markdown(
            index=False, floatfmt=('', ',.0f', ',.0f', '.1f', '.1f', '.3f', '.3f')))
        return

    print('## Random policy (greedy evaluation protocol, 400 points)')
    randoms = []
    for g in a.games:
        r = evaluate(random_policy(0), g, points=400, envs=64, seed=123)
        print(f'{g:20s} random policy wins {r["points_won_rate"]:.3f} of {r["won"] + r["lost"]} points')
        randoms.append(dict(game=g, points_won_rate=r['points_won_rate'], won=r['won'], lost=r['lost']))

    if not a.runs:
        print('\n## Training throughput: our loop vs a CleanRL-style SyncVectorEnv loop (A2C, same net and batch)')
        base = TrainConfig(run_dir='/tmp/atoms_bench_throughput', progress=False, total_steps=10**6)
        import shutil
        ours, ref = [], []
        for _ in range(a.repeats):
            for lst, refflag in ((ours, False), (ref, True)):
                shutil.rmtree(base.run_dir, ignore_errors=True); lst.append(throughput(base, refflag, a.updates))
        shutil.rmtree(base.run_dir, ignore_errors=True)
        (mo, eo), (mr, er) = ([statistics.median(x) for x in zip(*lst)] for lst in (ours, ref))
        print(f'ours {mo:,.0f} steps/s, reference {mr:,.0f} steps/s (medians of {a.repeats}), ratio {mo / mr:.2f}x')
        print(f'per agent step: env {eo:.3f} ms (ours) vs {er:.3f} ms (reference); everything else (network, optimiser) '
              f'{1e3 / mo - eo:.3f} vs {1e3 / mr - er:.3f} ms. The ratio cannot exceed (env_ref + rest) / (env_ours + rest).')
        if a.skip_training and a.out:
            loops = [dict(loop=name, steps_per_s=s, env_ms_per_step=e, other_ms_per_step=1e3 / s - e)
                     for name, s, e in (('ours: PongVectorEnv', mo, eo), ('reference: SyncVectorEnv', mr, er))]
            write_loop_tables(a, randoms, loops, base)
    if a.skip_training: return
    if a.runs:
        print(f'\n## Time to skill >= {a.target:.0%} (two in a row, or one of >= 400 points), from finished runs')
        print(f'CPU (of this machine, where the runs are assumed to have trained): {cpu_model(bf16=True)}')
        print('| run | game | algo | net | time to skill (min) | env steps | steps/s | best skill | final skill | trained (min) |')
        print('|---|---|---|---|---|---|---|---|---|---|')
        rows = []
        for r in map(Path, a.runs):
            c, log = json.loads((r/'config.json').read_text()), load_table(r/'log.parquet')
            k = time_to_skill(log, a.target); T = log['time/elapsed_s'].iloc[-1]
            rows.append(dict(run=r.name, game=c['game'], algo=c['algo'], net=c.get('net', 'small'), precision=c.get('precision'),
                             threads=c.get('threads'), seed=c['seed'], stop_at_skill=c.get('stop_at_skill'),
                             minutes_to_skill=k['seconds'] / 60, steps_to_skill=k['steps'], steps_per_s=log['global_step'].iloc[-1] / T,
                             best_skill=k['best'], final_skill=k['final'], trained_min=T / 60))
            x = rows[-1]
            print(f"| {x['run']} | {x['game']} | {x['algo']} | {x['net']} | {x['minutes_to_skill']:.1f} | {x['steps_to_skill']:,.0f} | {x['steps_per_s']:,.0f} | "
                  f"{x['best_skill']:.3f} | {x['final_skill']:.3f} | {x['trained_min']:.1f} |")
        if a.out:                                        # a small committed table with its provenance, for the book
            import pandas as pd
            from atoms.core import save_table, write_manifest
            out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
            save_table(pd.DataFrame(rows), out/'time_to_skill.parquet')
            trained = {Path(r).name: json.loads((Path(r)/'manifest.json').read_text()).get('command')
                       for r in a.runs if (Path(r)/'manifest.json').exists()}   # how each run was trained
            write_manifest(out, command='python ' + ' '.join(sys.argv), config=dict(target=a.target, runs=a.runs),
                           source_commands=trained, cpu=cpu_model(bf16=True), cpus=os.cpu_count())
            print(f'wrote {out}/time_to_skill.parquet')
        return
    print(f'\n## Time to skill >= {a.target:.0%} (two in a row, or one of >= 400 points; budget {a.budget_min:g} min per run)')
    print('| game | algo | time to skill (min) | env steps | steps/s | best skill | wall (min) |')
    print('|---|---|---|---|---|---|---|')
    jobs = [(g, 'a2c') for g in a.games] + ([('pong', 'dqn')] if a.dqn else [])
    for g, algo in jobs:
        cfg = TrainConfig(game=g, algo=algo, net=a.net, seed=a.seed, stop_at_skill=a.target, time_limit_s=a.budget_min * 60,
                          progress=False, threads=a.threads,
                          run_dir=f'{a.runs_root}/{g}__{algo}__{a.net}__{a.seed}')
        t0 = time.perf_counter(); run = train(cfg); wall = time.perf_counter() - t0
        log = load_table(run/'log.parquet')
        k = time_to_skill(log, a.target)
        sps = log['global_step'].iloc[-1] / max(log['time/elapsed_s'].iloc[-1], 1e-9)
        print(f"| {g} | {algo} | {k['seconds'] / 60:.1f} | {k['steps']:,.0f} | {sps:,.0f} | {k['best']:.3f} | {wall / 60:.1f} |", flush=True)


if __name__ == '__main__':
    main()
