"""What exact object masks cost ALE Pong: agent steps per second of `AtariPongVectorEnv` with and without masks.

    .venv/bin/python benchmarks/atari_masks.py                  # N = 8 games, median of 3 runs of >= 3 s each
    .venv/bin/python benchmarks/atari_masks.py --games 1 8 --seconds 2 --profile

One agent step of one game = 4 emulator frames, the last two max-pooled, grey, area-resized to 84×84, stacked 4.
Rows compared in the same run, interleaved run by run so that a changing load hits them alike:
  masks      AtariPongVectorEnv(N): observation plus a label image per stacked frame
  no masks   AtariPongVectorEnv(N, masks=False): the observation only
  native     ale-py's AtariVectorEnv(N, num_threads=1): the same observations from C++ (no labels)
Every figure is the median of `--repeats` timed runs of at least `--seconds` each, after a warm-up, with actions drawn
at random beforehand. The envs run on one core; the CPU column divides steps by this process's CPU time, which a
busy machine (load average in the header) disturbs less than wall time. The goal: masks cost <= 20 % of the steps/s.
"""
import argparse, cProfile, io, os, pstats, statistics, sys, time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from ale_py.vector_env import AtariVectorEnv  # noqa: E402
from atoms.atari import AtariPongVectorEnv  # noqa: E402


def timed_run(env, acts, seconds: float) -> tuple[float, float]:
    "Agent steps per wall-clock second and per CPU second of one run of at least `seconds`."
    n, k = acts.shape[1], 0
    t0, c0 = time.perf_counter(), time.process_time()
    while k < 3 or time.perf_counter() - t0 < seconds:
        env.step(acts[k % len(acts)])
        k += 1
    return n * k / (time.perf_counter() - t0), n * k / max(time.process_time() - c0, 1e-9)


def compare(n: int, repeats: int, seconds: float) -> dict:
    "Median (wall, CPU) steps/s of every row for `n` games, runs interleaved row by row."
    envs = {'masks': AtariPongVectorEnv(n), 'no masks': AtariPongVectorEnv(n, masks=False),
            'native': AtariVectorEnv('pong', n, num_threads=1)}
    acts = np.random.default_rng(0).integers(0, 6, (256, n))
    for env in envs.values():
        env.reset(seed=0)
        for a in acts[:10]: env.step(a)                                       # warm-up
    runs = {name: [] for name in envs}
    for _ in range(repeats):
        for name, env in envs.items(): runs[name].append(timed_run(env, acts, seconds))
    return {name: tuple(statistics.median(r[i] for r in rs) for i in (0, 1)) for name, rs in runs.items()}


def profile(n: int, steps: int = 300):
    "Where the time of a masked step goes: cProfile of `steps` steps of n games, by own time."
    env = AtariPongVectorEnv(n)
    env.reset(seed=0)
    acts = np.random.default_rng(0).integers(0, 6, (steps, n))
    prof = cProfile.Profile()
    prof.enable()
    for a in acts: env.step(a)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats('tottime').print_stats(12)
    print(out.getvalue())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--games', type=int, nargs='+', default=[8], help='numbers of games N')
    p.add_argument('--repeats', type=int, default=3, help='timed runs per row (the median is reported)')
    p.add_argument('--seconds', type=float, default=3.0, help='least duration of a timed run')
    p.add_argument('--profile', action='store_true', help='also profile a masked step')
    args = p.parse_args(argv)
    print(f'load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; median of {args.repeats} runs')
    print(f'{"N":>4} {"row":>9} {"steps/s":>9} {"per CPU-s":>10}')
    for n in args.games:
        rates = compare(n, args.repeats, args.seconds)
        for name, (wall, cpu) in rates.items(): print(f'{n:>4} {name:>9} {wall:>9,.0f} {cpu:>10,.0f}')
        base, masked = rates['no masks'], rates['masks']
        print(f'{n:>4} masks cost {1 - masked[0] / base[0]:.1%} of the steps/s '
              f'({1 - masked[1] / base[1]:.1%} per CPU-second); '
              f'no masks / native = {base[0] / rates["native"][0]:.2f}')
        if args.profile: profile(n)


if __name__ == '__main__':
    main()
