"""Fuzz the Pong engine: random valid configs, random actions, every invariant at every step.

    .venv/bin/python benchmarks/env_fuzz.py                          # 10 M agent steps, N = 256
    .venv/bin/python benchmarks/env_fuzz.py --steps 200_000 --envs 64 --seed 7
    .venv/bin/python benchmarks/env_fuzz.py --seed 1234 --steps 51_200  # rerun one reported case

The run is a sequence of cases. Case k has the seed `--seed + k`; that seed alone fixes its game
(the three variants take turns), its `GameConfig` (every field drawn within its valid range), the
env's reset seed and the actions (uniform, or the previous action repeated with a per-case
probability, so paddles also sit against the edges). A case runs `--case-steps` steps of `--envs`
games, so a violation reported at case seed S, step t reproduces with
`--seed S --steps (t + 1) * envs` (with the same `--envs` and `--case-steps`).

Checked at every step, vectorised with numpy over all games of the batch (a violation counts one
game at one step):
  label_in_range      every pixel has one label id, in range: the labels partition the frame
  labels_are_drawing  the label image equals `render_labels` of the state (the tests' reference)
  frame_is_labels     the newest frame is the grey lookup of its labels, `cfg.greys[labels]`
  objects_drawn       paddles are drawn whole unless balls cover them; balls at most ball_size²,
                      the last-drawn ball at least one pixel
  in_bounds           paddles in [0, size - paddle_h], balls in y [0, size - ball_size] and in x
                      [-ball_size, size] (a ball may be half out for the tick before its serve)
  state_finite        every position and speed is finite
  ball_speed          |vx| == ball_vx, |vy| <= max(serve_vy, bounce_vy)
  paddle_motion       the agent's paddle moves exactly by its action (clipped at the edges); the
                      opponent's by at most opponent_speed per tick
  stack_shift         the stack shifts by one frame in games that go on
  episode_end         terminated xor truncated; terminated iff a side reached `points`; truncated
                      only at `max_steps`; games that go on have score < points and
                      steps < max_steps; ended games restart (paddles centred, score and steps 0,
                      a stack of valid greys)
  final_obs           flags match the ended games; the final stack is the old one shifted, greys
  rewards             reward = won - lost + hit_reward * (returns of scoring balls); won, lost
                      and returns at most (scoring balls) * frame_skip per step
  episode_stats       info['episode'] return, length, won and lost are the episode's sums
  points_from_motion  (one tick a step) a ball that left the field scored for the right side
                      (the distractor never scores) and was served on the centre line at
                      |vy| <= serve_vy
  balls_apart         (serve_apart) two balls inside the field going the same way are at least
                      half the distance between the paddle faces apart
The tests' determinism checks (same seed, same trajectory; single env equals vector env) are not
per-step invariants and stay in tests/test_games.py.

Prints agent steps checked, steps/s (env and checks together, and the share spent checking), the
violations per invariant (goal: 0) and, for every invariant violated, the first few cases with
their config and the command that reruns them.
"""
import argparse
import os
import sys
import time
from collections import defaultdict

import numpy as np
from tqdm import tqdm

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from atoms.games import GAMES, GameConfig, PongVectorEnv, render_labels  # noqa: E402

INVARIANTS = ('label_in_range', 'labels_are_drawing', 'frame_is_labels', 'objects_drawn',
              'in_bounds', 'state_finite', 'ball_speed', 'paddle_motion', 'stack_shift',
              'episode_end', 'final_obs', 'rewards', 'episode_stats', 'points_from_motion',
              'balls_apart')
STATE = ('agent_y', 'opponent_y', 'ball_x', 'ball_y', 'ball_vx', 'ball_vy')


# ---------------------------------------------------------------- random cases
def draw_fields(rng, game: str) -> dict:
    "GameConfig fields of `game` drawn at random, each within its own valid range."
    size = int(rng.integers(8, 101))               # no upper bound: up to 100 to keep the run short
    fields = dict(
        game=game, size=size, stack=int(rng.integers(1, 7)),
        frame_skip=int(rng.choice([1, 1, 2, 3, 4])),    # half the cases 1 tick a step: exact checks
        paddle_h=int(rng.integers(1, size)), paddle_w=int(rng.integers(1, 5)),
        paddle_margin=int(rng.integers(0, 9)), ball_size=int(rng.integers(1, 5)),
        # GameConfig bounds these speeds only from below. serve_vy and bounce_vy need an upper
        # bound there (the hardening issue asks for it): a |vy| above size - ball_size leaves the
        # field after one reflection (serve_vy=100 at size 40 puts balls at y = -505 .. 539).
        # Paddle speeds are clipped and paddle hits are found by crossing, so any speed is safe
        # there. Until then we draw in these sensible ranges (|vy| <= 4 <= size - ball_size):
        agent_speed=float(rng.uniform(0, 6)), opponent_speed=float(rng.uniform(0, 4)),
        ball_vx=float(rng.uniform(0.1, 5)), serve_vy=float(rng.uniform(0, 3)),
        bounce_vy=float(rng.uniform(0.1, 4)),
        points=int(rng.integers(1, 8)),
        max_steps=int(np.exp(rng.uniform(0, np.log(1000)))),    # log-uniform 1 .. 999: truncations
        hit_reward=float(rng.choice([0., 1.]) * rng.choice([-1., 1.]) * rng.uniform(0.05, 1)))
    grey = rng.choice(256, 5, replace=False)
    for k, g in zip(('background', 'agent', 'opponent', 'ball', 'distractor'), grey):
        fields[f'grey_{k}'] = int(g)
    if game != 'pong': fields['serve_apart'] = bool(rng.integers(2))
    return fields


def draw_config(rng, game: str) -> GameConfig:
    "A random valid GameConfig: fields redrawn until they pass GameConfig's own cross-field checks."
    for _ in range(1000):
        try: return GameConfig(**draw_fields(rng, game))
        except ValueError: continue
    raise RuntimeError(f'no valid GameConfig for {game} in 1000 draws')


def action_stream(seed: int, n: int):
    "Random actions of n games: uniform, or the previous action with a per-case probability."
    rng = np.random.default_rng([seed, 1])
    stick, a = rng.uniform(0, 0.95), rng.integers(0, 3, n)
    while True:
        a = np.where(rng.random(n) < stick, a, rng.integers(0, 3, n))
        yield a


# ---------------------------------------------------------------- checks on the newest frame
def differ(a, b) -> np.ndarray:
    "Per game (first axis): does any element of `a` differ from `b`? (fast path when all equal)"
    if np.array_equal(a, b): return np.zeros(len(a), bool)
    return (a != b).reshape(len(a), -1).any(1)


def lookup(table: np.ndarray, a) -> np.ndarray:
    "table[a] for a uint8 array `a` by bytes.translate (a few times faster than np.take, np.isin)."
    return np.frombuffer(a.tobytes().translate(table.tobytes()), np.uint8).reshape(a.shape)


def grey_tables(cfg: GameConfig) -> tuple:
    "256-entry tables: the grey of each label id (0 past the last), and 1 for the greys in use."
    of_label, is_grey = np.zeros(256, np.uint8), np.zeros(256, np.uint8)
    of_label[:len(cfg.greys)] = cfg.greys
    is_grey[cfg.greys] = 1
    return of_label, is_grey


def all_grey(cfg: GameConfig, frames) -> np.ndarray:
    "Per game: is every pixel of `frames` the grey of some label?"
    return lookup(grey_tables(cfg)[1], frames).reshape(len(frames), -1).all(1)


def pixel_checks(cfg: GameConfig, obs, lab, ref) -> dict:
    "Failures per game of the label-image and frame invariants of the newest frame."
    n, k = len(lab), len(cfg.labels)
    flat = lab.reshape(n, -1)
    in_range = flat.max(1) < k
    counts = np.stack([(flat == i).view(np.uint8).sum(1, dtype=np.uint16) for i in range(1, k)], 1)
    pad, ball = cfg.paddle_h * cfg.paddle_w, cfg.ball_size ** 2
    drawn = ((counts[:, :2] <= pad) & (counts[:, :2] >= pad - cfg.n_balls * ball)).all(1)
    drawn &= (counts[:, 2:] <= ball).all(1) & (counts[:, -1] >= 1)
    return {'label_in_range': ~in_range, 'labels_are_drawing': differ(lab, ref),
            'frame_is_labels': differ(obs[:, -1], lookup(grey_tables(cfg)[0], lab)),
            'objects_drawn': ~drawn}


# ---------------------------------------------------------------- checks on the state
def state_checks(cfg: GameConfig, s: dict) -> dict:
    "Failures per game of the bounds, finiteness and speed invariants of state `s`."
    S, bs = cfg.size, cfg.ball_size
    finite = np.ones(len(s['agent_y']), bool)
    for k in STATE: finite &= np.isfinite(s[k]).reshape(len(finite), -1).all(1)
    pads = np.stack([s['agent_y'], s['opponent_y']], 1)
    inside = ((pads >= 0) & (pads <= S - cfg.paddle_h)).all(1)
    x, y = s['ball_x'], s['ball_y']
    inside &= ((y >= 0) & (y <= S - bs) & (x >= -bs) & (x <= S)).all(1)
    most_vy = max(cfg.serve_vy, cfg.bounce_vy)
    speed = (np.abs(s['ball_vx']) == cfg.ball_vx) & (np.abs(s['ball_vy']) <= most_vy)
    return {'state_finite': ~finite, 'in_bounds': ~inside, 'ball_speed': ~speed.all(1)}


def paddle_check(cfg: GameConfig, prev: dict, s: dict, actions, done) -> np.ndarray:
    "Failures per game of the paddles' motion over one step (ended games restart centred instead)."
    top = cfg.size - cfg.paddle_h
    agent = prev['agent_y'].copy()
    for _ in range(cfg.frame_skip):                      # the engine clips after every tick
        agent = np.clip(agent + np.array([0., -cfg.agent_speed, cfg.agent_speed])[actions], 0, top)
    reach = cfg.opponent_speed * cfg.frame_skip + 1e-9
    moved = np.abs(s['opponent_y'] - prev['opponent_y']) <= reach
    ok = (s['agent_y'] == agent) & moved
    centred = (s['agent_y'] == top / 2) & (s['opponent_y'] == top / 2)
    return ~np.where(done, centred, ok)


def faces(cfg: GameConfig) -> tuple:
    "The ball's x when it touches the opponent's paddle and when it touches the agent's."
    opponent_face = cfg.paddle_margin + cfg.paddle_w
    return opponent_face, cfg.size - opponent_face - cfg.ball_size


def apart_check(cfg: GameConfig, s: dict) -> np.ndarray:
    "Failures per game of serve_apart: balls inside going the same way are half the field apart."
    face_o, face_a = faces(cfg)
    x, vx = s['ball_x'], s['ball_vx']
    inside = ((x >= face_o) & (x <= face_a)).all(1)
    same = inside & (np.sign(vx[:, 0]) == np.sign(vx[:, 1]))
    return same & (np.abs(x[:, 0] - x[:, 1]) < (face_a - face_o) / 2)


def motion_points(cfg: GameConfig, prev: dict, s: dict, info, done) -> np.ndarray:
    "Failures per game of the points of a one-tick step, recomputed from where each ball was going."
    (face_o, face_a), bs = faces(cfg), cfg.ball_size
    x = prev['ball_x'] + prev['ball_vx']                   # where the ball went, before any bounce
    out_left = (x + bs < 0) & (s['ball_x'] != face_o)      # not returned by the opponent: it left
    out_right = (x > cfg.size) & (s['ball_x'] != face_a)
    won, lost = (out_left & cfg.scoring).sum(1), (out_right & cfg.scoring).sum(1)
    bad = (info['won'] != won) | (info['lost'] != lost)
    served = (out_left | out_right) & ~done[:, None]
    centre = (s['ball_x'] == (cfg.size - bs) / 2) & (np.abs(s['ball_vy']) <= cfg.serve_vy)
    return bad | (served & ~centre).any(1)


# ---------------------------------------------------------------- checks on rewards and episodes
def reward_check(cfg: GameConfig, r, info) -> np.ndarray:
    "Failures per game of reward = won - lost + hit_reward * returns, each count within its bound."
    most = int(cfg.scoring.sum()) * cfg.frame_skip
    won, lost = info['won'], info['lost']
    bad = (won < 0) | (lost < 0) | (won + lost > most)
    if cfg.hit_reward == 0: return bad | (r != won - lost)
    hits = (r.astype(np.float64) - (won - lost)) / cfg.hit_reward
    return bad | (np.abs(hits - np.rint(hits)) > 1e-2) | (hits < -1e-2) | (hits > most + 1e-2)


class Episodes:
    "Running sums of every game's episode, to check `info['episode']` and the end of episodes."
    def __init__(self, n: int):
        self.ret = np.zeros(n)
        self.won, self.lost, self.length = (np.zeros(n, np.int64) for _ in range(3))

    def update(self, cfg, r, term, trunc, info, s_score, s_steps) -> dict:
        "Add one step; return the failures per game of episode_end and episode_stats."
        self.ret += r
        self.won += info['won']
        self.lost += info['lost']
        self.length += 1
        done = term | trunc
        reached = np.maximum(self.won, self.lost) >= cfg.points
        timeout = ~reached & (self.length >= cfg.max_steps)
        end = (term & trunc) | (term != reached) | (trunc != timeout)
        end |= np.where(done, (s_score != 0).any(1) | (s_steps != 0),
                        (s_score.max(1) >= cfg.points) | (s_steps != self.length))
        stats = np.zeros(len(r), bool)
        if done.any():
            ep = info.get('episode', {})
            got = [np.asarray(ep.get(k, np.full(len(r), -1))) for k in ('r', 'l', 'won', 'lost')]
            want = (self.ret, self.length, self.won, self.lost)
            stats = done & np.any([g != w for g, w in zip(got, want)], 0)
            for a in (self.ret, self.won, self.lost, self.length): a[done] = 0
        return {'episode_end': end, 'episode_stats': stats}


def final_check(cfg: GameConfig, obs, prev, info, done) -> dict:
    "Failures per game of the final observations and the fresh stacks of ended games."
    n = len(done)
    shift = differ(obs[:, :-1], prev[:, 1:]) & ~done
    final = np.zeros(n, bool)
    if done.any() or '_final_obs' in info:
        flags = [np.asarray(info.get(k, np.zeros(n, bool))) for k in ('_episode', '_final_obs')]
        final = (flags[0] != done) | (flags[1] != done)
        rows = np.flatnonzero(done)
        if 'final_obs' not in info: final[rows] = True
        else:
            old = info['final_obs'][rows]
            final[rows] |= differ(old[:, :-1], prev[rows, 1:]) | ~all_grey(cfg, old)
        shift[rows] |= ~all_grey(cfg, obs[rows])                 # restarted stacks: valid greys
    return {'stack_shift': shift, 'final_obs': final}


# ---------------------------------------------------------------- a case and the run
def snapshot(env) -> dict:
    "A copy of the state arrays of every game (the engine is the one place the env keeps them)."
    return {k: getattr(env.engine, k).copy() for k in STATE}


def step_checks(env, prev_obs, prev, actions, out, episodes) -> dict:
    "Step the env once with `actions`; return the failures per game of every invariant."
    cfg = env.cfg
    obs, r, term, trunc, info = out
    lab, done = info['labels'], term | trunc
    s = snapshot(env)
    bad = pixel_checks(cfg, obs, lab, render_labels(env.engine, np.empty_like(lab)))
    bad.update(state_checks(cfg, s))
    bad['paddle_motion'] = paddle_check(cfg, prev, s, actions, done)
    bad.update(final_check(cfg, obs, prev_obs, info, done))
    bad['rewards'] = reward_check(cfg, r, info)
    bad.update(episodes.update(cfg, r, term, trunc, info, env.engine.score, env.engine.steps))
    if cfg.frame_skip == 1: bad['points_from_motion'] = motion_points(cfg, prev, s, info, done)
    if cfg.serve_apart: bad['balls_apart'] = apart_check(cfg, s)
    return bad


def run_case(seed: int, n: int, steps: int, found: dict, bar) -> tuple:
    "Run case `seed` for `steps` steps of n games; count failures into `found`; (env s, check s)."
    cfg = draw_config(np.random.default_rng(seed), GAMES[seed % len(GAMES)])
    t_env = t_check = 0.
    t = 0
    try:
        env = PongVectorEnv(n, config=cfg)
        obs, _ = env.reset(seed=seed)
        prev_obs, episodes, actions = np.empty_like(obs), Episodes(n), action_stream(seed, n)
        for t in range(steps):
            a = next(actions)
            np.copyto(prev_obs, obs)
            prev = snapshot(env)
            t0 = time.perf_counter()
            out = env.step(a)
            t1 = time.perf_counter()
            bad = step_checks(env, prev_obs, prev, a, out, episodes)
            for name, games in bad.items():
                if games.any(): found[name].append((seed, t, np.flatnonzero(games), cfg))
            t_env, t_check = t_env + t1 - t0, t_check + time.perf_counter() - t1
            bar.update(n)
    except Exception as err:          # a crash of the env (or of a check on its output): a finding
        found[f'exception: {err!r}'[:60]].append((seed, t, np.arange(n), cfg))
        bar.update(n * (steps - t))
    return t_env, t_check


def report(found: dict, checked: int, seconds: float, cpu: float, t_env: float, args):
    "Print the figures of the run and a rerun command for the first violations of each invariant."
    total = sum(len(g) for v in found.values() for *_, g, _ in v)
    print(f'agent steps checked: {checked:,} ({args.envs} games a step)')
    print(f'steps/s: {checked / seconds:,.0f} checked ({checked / t_env:,.0f} env alone; '
          f'{1 - t_env / seconds:.0%} of the time checking); {checked / cpu:,.0f} per CPU-second '
          f'of this process (the cores may be shared; load average {os.getloadavg()[0]:.1f})')
    print(f'violations: {total}')
    for name in INVARIANTS:
        hits = found.get(name, [])
        print(f'  {name:<20} {sum(len(g) for *_, g, _ in hits):>8}')
    for name, hits in found.items():
        if name not in INVARIANTS: print(f'  {name:<20} {len(hits):>8} cases')
    for name, hits in found.items():
        for seed, t, games, cfg in hits[:args.examples]:
            print(f'\n{name}: case seed {seed}, step {t}, games {games[:8].tolist()}\n  {cfg}'
                  '\n  rerun: .venv/bin/python '
                  f'benchmarks/env_fuzz.py --seed {seed} --steps {(t + 1) * args.envs} '
                  f'--envs {args.envs} --case-steps {args.case_steps}')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--steps', type=int, default=10_000_000, help='agent steps to check in all')
    p.add_argument('--envs', type=int, default=256, help='games stepped together (vector env N)')
    p.add_argument('--seed', type=int, default=0, help='seed of the first case; case k: seed + k')
    p.add_argument('--case-steps', type=int, default=300, help='vector steps per case (config)')
    p.add_argument('--examples', type=int, default=3, help='violations printed per invariant')
    args = p.parse_args(argv)
    found, vector_steps = defaultdict(list), -(-args.steps // args.envs)
    t_env, t0, c0 = 0., time.perf_counter(), time.process_time()
    with tqdm(total=vector_steps * args.envs, unit='step', unit_scale=True, smoothing=0.05) as bar:
        for k in range(-(-vector_steps // args.case_steps)):
            todo = min(args.case_steps, vector_steps - k * args.case_steps)
            t_env += run_case(args.seed + k, args.envs, todo, found, bar)[0]
            bar.set_postfix(violations=sum(len(v) for v in found.values()), refresh=False)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    report(found, vector_steps * args.envs, seconds, cpu, t_env, args)
    return found


if __name__ == '__main__':
    main()
