"""Agent steps per second of the atoms Pong vector env, against gymnasium's SyncVectorEnv over the single env and ale-py Pong.

    .venv/bin/python benchmarks/env_throughput.py                    # N = 1, 64, 256, 1024; median of 5 runs
    .venv/bin/python benchmarks/env_throughput.py --sizes 256 --profile
    .venv/bin/python benchmarks/env_throughput.py --out artifacts/benchmarks/env_throughput   # + a table

An agent step of the atoms env is one physics tick (`frame_skip=1`) with the 4×84×84 uint8 observation stack and the
84×84 label image rendered. Rows compared in the same run:
  sync       gymnasium SyncVectorEnv over N single `PongEnv`s (the same engine, one game each, a Python loop)
  ale        ale-py's native AtariVectorEnv on Pong, preprocessed to the same observation (84×84 grey, stack 4,
             frame skip 4 as in the Atari benchmarks: one agent step emulates 4 frames), `--threads` threads
  ale-gym    gymnasium SyncVectorEnv over `gymnasium.make('ALE/Pong-v5')` (raw 210×160 RGB frames, frame skip 4)
Ratios are atoms / other (> 1: atoms is faster). Every figure is the median of `--repeats` timed runs of at least
`--seconds` each, after a warm-up, with actions drawn at random beforehand. The atoms env runs on one core; the last
column divides its steps by the CPU time of this process rather than wall time (on a busy machine, where other
processes share the cores, wall-clock figures drop with the load average printed in the header).
With `--out FOLDER` the rows also go to FOLDER/env_throughput.parquet (one row per N and env: steps per wall
second and per CPU second), with a manifest naming the command, the settings, the load and the git revision.
"""
import argparse, cProfile, io, os, pstats, statistics, sys, time
from pathlib import Path

import numpy as np
import gymnasium as gym

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from atoms.games import PongEnv, PongVectorEnv  # noqa: E402
from atoms.core import save_table, write_manifest  # noqa: E402


def steps_per_s(env, n, n_actions, repeats, seconds, min_steps=3):
    "Median agent steps per wall-clock second and per CPU second of this process, over `repeats` timed runs."
    env.reset(seed=0)
    acts = np.random.default_rng(0).integers(0, n_actions, (64, n))
    for a in acts[:5]: env.step(a)                                           # warm-up
    rates, cpu = [], []
    for _ in range(repeats):
        k, t0, c0 = 0, time.perf_counter(), time.process_time()
        while k < min_steps or time.perf_counter() - t0 < seconds:
            env.step(acts[k % 64]); k += 1
        rates.append(n * k / (time.perf_counter() - t0))
        cpu.append(n * k / max(time.process_time() - c0, 1e-9))
    env.close()
    return statistics.median(rates), statistics.median(cpu)


def makers(game, threads):
    "Constructors (n -> vector env, number of actions) of every compared env (ale: if it imports)."
    out = {'atoms': (lambda n: PongVectorEnv(n, game), 3),
           'sync': (lambda n: gym.vector.SyncVectorEnv([lambda: PongEnv(game) for _ in range(n)]), 3)}
    try:
        import ale_py   # lazy: optional (a dev requirement); without it the ale rows are skipped
        from ale_py.vector_env import AtariVectorEnv   # lazy: optional, as above
        gym.register_envs(ale_py)
        out['ale'] = (lambda n: AtariVectorEnv('pong', n, num_threads=threads), 6)
        out['ale-gym'] = (lambda n: gym.vector.SyncVectorEnv([lambda: gym.make('ALE/Pong-v5')
                                                              for _ in range(n)]), 6)
    except ImportError as err:
        print(f'ale-py not available ({err}): its rows are skipped')
    return out


def profile(game, n, steps=400):
    "Where the time of a vector step goes: cProfile of `steps` steps of n games, by own time."
    env = PongVectorEnv(n, game)
    env.reset(seed=0)
    acts = np.random.default_rng(0).integers(0, 3, (steps, n))
    for a in acts[:20]: env.step(a)
    pr = cProfile.Profile()
    pr.enable()
    for a in acts: env.step(a)
    pr.disable()
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats('tottime').print_stats(12)
    print(f'\nprofile: {steps} steps of {game} at N={n} (own time per function)')
    print(s.getvalue())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--game', default='pong', choices=['pong', 'pong-2balls', 'pong-2balls-target'])
    p.add_argument('--sizes', type=int, nargs='+', default=[1, 64, 256, 1024])
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--seconds', type=float, default=0.3, help='minimum duration of one timed run')
    p.add_argument('--threads', type=int, default=2, help="ale-py AtariVectorEnv threads")
    p.add_argument('--skip', nargs='*', default=[], help='rows to skip: sync, ale, ale-gym')
    p.add_argument('--ale-max', type=int, default=256,
                   help='largest N for the ale rows (1024 emulators are slow to build)')
    p.add_argument('--profile', action='store_true',
                   help='also print a cProfile of the atoms env at the largest size')
    p.add_argument('--out', default=None,
                   help='also write env_throughput.parquet and a manifest to this folder')
    args = p.parse_args(argv)
    envs = {k: v for k, v in makers(args.game, args.threads).items() if k not in args.skip}
    print(f'agent steps/s, {args.game}, median of {args.repeats} runs of >= {args.seconds} s; '
          f'cpus: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}; nan: not run')
    cols = list(envs)
    print(f"{'N':>6} " + ' '.join(f'{c:>12}' for c in cols) + ' '
          + ' '.join(f'{"atoms/" + c:>14}' for c in cols[1:]) + f" {'atoms per cpu-s':>16}")
    rows, load = [], os.getloadavg()[0]
    for n in args.sizes:
        r, cpu = {}, {}
        for name, (make, n_actions) in envs.items():
            r[name] = cpu[name] = float('nan')
            if name.startswith('ale') and n > args.ale_max: continue
            try: r[name], cpu[name] = steps_per_s(make(n), n, n_actions, args.repeats, args.seconds)
            except Exception as err: print(f'  {name} at N={n} failed: {err!r}')
        print(f'{n:>6} ' + ' '.join(f'{r[c]:>12,.0f}' for c in cols) + ' ' +
              ' '.join(f'{r["atoms"] / r[c]:>14.1f}' for c in cols[1:]) + f' {cpu["atoms"]:>16,.0f}', flush=True)
        rows += [dict(game=args.game, n_envs=n, env=c, steps_per_s=r[c], steps_per_cpu_s=cpu[c]) for c in cols]
    if args.out: write_out(args, rows, load)
    if args.profile: profile(args.game, max(args.sizes))


def write_out(args, rows, load_before):
    "The rows as OUT/env_throughput.parquet with a manifest (command, settings, load, git revision)."
    import pandas as pd   # lazy: only --out needs tables
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_table(pd.DataFrame(rows), out/'env_throughput.parquet')
    config = {k: v for k, v in vars(args).items() if k not in ('out', 'profile')}
    write_manifest(out, command='python ' + ' '.join(sys.argv), config=config, seed=0, cpus=os.cpu_count(),
                   load_average=[load_before, os.getloadavg()[0]])
    print(f'wrote {out}/env_throughput.parquet')


if __name__ == '__main__':
    main()
