"""Agents: determinism, exact resume after kill -9, CLI errors, bad checkpoints (tiny configs, seconds each)."""
import signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
import torch
from atoms.policies import load_checkpoint
from atoms.training import TrainConfig, train
from atoms.core import ArtifactError, load_weights, read_manifest

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


RESUMABLE = ['train', '--total_steps', '3000', '--num_envs', '4', '--n_steps', '5', '--checkpoints', '4',
             '--eval_points', '4', '--eval_envs', '4', '--no-progress', '--save_every_s', '0']   # 150 updates


def reference_and_signalled(tmp_path, sig) -> tuple[Path, Path, subprocess.Popen]:
    "An undisturbed tiny run, and the same run sent `sig` once it has saved update >= 30 (not waited for)."
    ref = cli(*RESUMABLE, '--run_dir', str(tmp_path/'ref')); assert ref.wait(300) == 0, ref.stderr.read()
    run = tmp_path/'signalled'
    p = cli(*RESUMABLE, '--run_dir', str(run))
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120 and p.poll() is None:
        try:
            if load_weights(run/'state.safetensors')[1]['update'] >= 30: break
        except ArtifactError: pass                               # not written yet
        time.sleep(0.02)
    p.send_signal(sig)
    return tmp_path/'ref', run, p


def test_kill_and_resume_gives_same_final_weights(tmp_path):
    ref, run, p = reference_and_signalled(tmp_path, signal.SIGKILL)
    p.wait()
    in_progress = read_manifest(run)['commands']['train']['in_progress']       # recorded before any write
    assert in_progress, 'the run finished before it was killed: make it longer'
    st = load_weights(run/'state.safetensors')[1]
    assert 0 < st['update'] < 150
    q = cli(*RESUMABLE, '--run_dir', str(run)); assert q.wait(300) == 0, q.stderr.read()
    wa, wb = final_weights(ref), final_weights(run)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    import pandas as pd
    la, lb = pd.read_parquet(ref/'log.parquet'), pd.read_parquet(run/'log.parquet')
    assert la['global_step'].tolist() == lb['global_step'].tolist()
    assert np.allclose(la['charts/points_won_rate'], lb['charts/points_won_rate'])


def test_interrupt_lists_the_files_and_resumes_exactly(tmp_path):
    "SIGTERM: one line, exit 130, the checkpoints on disk listed in the manifest; the rerun ends as an undisturbed run."
    ref, run, p = reference_and_signalled(tmp_path, signal.SIGTERM)
    assert p.wait(60) == 130
    err = p.stderr.read()
    assert err.strip().splitlines()[-1].startswith('atoms: interrupted'), err
    m = read_manifest(run)
    assert m['complete'] is False and not m['commands']['train']['in_progress']
    on_disk = {f'checkpoints/{c.name}' for c in (run/'checkpoints').glob('*.safetensors')}
    assert on_disk and on_disk <= set(m['files']), 'a checkpoint on disk is not listed'
    saved = load_weights(run/'state.safetensors')[1]['update']
    assert 0 < saved < 150     # the recorded step: that state's, or the one before if the stop fell inside its save
    assert m['final_step'] in (saved * 4 * 5, (saved - 1) * 4 * 5)
    q = cli(*RESUMABLE, '--run_dir', str(run)); assert q.wait(300) == 0, q.stderr.read()
    wa, wb = final_weights(ref), final_weights(run)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


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


# ---------------------------------------------------------------- hardening (issue 12)
import hashlib, json, shlex
import tyro
from atoms.cli import main
from atoms.policies import RUN_ONLY
from atoms.training import resolve


def run_cli(capsys, *argv) -> tuple[int, str]:
    "Exit status and stderr of `atoms *argv`, run in this process."
    try: main(list(argv))
    except SystemExit as e: return e.code, capsys.readouterr().err
    return 0, capsys.readouterr().err


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
    "A finished tiny A2C run (do not modify it: copy it)."
    return train(TrainConfig(run_dir=str(tmp_path_factory.mktemp('run')/'r'), **TINY))


def copy_run(run, to):
    import shutil
    return Path(shutil.copytree(run, to))


def test_checkpoint_metadata_is_checked(tiny_run, tmp_path):
    "Item 3: a checkpoint whose metadata disagrees with the run's config or its file name is refused."
    config = json.loads((tiny_run/'config.json').read_text())
    ckpts = sorted((tiny_run/'checkpoints').glob('*.safetensors'))
    for c in ckpts: load_checkpoint(c, expect=config)
    last = ckpts[-1]
    for field, other in [('game', 'pong-2balls'), ('algo', 'ppo'), ('net', 'nature'), ('seed', 7)]:
        with pytest.raises(ArtifactError, match=f'{last.name}: checkpoint is not of this run: {field}'):
            load_checkpoint(last, expect={**config, field: other})
    for name in ('step_000000000.safetensors', 'step_final.safetensors'):
        (tmp_path/name).write_bytes(last.read_bytes())
        with pytest.raises(ArtifactError, match=f'{name}: file name disagrees'):
            load_checkpoint(tmp_path/name)


def final_checkpoint_sha(run_dir) -> str:
    code = ('import sys; from atoms.training import TrainConfig, train; '
            f'train(TrainConfig(run_dir=sys.argv[1], **{TINY!r}))')
    subprocess.run([sys.executable, '-c', code, str(run_dir)], check=True, timeout=300)
    last = sorted((Path(run_dir)/'checkpoints').glob('*.safetensors'))[-1]
    return last.name + ' ' + hashlib.sha256(last.read_bytes()).hexdigest()


def test_same_config_two_folders_same_checkpoint_bytes(tmp_path):
    "Item 7: same seed and config, two processes, two folders → byte-identical checkpoints."
    assert final_checkpoint_sha(tmp_path/'a') == final_checkpoint_sha(tmp_path/'elsewhere'/'b')
    meta = load_weights(sorted((tmp_path/'a'/'checkpoints').glob('*'))[-1])[1]
    assert not set(RUN_ONLY) & set(meta['config'])


@pytest.mark.parametrize('field', ['vf_coef', 'ent_coef', 'max_grad_norm', 'lr', 'gamma', 'gae_lambda',
                                   'optim_eps', 'schedule_power', 'clip_coef', 'time_limit_s'])
@pytest.mark.parametrize('value', ['inf', 'nan', '-inf'])
def test_non_finite_floats_are_one_line_naming_the_field(capsys, tmp_path, field, value):
    "Item 8: inf / nan in any float field → exit 2, one line naming the field and its range."
    status, err = run_cli(capsys, 'train', f'--{field}', value, '--run_dir', str(tmp_path/'x'))
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert f'TrainConfig.{field}: must be a number in ' in err and value in err, err
    assert not (tmp_path/'x').exists()


def test_corrupt_config_json_is_named(capsys, tiny_run, tmp_path):
    "Item 9: a corrupt config.json → exit 2, one line naming the file, no traceback."
    run = copy_run(tiny_run, tmp_path/'r')
    (run/'config.json').write_text('{"game": "pong", "algo": ')
    status, err = run_cli(capsys, 'train', '--run_dir', str(run), *tiny_flags())
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f'atoms: error: {run/"config.json"}: ') and 'Traceback' not in err, err


def test_artifact_error_is_one_line(capsys, tiny_run, tmp_path):
    "Item 9 and manifest check: a corrupted file of a finished run → exit 2, one line naming it."
    run = copy_run(tiny_run, tmp_path/'r')
    data = bytearray((run/'log.parquet').read_bytes())
    data[len(data) // 2] ^= 0xFF
    (run/'log.parquet').write_bytes(bytes(data))
    before = {p: p.read_bytes() for p in run.rglob('*') if p.is_file()}
    status, err = run_cli(capsys, 'train', '--run_dir', str(run), *tiny_flags())
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert f'{run/"log.parquet"}: sha256 does not match' in err, err
    assert before == {p: p.read_bytes() for p in run.rglob('*') if p.is_file()}


def tiny_flags() -> list[str]:
    return [w for k, v in TINY.items() for w in (
        [f'--{k}' if v else f'--no-{k}'] if isinstance(v, bool) else [f'--{k}', str(v)])]


def test_recorded_command_parses_to_the_same_config(tmp_path):
    "Item 11: the command in the manifest, parsed as the shell and tyro would, gives the run's config."
    cfg = TrainConfig(run_dir=str(tmp_path/'a run'), stop_at_skill=0.99, **TINY)
    run = train(cfg)
    words = shlex.split(read_manifest(run)['command'])
    assert words[:2] == ['atoms', 'train']
    assert resolve(tyro.cli(TrainConfig, args=words[2:])) == resolve(cfg)


def test_finished_run_missing_its_last_checkpoint_fails(capsys, tiny_run, tmp_path):
    "Item 12: rerunning a finished run whose last checkpoint was deleted → non-zero, names it."
    run = copy_run(tiny_run, tmp_path/'r')
    last = sorted((run/'checkpoints').glob('*.safetensors'))[-1]
    last.unlink()
    status, err = run_cli(capsys, 'train', '--run_dir', str(run), *tiny_flags())
    assert status == 2 and str(last) in err and 'missing' in err, err
    assert not last.exists()


def test_interrupted_run_missing_a_logged_checkpoint_fails(tmp_path):
    "Item 12 (mid-run): a checkpoint the resume state logged but that is gone is named."
    cfg = TrainConfig(run_dir=str(tmp_path/'r'), time_limit_s=1e-9, **TINY)
    run = train(cfg)                                # stops after one update: state saved, not complete
    first = sorted((run/'checkpoints').glob('*.safetensors'))[0]
    first.unlink()
    with pytest.raises(ArtifactError, match=f'{first.name}: checkpoint logged by the run but missing'):
        train(TrainConfig(run_dir=str(tmp_path/'r'), **TINY))
