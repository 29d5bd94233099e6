"""Time to skill: `stop_at_skill` stops a run only once `skill_reached` holds (scripted evals)."""
from pathlib import Path
import pytest
import atoms.training
from atoms.core import load_table, read_manifest
from atoms.policies import time_to_skill
from atoms.training import TrainConfig, train

TINY = dict(total_steps=2000, num_envs=4, n_steps=5, checkpoints=8, eval_points=4, eval_envs=4,
            progress=False, threads=1)


def scripted(monkeypatch, skills, points=200):
    "Make the trainer's k-th evaluation return skill `skills[k]` over `points` (or `points[k]`)."
    def evaluate(policy, game, *args, seed=0, **kw):
        k = seed % 10_000                  # the trainer seeds evaluation k with 10_000 * seed + k
        n = points[k] if isinstance(points, list) else points
        won = round(skills[k] * n)
        return {'points_won_rate': skills[k], 'won': won, 'lost': n - won}
    monkeypatch.setattr(atoms.training, 'evaluate', evaluate)


def run(tmp_path, name, **kw) -> tuple[Path, object]:
    out = train(TrainConfig(run_dir=str(tmp_path/name), **{**TINY, **kw}))
    return out, load_table(out/'log.parquet')


def test_spike_that_falls_back_does_not_stop(monkeypatch, tmp_path):
    scripted(monkeypatch, [.1, .95, .5, .6, .5, .6, .5, .95])
    out, log = run(tmp_path, 'spike', stop_at_skill=0.9)
    assert log['checkpoint'].sum() == 8 and read_manifest(out)['complete']
    assert time_to_skill(log)['steps'] != time_to_skill(log)['steps']     # NaN: never reached


def test_stops_at_the_second_of_two_in_a_row(monkeypatch, tmp_path):
    skills = [.1, .95, .5, .92, .93, .99, .99, .99]
    scripted(monkeypatch, skills)
    out, log = run(tmp_path, 'stopped', stop_at_skill=0.9)
    ev = log[log['checkpoint']]
    assert list(ev['charts/points_won_rate']) == skills[:5]      # stopped at evaluation 4
    assert not read_manifest(out)['complete']
    assert time_to_skill(log)['steps'] == ev['global_step'].iloc[3]   # the first of the two
    assert len(list((out/'checkpoints').glob('*.safetensors'))) == 5
    full, _ = run(tmp_path, 'full')                              # same files, fewer steps

    def names(d):
        return {p.relative_to(d).as_posix() for p in d.rglob('*')
                if p.parent.name != 'checkpoints'}
    assert names(out) == names(full)


def test_one_long_evaluation_stops_alone(monkeypatch, tmp_path):
    scripted(monkeypatch, [.1, .5, .93, .5, .5, .5, .5, .5], points=[200, 200, 400] + [200] * 5)
    out, log = run(tmp_path, 'long', stop_at_skill=0.9)
    assert log['checkpoint'].sum() == 3 and not read_manifest(out)['complete']
    assert time_to_skill(log)['steps'] == log['global_step'].iloc[-1]


@pytest.mark.parametrize('points, reached', [(200, False), (400, True)])
def test_last_checkpoint_alone(monkeypatch, tmp_path, points, reached):
    scripted(monkeypatch, [.1] * 7 + [.95], points=[200] * 7 + [points])
    out, log = run(tmp_path, f'last{points}', stop_at_skill=0.9)
    assert log['checkpoint'].sum() == 8 and read_manifest(out)['complete']
    steps = time_to_skill(log)['steps']
    assert (steps == log['global_step'].iloc[-1]) if reached else steps != steps
