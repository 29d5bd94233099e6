"""Agents: determinism, exact resume after kill -9, CLI errors, bad checkpoints (tiny configs, seconds each)."""
import os, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
import torch
from atoms.policies import load_checkpoint
from atoms.training import TrainConfig, train
from atoms.core import ArtifactError, load_weights

TINY = dict(total_steps=2000, num_envs=4, n_steps=5, checkpoints=4, eval_points=4, eval_envs=4, progress=False, threads=1)


def final_weights(run):
    ckpts = sorted((Path(run)/'checkpoints').glob('*.safetensors'))
    return load_weights(ckpts[-1])[0]


def cli(*args, **kw):
    return subprocess.Popen([sys.executable, '-c', 'from atoms.cli import main; main()', *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.parametrize('algo', ['a2c', 'dqn'])
def test_same_seed_same_weights(tmp_path, algo):
    extra = dict(learning_starts=100, buffer_mb=4, n_steps=1, batch_size=8, total_steps=400) if algo == 'dqn' else {}
    a = train(TrainConfig(algo=algo, run_dir=str(tmp_path/'a'), **{**TINY, **extra}))
    b = train(TrainConfig(algo=algo, run_dir=str(tmp_path/'b'), **{**TINY, **extra}))
    wa, wb = final_weights(a), final_weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c = train(TrainConfig(algo=algo, seed=2, run_dir=str(tmp_path/'c'), **{**TINY, **extra}))
    assert not all(torch.equal(wa[k], final_weights(c)[k]) for k in wa)


def test_kill_and_resume_gives_same_final_weights(tmp_path):
    args = ['train', '--total_steps', '3000', '--num_envs', '4', '--n_steps', '5', '--checkpoints', '4', '--eval_points', '4',
            '--eval_envs', '4', '--no-progress', '--save_every_s', '0']
    ref = cli(*args, '--run_dir', str(tmp_path/'ref')); assert ref.wait(300) == 0, ref.stderr.read()
    run = tmp_path/'killed'
    p = cli(*args, '--run_dir', str(run))
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120 and p.poll() is None:      # kill it mid-run: once it has saved update >= 30
        try:
            if load_weights(run/'state.safetensors')[1]['update'] >= 30: break
        except ArtifactError: pass                               # not written yet
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL); p.wait()
    assert not (run/'manifest.json').exists(), 'the run finished before it was killed: make it longer'
    st = load_weights(run/'state.safetensors')[1]
    assert 0 < st['update'] < 150
    q = cli(*args, '--run_dir', str(run)); assert q.wait(300) == 0, q.stderr.read()
    wa, wb = final_weights(tmp_path/'ref'), final_weights(run)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    import pandas as pd
    la, lb = pd.read_parquet(tmp_path/'ref'/'log.parquet'), pd.read_parquet(run/'log.parquet')
    assert la['global_step'].tolist() == lb['global_step'].tolist()
    assert np.allclose(la['charts/points_won_rate'], lb['charts/points_won_rate'])


@pytest.mark.parametrize('flag,value,field', [('--total_steps', '-5', 'total_steps'), ('--num_envs', '0', 'num_envs'),
                                              ('--checkpoints', '500', 'checkpoints'), ('--lr', '3', 'lr')])
def test_bad_config_is_one_line_naming_the_field(tmp_path, flag, value, field):
    p = cli('train', flag, value, '--run_dir', str(tmp_path/'x'), '--total_steps' if flag != '--total_steps' else '--seed',
            '2000' if flag != '--total_steps' else '1')
    assert p.wait(60) == 2
    err = p.stderr.read().strip().splitlines()
    assert len(err) == 1 and f'TrainConfig.{field}' in err[0], err


def test_unknown_game_is_rejected(tmp_path):
    p = cli('train', '--game', 'tennis', '--run_dir', str(tmp_path/'x'))
    assert p.wait(60) != 0 and 'tennis' in p.stderr.read()


def test_other_config_in_same_folder_is_refused(tmp_path):
    train(TrainConfig(run_dir=str(tmp_path/'r'), **TINY))
    with pytest.raises(ValueError, match='different config'):
        train(TrainConfig(run_dir=str(tmp_path/'r'), **{**TINY, 'seed': 9}))


def test_bad_checkpoints_name_the_file(tmp_path):
    run = train(TrainConfig(run_dir=str(tmp_path/'r'), **TINY))
    good = sorted((run/'checkpoints').glob('*.safetensors'))[-1]
    (tmp_path/'trunc.safetensors').write_bytes(good.read_bytes()[:500])
    with pytest.raises(ArtifactError, match='trunc.safetensors'): load_checkpoint(tmp_path/'trunc.safetensors')
    (tmp_path/'junk.safetensors').write_bytes(b'\x00' * 64)
    with pytest.raises(ArtifactError, match='junk.safetensors'): load_checkpoint(tmp_path/'junk.safetensors')
    from atoms.nets import make_net, NATURE
    with pytest.raises(ArtifactError, match='does not fit'): load_checkpoint(good, make_net('actor_critic', NATURE))
    with pytest.raises(ArtifactError, match='file not found'): load_checkpoint(tmp_path/'none.safetensors')


def test_train_help_names_where_defaults_come_from(capsys):
    from atoms.cli import main
    with pytest.raises(SystemExit) as e: main(['train', '--help'])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert 'default: per algorithm and game' in out and 'rmsprop' in out and 'pong-2balls, a2c' in out
    assert '--norm-adv' in out or '--norm_adv' in out
