"""Train a Stable-Baselines3 CnnPolicy on our Pong with SB3's own `learn`, until it reaches a skill.

    .venv/bin/python tools/train_sb3.py --name pong__sb3_a2c__1 --algo a2c --seed 1

SB3 trains (A2C or PPO, with the Atari hyperparameters of SB3's RL zoo) on
`atoms.sb3.PongSB3Env`; every `--eval-every` agent steps the greedy policy plays the evaluation of
the Policies chapter (`atoms.policies.evaluate`: the points-won rate, *skill*, over
`--eval-points` points), and training stops once skill reaches `--target` (or after
`--max-steps` steps, or `--time-limit-s` seconds). The policy's weights are then stored in
float16 (`atoms.sb3.save_policy`: the policy alone, no optimizer), the skill of those very
weights is measured again on other games, over `--final-points` points or 1,000 steps of 32 games
(whichever comes first: a skilled agent's long rallies score few points), and
`<out>/<name>/` receives `policy.safetensors`, `log.parquet` (the evaluations), `atoms.parquet`
(the ATOM table of the stored policy on the game's committed evaluation set, by
`atoms.model_atoms` with `policy.features_extractor.linear` as F_c, both LRP modes) and a manifest
(command, config, seed, git revision, skill, steps, wall time). An existing folder is never
overwritten.
"""
import argparse
import shlex
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import stable_baselines3
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike
from atoms.any_agent import model_atoms
from atoms.core import artifacts_dir, save_table, write_manifest
from atoms.evalset import load_eval_set
from atoms.policies import evaluate
from atoms.sb3 import (SB3_FC, PolicyLogits, PongSB3Env, compact_state, load_compact,
                       make_policy, save_policy)

PPO_ATARI = dict(n_steps=128, n_epochs=4, batch_size=256, learning_rate=2.5e-4, clip_range=0.1,
                 ent_coef=0.01, vf_coef=0.5)   # SB3 zoo's Atari PPO settings
A2C_ATARI = dict(ent_coef=0.01, vf_coef=0.25,  # SB3 zoo's Atari A2C settings (SB3's own defaults
                 policy_kwargs=dict(optimizer_class=RMSpropTFLike,   # have no entropy bonus:
                                    optimizer_kwargs=dict(eps=1e-5)))  # they never learned here)


def skill_of(model: PolicyLogits, game: str, points: int, seed: int, envs: int = 32,
             frame_skip: int = 2) -> dict:
    "The greedy policy of `model` played by `atoms.policies.evaluate`."
    with torch.no_grad():
        return evaluate(lambda obs: model(obs).argmax(-1), game, points, envs, seed=seed,
                        frame_skip=frame_skip)


class SkillStop(BaseCallback):
    "Evaluate the greedy policy every `every` steps; stop at `target` skill or after `limit_s`."
    def __init__(self, args, start: float):
        super().__init__()
        self.args, self.start, self.rows, self.next_eval = args, start, [], args.eval_every
        self.reached = False

    def _on_step(self) -> bool:
        if time.time() - self.start > self.args.time_limit_s: return False
        if self.num_timesteps < self.next_eval: return True
        self.next_eval += self.args.eval_every
        a, elapsed = self.args, time.time() - self.start
        ev = skill_of(PolicyLogits(self.model.policy).eval(), a.game, a.eval_points,
                      seed=10_000 * a.seed + len(self.rows), frame_skip=a.frame_skip)
        self.model.policy.train()
        self.rows.append({'global_step': self.num_timesteps, 'time/elapsed_s': elapsed,
                          'charts/points_won_rate': ev['points_won_rate'],
                          'charts/SPS': self.num_timesteps / elapsed})
        print(f"step {self.num_timesteps:>9,}  skill {ev['points_won_rate']:.3f}  "
              f"{self.num_timesteps / elapsed:5.0f} steps/s  {elapsed / 60:6.1f} min", flush=True)
        self.reached = ev['points_won_rate'] >= a.target
        return not self.reached


def eval_set_atoms(model: PolicyLogits, game: str, steps: int) -> pd.DataFrame:
    "The ATOM table (both LRP modes) of `model` on the committed evaluation set of `game`."
    es = load_eval_set(game)
    return pd.concat([model_atoms(model, SB3_FC, es['obs'], es['labels'], es['objects'],
                                  mode=mode, step=steps) for mode in ('two_pass', 'action')],
                     ignore_index=True)


def make_model(args, env: PongSB3Env):
    "The SB3 model: A2C or PPO with SB3 zoo's Atari settings."
    if args.algo == 'a2c':
        return A2C('CnnPolicy', env, seed=args.seed, device='cpu', verbose=0, **A2C_ATARI)
    return PPO('CnnPolicy', env, seed=args.seed, device='cpu', verbose=0, **PPO_ATARI)


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--name', required=True, help='folder name under --out')
    p.add_argument('--algo', choices=('a2c', 'ppo'), default='a2c')
    p.add_argument('--game', default='pong')
    p.add_argument('--num-envs', type=int, default=16)
    p.add_argument('--frame-skip', type=int, default=2, help='physics ticks per agent step')
    p.add_argument('--hit-reward', type=float, default=0.0,
                   help='shaping: reward for returning the ball (evaluation counts points only)')
    p.add_argument('--seed', type=int, default=1)
    p.add_argument('--target', type=float, default=0.7, help='skill at which training stops')
    p.add_argument('--max-steps', type=int, default=2_000_000)
    p.add_argument('--time-limit-s', type=float, default=float('inf'))
    p.add_argument('--eval-every', type=int, default=25_000)
    p.add_argument('--eval-points', type=int, default=200)
    p.add_argument('--final-points', type=int, default=400, help='points of the final evaluation (at most)')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--out', type=Path, default=artifacts_dir()/'sb3')
    return p.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    folder = args.out/args.name
    if folder.exists():
        sys.exit(f'{folder} exists: it is never overwritten (remove it or pick another --name)')
    torch.set_num_threads(args.threads)
    start = time.time()
    env = PongSB3Env(args.num_envs, args.game, args.frame_skip, hit_reward=args.hit_reward)
    model = make_model(args, env)
    stop = SkillStop(args, start)
    model.learn(args.max_steps, callback=stop)
    wall = time.time() - start
    stored = PolicyLogits(load_compact(make_policy(args.game), compact_state(model.policy)))
    final = skill_of(stored.eval(), args.game, args.final_points, seed=10_000 * args.seed + 9_999,
                     frame_skip=args.frame_skip)
    table = eval_set_atoms(stored.eval(), args.game, int(model.num_timesteps))
    folder.mkdir(parents=True)
    result = dict(skill=final['points_won_rate'], won=final['won'], lost=final['lost'],
                  steps=int(model.num_timesteps), wall_time_s=round(wall, 1),
                  target_reached=stop.reached)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    config['time_limit_s'] = None if args.time_limit_s == float('inf') else args.time_limit_s
    save_policy(model.policy, folder/'policy.safetensors', {'algo': args.algo, **result})
    save_table(pd.DataFrame(stop.rows), folder/'log.parquet')
    save_table(table, folder/'atoms.parquet')
    write_manifest(folder, 'python tools/train_sb3.py ' + shlex.join(sys.argv[1:] if argv is None
                                                                      else argv),
                   config, args.seed, stable_baselines3=stable_baselines3.__version__, **result)
    print(f"{folder}: skill {result['skill']:.3f} over {result['won'] + result['lost']} points after "
          f"{result['steps']:,} steps, {wall / 60:.1f} min", flush=True)


if __name__ == '__main__':
    main()
