"""Atari Pong PPO with the package's trainer: a tiny run, exact resume, finished reruns, bad combinations (seconds)."""
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import torch
import tyro
from atoms.atari import AtariPongVectorEnv
from atoms.core import load_weights, read_manifest
from atoms.policies import load_checkpoint
from atoms.training import EpisodeLog, TrainConfig, episodes_table, resolve, train

TINY = dict(game='atari-pong', algo='ppo', total_steps=128, num_envs=2, n_steps=16, checkpoints=3, eval_points=2,
            eval_envs=2, progress=False, threads=1, save_every_s=0)


def final_weights(run):
    return load_weights(sorted((Path(run)/'checkpoints').glob('*.safetensors'))[-1])[0]


def test_tiny_run_writes_checkpoints_log_episodes_and_manifest(tmp_path):
    run = train(TrainConfig(run_dir=str(tmp_path/'run'), **TINY))
    ckpts = sorted((run/'checkpoints').glob('*.safetensors'))
    assert [p.name for p in ckpts] == [f'step_{s:09d}.safetensors' for s in (0, 32, 128)]
    log = pd.read_parquet(run/'log.parquet')
    assert log['checkpoint'].sum() == 3 and log['charts/eval_points'].min() >= 2
    assert list(pd.read_parquet(run/'episodes.parquet').columns) == [
        'global_step', 'env', 'charts/episodic_return', 'charts/episodic_length']
    m = read_manifest(run)
    assert m['complete'] and 'episodes.parquet' in m['files'] and m['config']['frame_skip'] == 4
    net, meta = load_checkpoint(ckpts[-1])                       # the package's loader, the net from metadata
    assert net.cfg.n_actions == 6 and meta['config']['game'] == 'atari-pong'
    logits, value = net(torch.zeros(3, 4, 84, 84, dtype=torch.uint8))
    assert logits.shape == (3, 6) and value.shape == (3,)


def test_rerun_of_a_finished_run_is_a_no_op(tmp_path):
    cfg = TrainConfig(run_dir=str(tmp_path/'run'), **TINY)
    run = train(cfg)
    before = {p: p.stat().st_mtime_ns for p in run.rglob('*') if p.is_file()}
    assert train(cfg) == run
    assert {p: p.stat().st_mtime_ns for p in run.rglob('*') if p.is_file()} == before


def test_stopped_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    ref = train(TrainConfig(run_dir=str(tmp_path/'ref'), **TINY))
    stopped = train(TrainConfig(run_dir=str(tmp_path/'cut'), time_limit_s=1e-9, **TINY))   # stops after 1 update
    assert load_weights(stopped/'state.safetensors')[1]['update'] == 1 and not read_manifest(stopped)['complete']
    resumed = train(TrainConfig(run_dir=str(tmp_path/'cut'), **TINY))
    wa, wb = final_weights(ref), final_weights(resumed)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    la, lb = pd.read_parquet(ref/'log.parquet'), pd.read_parquet(resumed/'log.parquet')
    assert la['global_step'].tolist() == lb['global_step'].tolist()
    assert np.allclose(la['charts/points_won_rate'], lb['charts/points_won_rate'], equal_nan=True)


def test_episode_log_records_and_resumes():
    log = EpisodeLog(AtariPongVectorEnv(2, masks=False, max_frames=40))      # episodes of 10 agent steps
    log.reset(seed=3)
    for _ in range(15): log.step(np.full(2, 2))
    twin = EpisodeLog(AtariPongVectorEnv(2, masks=False, max_frames=40))
    twin.load_state_dict(log.state_dict())
    for t in range(25):
        a = np.array([t % 6, 5 - t % 6])
        assert np.array_equal(log.step(a)[0], twin.step(a)[0])
    table = episodes_table(twin)
    assert table['global_step'].tolist() == [20, 20, 40, 40, 60, 60, 80, 80]
    assert table['charts/episodic_length'].eq(10).all() and table.equals(episodes_table(log))


def test_atari_defaults_are_cleanrls():
    cfg = resolve(tyro.cli(TrainConfig, args=['--game', 'atari-pong', '--algo', 'ppo', '--net', 'nature', '--seed', '1']))
    got = {k: getattr(cfg, k) for k in ('total_steps', 'num_envs', 'n_steps', 'lr', 'optimizer', 'optim_eps', 'update_epochs',
                                        'num_minibatches', 'clip_coef', 'ent_coef', 'vf_coef', 'gae_lambda', 'gamma',
                                        'max_grad_norm', 'norm_adv', 'frame_skip', 'frames', 'precision')}
    assert got == dict(total_steps=5_000_000, num_envs=8, n_steps=128, lr=2.5e-4, optimizer='adam', optim_eps=1e-5,
                       update_epochs=4, num_minibatches=4, clip_coef=0.1, ent_coef=0.01, vf_coef=0.5, gae_lambda=0.95,
                       gamma=0.99, max_grad_norm=0.5, norm_adv=True, frame_skip=4, frames=4, precision='bf16')
    assert (cfg.eval_points, cfg.eval_envs, cfg.checkpoints) == (20, 8, 100)
    ours = resolve(TrainConfig(game='pong'))
    assert (ours.frame_skip, ours.eval_points, ours.eval_envs) == (2, 200, 64)      # our games unchanged


@pytest.mark.parametrize('kw,field,words', [(dict(algo='dqn'), 'algo', "trains with 'ppo' only"),
                                            (dict(algo='a2c'), 'algo', "trains with 'ppo' only"),
                                            (dict(algo='ppo', frame_skip=2), 'frame_skip', 'plays 4 emulator frames')])
def test_bad_combinations_name_the_field(kw, field, words):
    with pytest.raises(ValueError, match=f'TrainConfig.{field}: atari-pong {words}'):
        resolve(TrainConfig(game='atari-pong', **kw))

