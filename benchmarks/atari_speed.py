"""Atari Pong speed: env steps/s with and without masks (and ale-py's native env), PPO training steps/s, evaluation cost.

    .venv/bin/python benchmarks/atari_speed.py                 # about 2 minutes on a loaded 2-core machine
    .venv/bin/python benchmarks/atari_speed.py --updates 3 --precisions bf16

1. Env: agent steps per second of AtariPongVectorEnv(N) with masks, without masks, and ale-py's AtariVectorEnv(N,
   num_threads=1), same run, interleaved, median of `--repeats` runs (the rows of benchmarks/atari_masks.py). Goal:
   masks cost <= 20 %.
2. Training: agent steps per second of `atoms train --game atari-pong --algo ppo --net nature` updates (CleanRL's PPO
   Atari settings: 8 games x 128 steps per update, 4 epochs of 4 minibatches), per precision, after one warm-up update;
   the rollout alone (sampling the policy and stepping the games) is timed too.
3. Evaluation: what one checkpoint's greedy skill evaluation (20 points in 8 games) costs, measured on the untrained
   network, and extrapolated to 100 checkpoints at 150 agent steps per point (a policy that returns the ball).
"""
import argparse, os, statistics, sys, tempfile, time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from atari_masks import compare  # noqa: E402  (benchmarks/ is this script's folder)
from atoms.atari import AtariPongVectorEnv, evaluate_atari  # noqa: E402
from atoms.policies import greedy  # noqa: E402
from atoms.training import (TrainConfig, Trainer, ac_step, build_net, collect, precise_step,  # noqa: E402
                            resolve)


def env_rows(n: int, repeats: int, seconds: float):
    "Print the env rows: masks, no masks, native, and what masks cost."
    rates = compare(n, repeats, seconds)
    for name, (wall, cpu) in rates.items(): print(f'  N={n} {name:>9}: {wall:7,.0f} steps/s ({cpu:,.0f} per CPU-s)')
    base, masked, native = rates['no masks'], rates['masks'], rates['native']
    print(f'  masks cost {1 - masked[0] / base[0]:.1%} of the steps/s ({1 - masked[1] / base[1]:.1%} per CPU-s); '
          f'no masks / native = {base[0] / native[0]:.2f}')


def trainer_for(precision: str, folder: str) -> Trainer:
    "A trainer of the default Atari PPO run (Nature-CNN) in `folder`, nothing written yet."
    cfg = TrainConfig(game='atari-pong', algo='ppo', net='nature', precision=precision, progress=False,
                      run_dir=os.path.join(folder, precision))
    return Trainer(cfg)


def timed(fn) -> float:
    "Seconds `fn()` takes."
    return timed_cpu(fn)[0]


def timed_cpu(fn) -> tuple[float, float]:
    "Wall-clock and CPU seconds `fn()` takes (the CPU time of this process: a loaded machine disturbs it less)."
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def training_rows(precisions, updates: int) -> float:
    "Print agent steps/s of whole updates and of rollouts per precision; returns the best steps/s."
    best = 0.0
    with tempfile.TemporaryDirectory() as folder:
        for precision in precisions:
            tr = trainer_for(precision, folder)
            batch = tr.cfg.num_envs * tr.cfg.n_steps
            precise_step(tr, ac_step)                                                    # warm-up
            runs = [timed_cpu(lambda: precise_step(tr, ac_step)) for _ in range(updates)]
            update, update_cpu = (statistics.median(r[i] for r in runs) for i in (0, 1))
            rollout, rollout_cpu = timed_cpu(lambda: precise_step(
                tr, lambda t: collect(t.env, t.net, t.obs, t.buf, t.gen, t.stats, t.device)))
            print(f'  {precision}: {batch / update:6,.0f} agent steps/s ({batch / update_cpu:,.0f} per CPU-s); '
                  f'per update of {batch} steps {update:.1f} s ({update_cpu:.1f} CPU-s), the rollout '
                  f'{rollout:.1f} s ({rollout_cpu:.1f} CPU-s); device {tr.device.type}, {tr.cfg.threads} thread')
            best = max(best, batch / update)
    return best


def evaluation_row(train_sps: float, total_steps: int = 5_000_000, checkpoints: int = 100, per_point: int = 150):
    "Print the cost of one greedy evaluation and of all of a run's, against the run's training time."
    cfg = resolve(TrainConfig(game='atari-pong', algo='ppo', net='nature'))
    policy = greedy(build_net(cfg, torch.device('cpu')).eval())          # channels-last, as in training
    seconds = timed(lambda: print(f'  untrained net: {evaluate_atari(policy, cfg.eval_points, cfg.eval_envs)}'))
    print(f'  that evaluation took {seconds:.1f} s ({cfg.eval_points} points asked, {cfg.eval_envs} games)')
    env = AtariPongVectorEnv(cfg.eval_envs, masks=False)
    obs, _ = env.reset(seed=0)
    t = time.perf_counter()
    with torch.no_grad():
        for _ in range(100): obs = env.step(policy(torch.as_tensor(obs)).numpy())[0]
    eval_sps = 100 * cfg.eval_envs / (time.perf_counter() - t)
    run_eval_s = checkpoints * cfg.eval_points * per_point / eval_sps
    run_train_s = total_steps / train_sps
    print(f'  greedy play: {eval_sps:,.0f} agent steps/s; {checkpoints} evaluations at {per_point} steps per point: '
          f'{run_eval_s / 60:.0f} min against {run_train_s / 3600:.1f} h of training at {train_sps:,.0f} steps/s '
          f'({run_eval_s / run_train_s:.1%})')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--games', type=int, default=8, help='games N of the env rows')
    p.add_argument('--repeats', type=int, default=3, help='timed env runs per row (the median is reported)')
    p.add_argument('--seconds', type=float, default=2.0, help='least duration of a timed env run')
    p.add_argument('--updates', type=int, default=2, help='timed PPO updates per precision (after a warm-up)')
    p.add_argument('--precisions', nargs='+', default=['bf16', 'fp32'], choices=['bf16', 'fp32'])
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(f'load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; CUDA: {torch.cuda.is_available()}')
    print('1. ALE Pong env, agent steps/s:')
    env_rows(args.games, args.repeats, args.seconds)
    print('2. PPO training (Nature-CNN, 8 games x 128 steps per update):')
    best = training_rows(args.precisions, args.updates)
    print('3. Skill evaluation at a checkpoint:')
    evaluation_row(best)


if __name__ == '__main__':
    main()
