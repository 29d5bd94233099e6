"Interventions: drawing objects differently keeps the physics; frame and play effects; the sweep, its CLI, study step and package."
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import softmax
from scipy.stats import entropy

from atoms.analysis import AnalyseConfig, PackageConfig, analyse, checkpoints_of, package_run
from atoms.cli import main
from atoms.core import load_artifact, read_manifest
from atoms.evalset import tracker_actions
from atoms.games import GAMES, PongVectorEnv
from atoms.intervene import KINDS, InterveneConfig, drawn_env, frame_effects, free_grey, intervene
from atoms.nets import SMALL, make_net
from atoms.relevance import synthetic_frames
from atoms.study import RunKey, StudyConfig, intervene_config, intervene_done

from helpers import folder_hashes, tiny_run_and_eval_sets


def tracked(game, drawn, steps=200, seed=4, n=4):
    "Newest frames, label images and final engine state of `n` games played by the tracker (it reads the engine)."
    env, rng = drawn_env(game, drawn, envs=n), np.random.default_rng(0)
    env.reset(seed=seed)
    frames, labels = [], []
    for _ in range(steps):
        obs, *_, info = env.step(tracker_actions(env, rng))
        frames.append(obs[:, -1].copy())
        labels.append(info['labels'].copy())
    state = {k: v for k, v in env.state_dict().items() if k not in ('obs', 'final_obs')}
    return np.stack(frames), np.stack(labels), state


@pytest.mark.parametrize('game', GAMES)
def test_hiding_or_recolouring_changes_the_pixels_only(game):
    normal, labels, state = tracked(game, {})
    cfg = PongVectorEnv(1, game).cfg
    free = free_grey(cfg.greys)
    for name, label in cfg.labels.items():
        if name == 'background': continue
        hidden, hidden_labels, hidden_state = tracked(game, {name: None})
        np.testing.assert_array_equal(hidden_labels, labels)       # the engine still has the object
        for k in state: np.testing.assert_array_equal(hidden_state[k], state[k], err_msg=f'{name} {k}')
        mine = labels == label                                      # where the object is on top
        assert ((hidden == normal) | mine).all()                    # elsewhere nothing changed
        assert (hidden[mine] == cfg.grey_background).mean() > 0.95  # (under it: another object, rarely)
        recoloured, _, _ = tracked(game, {name: free})
        np.testing.assert_array_equal(recoloured, np.where(mine, free, normal))


def test_hidden_then_shown_again_and_errors():
    env = drawn_env('pong', {'ball': None, 'agent_paddle': None})
    env.draw_as('ball', 236)
    obs, _ = env.reset(seed=0)
    assert (obs == 236).any() and not (obs == 160).any()
    with pytest.raises(ValueError, match="unknown object 'target'"): env.draw_as('target')
    with pytest.raises(ValueError, match='used by another object'): env.draw_as('ball', 110)


def reference_effects(net, obs, labels, objects, greys):
    "Frame by frame, with scipy: KL of the softmaxed decision outputs and greedy changes."
    rows = []
    with torch.no_grad():
        out = lambda x: net.decision(torch.as_tensor(x[None])).double().numpy()[0]
        for name, label in objects.items():
            for kind, paint in (('remove', greys[0]), ('recolour', free_grey(greys))):
                kl, change = [], []
                for x, lab in zip(obs, labels):
                    y = x.copy()
                    y[lab == label] = paint
                    p, q = softmax(out(x)), softmax(out(y))
                    kl.append(entropy(p, q))
                    change.append(p.argmax() != q.argmax())
                rows.append(dict(object=name, kind=kind, kl=np.mean(kl), action_change=np.mean(change)))
    return pd.DataFrame(rows)


@pytest.mark.parametrize('kind', ['actor_critic', 'q'])
def test_frame_effects_equal_a_frame_by_frame_reference(kind):
    torch.manual_seed(0)
    net = make_net(kind, SMALL).eval()
    obs, labels, objects = synthetic_frames(6, seed=1)
    greys = np.array([0, 150, 100, 255])
    got = frame_effects(net, obs.numpy(), labels, objects, greys)
    want = reference_effects(net, obs.numpy(), labels, objects, greys)
    pd.testing.assert_frame_equal(got, want, rtol=1e-5, atol=1e-9)


@pytest.fixture(scope='module')
def made(tmp_path_factory):
    return tiny_run_and_eval_sets(tmp_path_factory.mktemp('intervene'))


@pytest.fixture
def run(made, tmp_path):
    return Path(shutil.copytree(made[0], tmp_path/'runs'/'pong__a2c__small__1'))


def small(run, made, **kw):
    "A short sweep of `run` on the tiny evaluation set."
    return InterveneConfig(str(run), **{**dict(points=6, envs=4, eval_dir=str(made[1]['pong']), progress=False), **kw})


def test_sweep_rows_resume_and_refuse_other_settings(run, made, monkeypatch):
    import atoms.intervene as iv
    real, calls = iv.checkpoint_effects, []
    def killed_at_second(*args, **kw):
        calls.append(args[1])
        if len(calls) == 2: raise KeyboardInterrupt
        return real(*args, **kw)
    monkeypatch.setattr(iv, 'checkpoint_effects', killed_at_second)
    with pytest.raises(KeyboardInterrupt): intervene(small(run, made))
    assert len(pd.read_parquet(run/'intervene'/'intervene.parquet')) == 3 * len(KINDS)   # the first survived
    monkeypatch.setattr(iv, 'checkpoint_effects', real)
    table = pd.read_parquet(intervene(small(run, made)))
    steps = [s for s, _ in checkpoints_of(run)]
    assert sorted(table.step.unique()) == steps and len(table) == len(steps) * 3 * len(KINDS)
    assert table.loc[table.kind == 'remove', 'skill'].notna().all()
    assert ((table.won + table.lost) >= 6).loc[table.kind == 'remove'].all()
    m = read_manifest(run/'intervene')
    assert m['commands']['intervene']['in_progress'] is False and m['steps'] == steps
    assert load_artifact(run/'intervene', 'intervene.parquet').equals(table)
    frames = load_artifact(run/'intervene', 'frames.parquet')        # per frame, removal only
    assert len(frames) == len(steps) * 6 * 3 and sorted(frames.step.unique()) == steps
    removed = table[table.kind == 'remove'].set_index(['step', 'object']).kl
    np.testing.assert_allclose(frames.groupby(['step', 'object']).kl.mean(), removed.sort_index(), rtol=1e-5)
    shares = frames.groupby(['step', 'frame']).attention.sum()      # each frame's, less the background's
    assert ((shares > 0) & (shares <= 1 + 1e-6)).all()
    before = folder_hashes(run)
    with pytest.raises(Exception, match='other settings'): intervene(small(run, made, points=8))
    assert folder_hashes(run) == before


def test_a_sweep_without_frames_gains_them_without_replaying(run, made, monkeypatch):
    import atoms.intervene as iv
    from atoms.core import save_manifest
    table = pd.read_parquet(intervene(small(run, made)))
    frames = pd.read_parquet(run/'intervene'/'frames.parquet')
    (run/'intervene'/'frames.parquet').unlink()              # as a sweep made before frames.parquet
    m = read_manifest(run/'intervene')
    m['files'].pop('frames.parquet')
    m['commands']['intervene']['writes'] = ['intervene.parquet']
    save_manifest(run/'intervene', m)
    def no_play(*args, **kw): raise AssertionError('play redone')
    monkeypatch.setattr(iv, 'checkpoint_effects', no_play)
    intervene(small(run, made))
    pd.testing.assert_frame_equal(pd.read_parquet(run/'intervene'/'intervene.parquet'), table)
    pd.testing.assert_frame_equal(load_artifact(run/'intervene', 'frames.parquet'), frames)


def test_final_checkpoint_always_chosen(run, made):
    table = pd.read_parquet(intervene(small(run, made, checkpoints=1)))
    assert list(table.step.unique()) == [checkpoints_of(run)[-1][0]]


def error_of(*argv):
    try: main(list(argv))
    except SystemExit as e: return e.code
    return 0


@pytest.mark.parametrize('argv, message', [
    (['--points', '0'], 'InterveneConfig.points must be >= 1, got 0'),
    (['--play_kinds', 'remove', 'remove'], 'InterveneConfig.play_kinds'),
    (['--out', 'PARENT'], 'is the run folder or a folder above it'),
    (['--out', 'REPO'], 'holds files but no manifest'),
])
def test_cli_one_line_errors(run, capsys, argv, message):
    where = {'PARENT': str(run.parent), 'REPO': str(Path(__file__).parent)}   # tests/: files, no manifest
    argv = [where.get(a, a) for a in argv]
    assert error_of('intervene', str(run), '--no-progress', *argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_cli_missing_run(capsys, tmp_path):
    assert error_of('intervene', str(tmp_path/'nope')) == 2
    assert 'run folder not found' in capsys.readouterr().err


def test_package_copies_the_interventions_and_study_step_is_done(run, made, tmp_path):
    cfg = StudyConfig(runs_root=str(run.parent), eval_points=6, eval_envs=4, n_frames=4,
                      intervene_checkpoints=2)
    key = RunKey('pong', 'a2c', 'small', 1)
    ic = intervene_config(cfg, key)              # the committed evaluation set, 4 frames of it
    assert not intervene_done(ic)
    intervene(ic)
    assert intervene_done(ic) and not intervene_done(replace(ic, checkpoints=3))
    analyse(AnalyseConfig(str(run), methods=('lrp_two_pass',), eval_dir=str(made[1]['pong']), progress=False))
    dest = package_run(PackageConfig(str(run), checkpoints=0, out=str(tmp_path/'pkg')))
    table = load_artifact(dest/'intervene', 'intervene.parquet')
    assert len(table) == 2 * 3 * len(KINDS)
    assert len(load_artifact(dest/'intervene', 'frames.parquet')) == 2 * 4 * 3
