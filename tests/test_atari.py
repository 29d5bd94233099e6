"""ALE Pong labels on thousands of real frames of seeded random play, against the RGB screen, the RAM
(OCAtari's reading) and a slow reference resize; observations against ale-py's native vector env.

A module fixture plays GAMES × STEPS agent steps once (each keeps two emulator frames, so twice as
many frames are checked) and records, for every kept frame and every observation, what the tests
below assert on.
"""
from collections import Counter

import cv2
import numpy as np
import pytest
from ale_py.vector_env import AtariVectorEnv
from gymnasium.vector import AutoresetMode

from atoms.atari import (ATARI_LABELS, ATARI_PONG, BOX_OBJECTS, PONG_COLOURS, PRECEDENCE,
                         AtariConfig, AtariPongVectorEnv, box_centres, clear_stacks,
                         make_atari_eval_set, ram_boxes)
from atoms.core import ArtifactError
from atoms.evalset import EvalSetConfig, eval_dir, load_eval_set, save_eval_set

GAMES, STEPS, SEED = 4, 520, 11
CFG = AtariConfig()


def rgb_masks(rgb: np.ndarray) -> np.ndarray:
    "Reference masks (3, H, W) in `BOX_OBJECTS` order: playfield pixels of exactly the object's RGB."
    top, bottom = CFG.playfield
    masks = np.zeros((len(BOX_OBJECTS), *CFG.screen), bool)
    for k, name in enumerate(BOX_OBJECTS):
        masks[k, top:bottom] = (rgb[top:bottom] == PONG_COLOURS[name]).all(-1)
    return masks


def env_masks(pixels) -> np.ndarray:
    "The env's object pixels (flat offsets, ids) of one frame as masks (3, H, W)."
    offsets, ids = pixels
    masks = np.zeros((len(BOX_OBJECTS), CFG.screen[0] * CFG.screen[1]), bool)
    for k, name in enumerate(BOX_OBJECTS):
        masks[k, offsets[ids == ATARI_LABELS[name]]] = True
    return masks.reshape(len(BOX_OBJECTS), *CFG.screen)


def reference_label(union) -> np.ndarray:
    "Label image of pooled masks (3, H, W): cv2 area resize of each, any coverage, by precedence."
    label = np.zeros((CFG.size, CFG.size), np.uint8)
    for name in PRECEDENCE:
        mask = union[BOX_OBJECTS.index(name)].astype(np.float32)
        covered = cv2.resize(mask, (CFG.size, CFG.size), interpolation=cv2.INTER_AREA) > 0
        label[covered] = ATARI_LABELS[name]
    return label


def mask_centres(masks) -> np.ndarray:
    "Centres (3, 2) as (x, y) of each mask's pixels; NaN for an empty mask."
    out = np.full((len(masks), 2), np.nan)
    for k, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        if len(ys): out[k] = xs.mean(), ys.mean()
    return out


def recorder(game, frames: list, kept: list):
    "Wrap `game.keep` to record each kept frame (RGB masks, env masks, RAM) and its RGB masks."
    keep = game.keep

    def keep_and_record(slot):
        keep(slot)
        rgb = game.ale.getScreenRGB()
        reference = rgb_masks(rgb)
        mine = env_masks(game.pixels[slot])
        kept[slot] = reference
        frames.append(dict(same=np.array_equal(reference, mine), centres=mask_centres(mine),
                           ram=game.ram[slot].copy(), ball_drawn=mine[2].any(),
                           colour_ok=all((rgb[m] == PONG_COLOURS[n]).all()
                                         for m, n in zip(mine, BOX_OBJECTS))))
    return keep_and_record


def cleared(game, kept: list):
    "Wrap `game.new_episode` to record that it pools its first frame with an empty (black) one."
    new_episode = game.new_episode

    def new_episode_and_record():
        new_episode()
        kept[1] = np.zeros((len(BOX_OBJECTS), *CFG.screen), bool)
    return new_episode_and_record


@pytest.fixture(scope='module')
def play():
    "Seeded random play: records of every kept frame and every observation's labels."
    env = AtariPongVectorEnv(GAMES)
    frames, kept = [], [[None, None] for _ in range(GAMES)]
    for game, mine in zip(env.games, kept):
        game.keep = recorder(game, frames, mine)
        game.new_episode = cleared(game, mine)
    obs_records = []
    _, info = env.reset(seed=SEED)
    rng = np.random.default_rng(SEED)
    for t in range(STEPS):
        _, _, term, trunc, info = env.step(rng.integers(0, 6, GAMES))
        for i, game in enumerate(env.games):
            union = kept[i][0] | kept[i][1]
            obs_records.append(dict(label=info['labels'][i].copy(), reference=reference_label(union),
                                    ball_drawn=union[2].any(), stack=info['label_stack'][i].copy()))
            kept[i][0] = union                    # pooled in place, as the env pools its frames
    return dict(frames=frames, obs=obs_records)


def test_enough_frames(play):
    assert len(play['obs']) >= 2000 and len(play['frames']) >= 4000


def test_object_pixels_have_their_colour(play):
    "Every object pixel has its object's RGB, and the palette-index masks equal RGB masks exactly."
    assert all(f['colour_ok'] for f in play['frames'])
    assert all(f['same'] for f in play['frames'])


def agreement(frames) -> dict:
    "Per object: frames where RAM puts it on screen, those within 1 px, and the exceptions by kind."
    out = {}
    for k, name in enumerate(BOX_OBJECTS):
        shown, close, kinds = 0, 0, Counter()
        for f in frames:
            ram_centre = box_centres(ram_boxes(f['ram']), CFG)[k]
            if np.isnan(ram_centre).any(): continue
            shown += 1
            centre = f['centres'][k]
            if np.isnan(centre).any(): kinds['no pixels drawn'] += 1
            elif (np.abs(centre - ram_centre) <= 1).all(): close += 1
            else: kinds[f'off by {np.abs(centre - ram_centre).max():.1f} px'] += 1
        out[name] = dict(shown=shown, close=close, share=close / max(shown, 1), exceptions=kinds)
    return out


def test_mask_centres_agree_with_ram(play):
    "Each object's mask centre is within 1 px of RAM's in >= 99 % of the frames RAM shows it in."
    result = agreement(play['frames'])
    print({n: (r['close'], r['shown'], f"{r['share']:.2%}", dict(r['exceptions']))
           for n, r in result.items()})
    for name, r in result.items():
        assert r['shown'] > 500, (name, r)
        assert r['share'] >= 0.99, (name, r)


def test_ball_never_disappears(play):
    "Where either pooled frame draws the ball, the observation's label image has ball pixels."
    with_ball = [o for o in play['obs'] if o['ball_drawn']]
    assert len(with_ball) > 500
    assert all((o['label'] == ATARI_LABELS['ball']).any() for o in with_ball)


def test_labels_equal_reference_resize(play):
    "The label images equal the slow reference: union, cv2 area resize, any coverage, precedence."
    assert all(np.array_equal(o['label'], o['reference']) for o in play['obs'])


def test_labels_partition_the_frame(play):
    "Every pixel of every stacked frame has exactly one known label, and the stack shifts."
    labels = np.stack([o['stack'] for o in play['obs']])
    assert set(np.unique(labels).tolist()) <= set(ATARI_LABELS.values())
    assert labels.shape[1:] == (CFG.stack, CFG.size, CFG.size)
    by_game = labels.reshape(STEPS, GAMES, *labels.shape[1:])
    moved = by_game[1:, :, :-1] == by_game[:-1, :, 1:]
    assert moved.all(axis=(2, 3, 4)).mean() > 0.99            # all but the steps after a reset


def test_observations_equal_native_env():
    "Pixel for pixel equal to ale-py's AtariVectorEnv over 900 steps, an episode end included."
    seeds = np.array([0, 9, 21])                # no-op counts 16, 0 and 1: FIRE alone in two
    env = AtariPongVectorEnv(len(seeds))
    native = AtariVectorEnv('pong', len(seeds), num_threads=1, reward_clipping=False,
                            autoreset_mode=AutoresetMode.SAME_STEP)
    obs, _ = env.reset(seed=seeds)
    assert np.array_equal(obs, native.reset(seed=seeds)[0])
    rng, ended = np.random.default_rng(0), 0
    for _ in range(900):
        actions = rng.integers(0, 6, len(seeds))
        obs, reward, term, trunc, info = env.step(actions)
        n_obs, n_reward, n_term, n_trunc, n_info = native.step(actions)
        assert np.array_equal(obs, n_obs)
        assert np.array_equal(reward, n_reward) and np.array_equal(term, n_term)
        if term.any():
            ended += 1
            assert np.array_equal(info['final_obs'][term], n_info['final_obs'][term])
    assert ended >= 1


def test_masks_off_same_observations():
    "Without masks the env plays the same observations and returns no labels."
    with_masks, without = AtariPongVectorEnv(2), AtariPongVectorEnv(2, masks=False)
    a, info = with_masks.reset(seed=1)
    b, info_off = without.reset(seed=1)
    assert np.array_equal(a, b) and 'labels' in info and info_off == {}
    for t in range(50):
        actions = np.full(2, t % 6)
        assert np.array_equal(with_masks.step(actions)[0], without.step(actions)[0])


# The Atari evaluation set: its rule against a slow reference, determinism, saving and loading.

def apart(a: np.ndarray, b: np.ndarray) -> bool:
    "Reference: every pixel of mask `a` at Chebyshev distance >= 2 from every pixel of mask `b`."
    pa, pb = np.argwhere(a), np.argwhere(b)
    return bool(np.abs(pa[:, None] - pb[None]).max(-1).min() >= 2)


def follows_rule(labels: np.ndarray) -> bool:
    "Reference rule on one label stack (F, H, W): every object in every frame, no two touching."
    ids = [ATARI_LABELS[name] for name in BOX_OBJECTS]
    for frame in labels:
        masks = [frame == i for i in ids]
        if not all(m.any() for m in masks): return False
        if not all(apart(masks[a], masks[b]) for a, b in ((0, 1), (0, 2), (1, 2))): return False
    return True


@pytest.fixture(scope='module')
def small_set():
    return make_atari_eval_set(n=6, seed=5, envs=2)


def test_eval_set_rule(small_set):
    labels = small_set['labels']
    assert small_set['obs'].shape == labels.shape == (6, 4, 84, 84)
    assert small_set['obs'].dtype == labels.dtype == np.uint8
    assert all(follows_rule(stack) for stack in labels)
    assert clear_stacks(labels).all()


def test_clear_stacks_matches_reference(small_set):
    stacks = small_set['labels'].copy()
    paddle = np.argwhere(stacks[0, 2] == ATARI_LABELS['agent_paddle'])[0]
    stacks[0, 2, paddle[0] - 1, paddle[1] - 1] = ATARI_LABELS['ball']     # ball touches paddle
    stacks[1, 0][stacks[1, 0] == ATARI_LABELS['opponent_paddle']] = 0     # opponent gone
    assert list(clear_stacks(stacks)) == [follows_rule(s) for s in stacks]
    assert list(clear_stacks(stacks)[:2]) == [False, False]


def test_eval_set_deterministic(small_set):
    again = make_atari_eval_set(n=6, seed=5, envs=2)
    for key in ('obs', 'labels'): np.testing.assert_array_equal(again[key], small_set[key])
    other = make_atari_eval_set(n=6, seed=6, envs=2)
    assert not np.array_equal(other['obs'], small_set['obs'])


def test_eval_set_round_trip(tmp_path):
    out = save_eval_set(EvalSetConfig(game=ATARI_PONG, n=2, out=str(tmp_path/'es')))
    es = load_eval_set(ATARI_PONG, out)
    made = make_atari_eval_set(n=2)
    np.testing.assert_array_equal(es['obs'], made['obs'])
    np.testing.assert_array_equal(es['labels'], made['labels'])
    assert es['objects'] == ATARI_LABELS
    assert es['config']['frame_skip'] == AtariConfig().frame_skip


def test_eval_set_of_another_game(tmp_path):
    out = save_eval_set(EvalSetConfig(game=ATARI_PONG, n=2, out=str(tmp_path/'es')))
    with pytest.raises(ArtifactError, match="an evaluation set of 'atari-pong', not 'pong'"):
        load_eval_set('pong', out)
    with pytest.raises(ArtifactError, match="an evaluation set of 'pong', not 'atari-pong'"):
        load_eval_set(ATARI_PONG, eval_dir('pong'))
    with pytest.raises(ValueError, match='n must be >= 1, got 0'):
        save_eval_set(EvalSetConfig(game=ATARI_PONG, n=0, out=str(tmp_path/'none')))


def test_committed_eval_set():
    es = load_eval_set(ATARI_PONG)
    assert es['obs'].shape == (150, 4, 84, 84)
    assert clear_stacks(es['labels']).all()
