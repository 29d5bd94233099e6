"""Games: property tests over random seeds and action sequences, bad arguments, determinism and opponent strength."""
import hashlib
import json

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings, strategies as st

from atoms.games import (ENV_IDS, GAMES, GameConfig, PongEngine, PongEnv, PongVectorEnv, check_scene,
                         render_labels)

SMALL = dict(points=2, max_steps=60)          # short episodes, so resets and truncations happen within a test


# ---------------------------------------------------------------- helpers
def record_serves(env):
    "Wrap the engine's `serve` to log, for every point, the balls that left the field and where (won: left edge)."
    e, log = env.engine, []
    serve = e.serve
    def logged(mask, new_episode=False):
        if not new_episode: log.append((mask.copy(), e.ball_x.copy()))
        return serve(mask, new_episode)
    e.serve = logged
    return log


def tracker(env):
    "A scripted agent: follow the scoring ball that reaches the agent's side first, else go to the centre."
    e, c = env.engine, env.cfg
    coming = (e.ball_vx > 0) & c.scoring[None]
    b = np.where(coming, e.ball_x, -np.inf).argmax(1)
    goal = np.where(coming.any(1), e.ball_y[np.arange(e.n), b] + c.ball_size / 2, c.size / 2)
    d = goal - (e.agent_y + c.paddle_h / 2)
    return np.where(d < -1.5, 1, np.where(d > 1.5, 2, 0))


def points_won(game, policy, n=256, steps=1500, seed=0, **kw):
    "Fraction of points the agent wins with `policy` ('random' or 'tracker'), and the number of points played."
    env = PongVectorEnv(n, game, **kw); env.reset(seed=seed); rng = np.random.default_rng(seed); won = lost = 0
    for _ in range(steps):
        a = rng.integers(0, 3, n) if policy == 'random' else tracker(env)
        info = env.step(a)[-1]; won += info['won'].sum(); lost += info['lost'].sum()
    return won / max(won + lost, 1), won + lost


def trajectory_hash(game, n=6, steps=400, seed=3, **kw):
    "A digest of everything a vector env returns over a seeded random rollout."
    env = PongVectorEnv(n, game, **kw); h = hashlib.sha256()
    obs, info = env.reset(seed=seed); h.update(obs.tobytes()); h.update(info['labels'].tobytes())
    rng = np.random.default_rng(seed + 1)
    for _ in range(steps):
        obs, r, te, tr, info = env.step(rng.integers(0, 3, n))
        for a in (obs, r, te, tr, info['labels'], info['won'], info['lost']): h.update(np.ascontiguousarray(a).tobytes())
        if 'episode' in info:
            h.update(info['final_obs'][info['_final_obs']].tobytes()); h.update(info['_episode'].tobytes())
            for k in ('r', 'l', 'won', 'lost'): h.update(np.asarray(info['episode'][k]).tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- properties of every step
case = dict(game=st.sampled_from(GAMES), seed=st.integers(0, 2**31 - 1), n=st.integers(1, 4),
            frame_skip=st.sampled_from([1, 2]), stack=st.sampled_from([1, 2, 4]), size=st.sampled_from([40, 84]),
            actions=st.lists(st.integers(0, 2), min_size=10, max_size=60))


@settings(max_examples=40, deadline=None)
@given(**case)
def test_every_step(game, seed, n, frame_skip, stack, size, actions):
    env = PongVectorEnv(n, game, frame_skip=frame_skip, stack=stack, size=size, **SMALL)
    c, e, ids = env.cfg, env.engine, np.array(sorted(env.labels.values()))
    log = record_serves(env)
    obs, info = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    for t, a0 in enumerate(actions):
        prev = obs.copy(); log.clear()
        a = np.roll(np.where(rng.random(n) < 0.5, a0, rng.integers(0, 3, n)), t)
        obs, r, term, trunc, info = env.step(a)
        lab = info['labels']
        # masks partition the frame exactly: label ids only, each pixel one label, and they are the reference drawing
        assert np.isin(lab, ids).all()
        np.testing.assert_array_equal(lab, render_labels(e, np.empty_like(lab)))
        # the frame is the rendering of its labels
        np.testing.assert_array_equal(obs[:, -1], c.greys[lab])
        # every object is drawn whole unless a ball covers it; the paddles never overlap
        for k, i in (('agent_paddle', 1), ('opponent_paddle', 2)):
            assert ((lab == i).sum((1, 2)) <= c.paddle_h * c.paddle_w).all()
            assert ((lab == i).sum((1, 2)) >= c.paddle_h * c.paddle_w - c.n_balls * c.ball_size**2).all()
        # objects stay in bounds (a ball may be half out, for the tick before it is served)
        assert ((e.agent_y >= 0) & (e.agent_y <= c.size - c.paddle_h)).all()
        assert ((e.opponent_y >= 0) & (e.opponent_y <= c.size - c.paddle_h)).all()
        assert ((e.ball_y >= 0) & (e.ball_y <= c.size - c.ball_size)).all()
        assert ((e.ball_x >= -c.ball_size) & (e.ball_x <= c.size)).all()
        # the stack shifts by one frame in games that go on; ended games restart with a full, fresh stack
        done = term | trunc
        np.testing.assert_array_equal(obs[~done, :-1], prev[~done, 1:])
        assert not (term & trunc).any()
        # rewards: points on scoring balls only (the distractor never scores), recomputed from the logged serves
        won, lost = np.zeros(n, int), np.zeros(n, int)
        for mask, x in log:
            out_left, out_right = mask & (x + c.ball_size < 0), mask & (x > c.size)
            assert (mask == (out_left | out_right)).all()                  # a serve only after a point
            won += (out_left & c.scoring).sum(1); lost += (out_right & c.scoring).sum(1)
        np.testing.assert_array_equal(info['won'], won); np.testing.assert_array_equal(info['lost'], lost)
        np.testing.assert_array_equal(r, won - lost)
        # a serve after every point: with one tick a step, the served ball is on the centre line
        if frame_skip == 1 and log:
            served = log[-1][0] & ~done[:, None]
            assert (e.ball_x[served] == (c.size - c.ball_size) / 2).all()
            assert (np.abs(e.ball_vx[served]) == c.ball_vx).all() and (np.abs(e.ball_vy[served]) <= c.serve_vy).all()
        if done.any():
            assert info['_episode'].tolist() == done.tolist() and info['_final_obs'].tolist() == done.tolist()
            ep = info['episode']
            assert ((np.maximum(ep['won'], ep['lost']) >= c.points) == term)[done].all()
            np.testing.assert_array_equal(info['final_obs'][done, :-1], prev[done, 1:])
            assert (e.score[done] == 0).all() and (e.steps[done] == 0).all()


@settings(max_examples=15, deadline=None)
@given(game=st.sampled_from(GAMES), seed=st.integers(0, 2**31 - 1), actions=st.lists(st.integers(0, 2), min_size=5, max_size=80))
def test_vector_and_single_env_agree(game, seed, actions):
    s, v = PongEnv(game, **SMALL), PongVectorEnv(1, game, **SMALL)
    so, si = s.reset(seed=seed); vo, vi = v.reset(seed=seed)
    np.testing.assert_array_equal(so, vo[0]); np.testing.assert_array_equal(si['labels'], vi['labels'][0])
    for a in actions:
        so, sr, ste, str_, si = s.step(a); vo, vr, vte, vtr, vi = v.step(np.array([a]))
        assert (sr, ste, str_) == (vr[0], vte[0], vtr[0])
        assert (si['won'], si['lost']) == (vi['won'][0], vi['lost'][0])
        if ste or str_:
            np.testing.assert_array_equal(si['final_obs'], vi['final_obs'][0]); break
        np.testing.assert_array_equal(so, vo[0]); np.testing.assert_array_equal(si['labels'], vi['labels'][0])


@settings(max_examples=10, deadline=None)
@given(game=st.sampled_from(GAMES), seed=st.integers(0, 2**31 - 1))
def test_same_seed_same_trajectory(game, seed):
    def run(seed):
        env = PongVectorEnv(3, game, **SMALL); out = [env.reset(seed=seed)[0].copy()]; rng = np.random.default_rng(0)
        for _ in range(80):
            obs, r, *_ = env.step(rng.integers(0, 3, 3)); out += [obs.copy(), r.copy()]
        return out
    a, b, other = run(seed), run(seed), run(seed + 1)
    for x, y in zip(a, b): np.testing.assert_array_equal(x, y)
    assert any((x != y).any() for x, y in zip(a, other))


def test_trajectory_pinned():
    """Trajectories are pinned bit for bit. The hashes were computed from the first (plain) engine, except
    pong-2balls': recomputed when its v1 changed the serve direction (v0: '8b202c6b13c741d5', '3147b2e9784da771')."""
    pins = {'pong': ('44b892bdfba696e3', 'bafafaaee0b5fa68'), 'pong-2balls': ('f140086d3c7652c2', '9cd20b0e01dea34a'),
            'pong-2balls-target': ('cbfbf3f8573152b0', '8b65322d70797dff')}
    for g, (h1, h2) in pins.items():
        assert trajectory_hash(g, points=2, max_steps=150, opponent_speed=1.25) == h1, g
        assert trajectory_hash(g, frame_skip=2, stack=3, size=64, opponent_speed=1.25) == h2, g
    assert trajectory_hash('pong-2balls', points=2, max_steps=150, opponent_speed=1.25, serve_apart=False) == '8b202c6b13c741d5'  # v0


# ---------------------------------------------------------------- the distractor
def test_distractor_never_scores():
    "The same scene in pong-2balls (both score) and pong-2balls-target (only the target): balls leave on both sides."
    # ball 0 (the target) flies past the agent; ball 1 (the distractor) past the agent, then past the opponent
    for vx1, expect in ((2., dict(won=0, lost=2)), (-2., dict(won=1, lost=1))):
        scene = dict(ball_x=[[40., 60. if vx1 > 0 else 20.]], ball_y=[[20., 40.]], ball_vx=[[2., vx1]], ball_vy=0.,
                     agent_y=60., opponent_y=0.)
        for g in ('pong-2balls', 'pong-2balls-target'):
            env = PongVectorEnv(1, g, opponent_speed=0.); env.reset(seed=0, options={'scene': scene})
            out = [(lambda o: (o[1][0], o[-1]['won'][0], o[-1]['lost'][0]))(env.step(np.array([0]))) for _ in range(24)]
            r, won, lost = np.sum(out, 0)                           # both balls are out; no served ball is back yet
            want = expect if g == 'pong-2balls' else dict(won=0, lost=1)
            assert (won, lost, r) == (want['won'], want['lost'], want['won'] - want['lost']), (g, vx1)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), dy=st.floats(0, 30), dvy=st.sampled_from([-1., 0., 1.]))
def test_moving_the_distractor_keeps_the_rewards(seed, dy, dvy):
    "Rewards and the target's course do not depend on where the distractor is (until it is served, which draws randomness)."
    scene = dict(ball_x=[[40., 60.]], ball_y=[[10., 50.]], ball_vx=[[2., -2.]], ball_vy=[[1., 0.]])
    moved = dict(scene, ball_y=[[10., 50. - dy]], ball_vy=[[1., dvy]])
    envs = [PongVectorEnv(1, 'pong-2balls-target') for _ in range(2)]
    for env, sc in zip(envs, (scene, moved)): env.reset(seed=seed, options={'scene': sc})
    rng = np.random.default_rng(seed)
    for _ in range(30):                                  # the distractor needs > 30 steps to leave the field
        a = rng.integers(0, 3, 1)
        (_, r0, *_), (_, r1, *_) = envs[0].step(a), envs[1].step(a)
        assert r0 == r1
        for k in ('agent_y', 'opponent_y'): assert getattr(envs[0].engine, k) == getattr(envs[1].engine, k)
        assert envs[0].engine.ball_x[0, 0] == envs[1].engine.ball_x[0, 0]


# ---------------------------------------------------------------- scenes
@pytest.mark.parametrize('game', GAMES)
def test_set_scene_round_trips(game):
    B = GameConfig(game=game).n_balls
    scene = dict(agent_y=[10., 50.], opponent_y=[30., 0.], ball_x=np.array([[20., 60.], [41., 5.]])[:, :B],
                 ball_y=np.array([[5., 70.], [40., 40.]])[:, :B], ball_vx=np.array([[2., -2.], [-2., 2.]])[:, :B],
                 ball_vy=np.array([[0.5, -1.], [0., 2.]])[:, :B])
    env = PongVectorEnv(2, game); env.reset(seed=0)
    obs = env.set_scene(**scene).copy()
    for k, v in scene.items(): np.testing.assert_array_equal(getattr(env.engine, k), v)
    np.testing.assert_array_equal(obs[:, -1], env.cfg.greys[render_labels(env.engine, np.empty_like(env.engine.labels))])
    obs2, _ = PongVectorEnv(2, game).reset(seed=0, options={'scene': scene})
    np.testing.assert_array_equal(obs, obs2)
    # the stack shows the balls' past positions, one frame_skip back per frame
    ys, xs = np.nonzero(obs[0, 0] == env.cfg.greys[3])
    assert (xs.min(), ys.min()) == (round(20 - 3 * 2), round(5 - 3 * 0.5))


@pytest.mark.parametrize('bad, msg', [
    (dict(ball_x=[[30., 30.]], ball_y=[[10., 11.]]), 'the two balls overlap'),
    (dict(ball_x=[[-3., 40.]]), 'scene.ball_x: ball must lie in'),
    (dict(ball_y=[[10., 90.]]), 'scene.ball_y: ball must lie in'),
    (dict(agent_y=80.), 'scene.agent_y: paddle must lie in'),
    (dict(opponent_y=-1.), 'scene.opponent_y: paddle must lie in'),
    (dict(ball_vx=np.nan), 'scene.ball_vx: values must be finite'),
    (dict(spin=1.), "unknown field 'spin'")])
def test_bad_scene(bad, msg):
    env = PongVectorEnv(1, 'pong-2balls'); env.reset(seed=0)
    with pytest.raises(ValueError, match=msg.replace('.', r'\.').replace('(', r'\(')): env.set_scene(**bad)
    with pytest.raises(ValueError, match=msg.replace('.', r'\.').replace('(', r'\(')): check_scene(env.cfg, bad)


# ---------------------------------------------------------------- gymnasium API
@pytest.mark.parametrize('game', GAMES)
def test_check_env(game):
    check_env(gym.make(ENV_IDS[game]).unwrapped, skip_render_check=True)
    env = gym.make_vec(ENV_IDS[game], num_envs=3, vectorization_mode='vector_entry_point')
    obs, info = env.reset(seed=1)
    assert obs.shape == (3, 4, 84, 84) and info['labels'].shape == (3, 84, 84)


# ---------------------------------------------------------------- bad arguments
@pytest.mark.parametrize('kw, msg', [
    (dict(game='tennis'), "GameConfig.game: unknown variant 'tennis'"),
    (dict(size=-4), 'GameConfig.size must be >= 1'),
    (dict(stack=0), 'GameConfig.stack must be >= 1'),
    (dict(paddle_h=-2), 'GameConfig.paddle_h must be >= 1'),
    (dict(paddle_h=84), 'GameConfig.paddle_h (84) must be smaller'),
    (dict(agent_speed=-1.), 'GameConfig.agent_speed must be >= 0'),
    (dict(opponent_speed=-1.), 'GameConfig.opponent_speed must be >= 0'),
    (dict(ball_vx=0.), 'GameConfig.ball_vx must be > 0'),
    (dict(ball_size=30), 'ball_size'),
    (dict(grey_ball=300), 'GameConfig.grey_*'),
    (dict(game='pong-2balls-target', grey_distractor=236), 'distinct grey values'),
    (dict(bounce_vy=200.), 'GameConfig.bounce_vy must be <= size - ball_size = 82'),
    (dict(serve_vy=100., size=40), 'GameConfig.serve_vy must be <= size - ball_size = 38'),
    (dict(serve_vy=float('nan')), 'GameConfig.serve_vy must be a finite number'),
    (dict(bounce_vy=float('inf')), 'GameConfig.bounce_vy must be a finite number'),
    (dict(ball_vx=float('nan')), 'GameConfig.ball_vx must be a finite number'),
    (dict(agent_speed=float('nan')), 'GameConfig.agent_speed must be a finite number'),
    (dict(opponent_speed=float('inf')), 'GameConfig.opponent_speed must be a finite number'),
    (dict(hit_reward=float('nan')), 'GameConfig.hit_reward must be a finite number'),
    (dict(size=84.5), 'GameConfig.size must be an integer')])
def test_bad_config(kw, msg):
    with pytest.raises(ValueError) as err: GameConfig(**kw)
    assert msg in str(err.value)
    with pytest.raises(ValueError) as err: PongVectorEnv(2, **kw)
    assert msg in str(err.value)


@pytest.mark.parametrize('game', GAMES)
def test_fastest_vertical_speed_keeps_balls_in_the_field(game):
    "At the bound |vy| = size - ball_size, every ball stays in the field through bounces and serves."
    size, bs = 24, 2
    env = PongVectorEnv(64, game, size=size, ball_size=bs, paddle_h=4, bounce_vy=size - bs,
                        serve_vy=size - bs, max_steps=50)
    env.reset(seed=3)
    rng = np.random.default_rng(3)
    for _ in range(400):
        env.step(rng.integers(0, 3, 64))
        y = env.engine.ball_y
        assert np.isfinite(y).all() and (y >= 0).all() and (y <= size - bs).all()


def test_bad_actions_and_sizes():
    env = PongVectorEnv(3, 'pong'); env.reset(seed=0)
    for bad, msg in [(np.array([0, 1]), 'actions must have shape (3,)'), (np.zeros((3, 1), int), 'actions must have shape (3,)'),
                     (np.array([0, 1, 3]), 'actions must be integers in [0, 2]'), (np.array([0, -1, 2]), 'actions must be integers in [0, 2]'),
                     (np.array([0., 1., 2.]), 'actions must be integers in [0, 2]')]:
        with pytest.raises(ValueError) as err: env.step(bad)
        assert msg in str(err.value)
    with pytest.raises(ValueError, match='num_envs must be a positive int'): PongVectorEnv(0)
    with pytest.raises(ValueError, match='num_envs must be a positive int'): PongVectorEnv(2.5)
    with pytest.raises(ValueError, match=r'n \(number of games\) must be >= 1'): PongEngine(GameConfig(), -1)
    s = PongEnv('pong'); s.reset(seed=0)
    for bad in (3, -1, 1.5, np.array([1, 2])):
        with pytest.raises(ValueError, match='action must be 0, 1 or 2'): s.step(bad)
    with pytest.raises(TypeError): PongVectorEnv(2, 'pong', paddle_height=3)   # a misspelt field is named by Python


# ---------------------------------------------------------------- opponent strength
@pytest.mark.parametrize('game', GAMES)
def test_opponent_beats_a_random_policy(game):
    "A random policy wins at most 15% of the points against the default opponent; a scripted tracker wins >= 90%."
    rate, pts = points_won(game, 'random', n=256, steps=1000)
    assert pts > 2000 and rate <= 0.15, (rate, pts)
    rate, pts = points_won(game, 'tracker', n=128, steps=2000)
    assert pts > 20 and rate >= 0.9, (rate, pts)


@settings(max_examples=10, deadline=None)
@given(game=st.sampled_from(['pong-2balls', 'pong-2balls-target']), seed=st.integers(0, 2**31 - 1),
       size=st.sampled_from([40, 84]), frame_skip=st.sampled_from([1, 2]))
def test_balls_never_arrive_together(game, seed, size, frame_skip):
    "With `serve_apart` (pong-2balls' default), two balls flying towards the same paddle are >= a quarter rally apart."
    env = PongVectorEnv(16, game, size=size, frame_skip=frame_skip, serve_apart=True); env.reset(seed=seed)
    e, c, rng = env.engine, env.cfg, np.random.default_rng(seed)
    face_o, face_a = c.paddle_margin + c.paddle_w, e.agent_x - c.ball_size
    for t in range(400):
        env.step(tracker(env) if t % 3 else rng.integers(0, 3, 16))
        inside = ((e.ball_x >= face_o) & (e.ball_x <= face_a)).all(1)
        same = inside & (np.sign(e.ball_vx[:, 0]) == np.sign(e.ball_vx[:, 1]))
        assert (np.abs(e.ball_x[same, 0] - e.ball_x[same, 1]) >= (face_a - face_o) / 2).all()


# ---------------------------------------------------------------- saving and restoring
def record(env, actions):
    "Everything `step` returns over `actions`, copied (info flattened to arrays)."
    out = []
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        out += [obs.copy(), r.copy(), term.copy(), trunc.copy()]
        out += [np.asarray(v).copy() for k, v in sorted(info.items()) if k != 'episode']
        out += [np.asarray(v).copy() for k, v in sorted(info.get('episode', {}).items())]
    return out


@settings(max_examples=15, deadline=None)
@given(game=st.sampled_from(GAMES), seed=st.integers(0, 2**31 - 1), k=st.integers(0, 60), m=st.integers(1, 80),
       frame_skip=st.sampled_from([1, 2]), stack=st.sampled_from([1, 4]))
def test_state_dict_resumes_bit_for_bit(game, seed, k, m, frame_skip, stack):
    "k steps, state_dict, m steps; a fresh env reset with another seed and loaded replays the m steps exactly."
    kw = dict(frame_skip=frame_skip, stack=stack, **SMALL)
    rng = np.random.default_rng(seed)
    src = PongVectorEnv(3, game, **kw)
    src.reset(seed=seed)
    record(src, rng.integers(0, 3, (k, 3)))
    state = src.state_dict()
    actions = rng.integers(0, 3, (m, 3))
    expected = record(src, actions)
    dst = PongVectorEnv(3, game, **kw)
    obs, _ = dst.reset(seed=seed + 1)
    assert dst.load_state_dict(state) is obs
    got = record(dst, actions)
    assert len(got) == len(expected)
    for x, y in zip(got, expected):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


def test_state_dict_contract():
    "Copies under fixed keys plus one JSON-able `np_random`; bad states are refused, naming the key, unapplied."
    env = PongVectorEnv(2, 'pong-2balls')
    env.reset(seed=0)
    state = env.state_dict()
    assert [k for k, v in state.items() if not isinstance(v, np.ndarray)] == ['np_random']
    json.dumps(state['np_random'])
    assert not any(np.shares_memory(v, env._obs) for v in state.values() if isinstance(v, np.ndarray))
    before = env.state_dict()
    with pytest.raises(ValueError, match="key 'steps' is missing"):
        env.load_state_dict({k: v for k, v in state.items() if k != 'steps'})
    with pytest.raises(ValueError, match="'ball_x' has shape"):
        env.load_state_dict({**state, 'ball_x': np.zeros((2, 1))})
    after = env.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before if k != 'np_random')
