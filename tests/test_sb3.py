"""Stable-Baselines3 on our Pong (nbs/17_sb3): the `VecEnv` adapter steps, resets and trains under SB3's
own `learn`; `model_atoms` explains a random-initialised SB3 `CnnPolicy`; a bad layer name lists SB3's
layers; the compact weights load back; `tools/train_sb3.py` writes its package and never overwrites one."""
import numpy as np
import pytest
import torch
from stable_baselines3 import A2C
from atoms.any_agent import model_atoms
from atoms.attention import Metric
from atoms.relevance import synthetic_frames
from atoms.sb3 import SB3_FC, PolicyLogits, PongSB3Env, load_policy, make_policy, save_policy


pytestmark = pytest.mark.usefixtures('one_thread')   # see conftest.py


def test_vecenv_resets_and_steps():
    env = PongSB3Env(3, max_steps=4)
    env.seed(5)
    first = env.reset()
    assert first.shape == (3, 4, 84, 84) and first.dtype == np.uint8
    for t in range(4):
        obs, rewards, dones, infos = env.step(np.array([0, 1, 2]))
        assert obs.shape == (3, 4, 84, 84) and rewards.shape == (3,) and len(infos) == 3
        assert obs is not env.env._obs                      # a copy: SB3 keeps the previous one
    assert dones.all()                                      # truncated after max_steps
    assert all(i['TimeLimit.truncated'] and i['episode']['l'] == 4 for i in infos)
    assert all(i['terminal_observation'].shape == (4, 84, 84) for i in infos)
    again = PongSB3Env(3, max_steps=4)
    again.seed(5)
    np.testing.assert_array_equal(again.reset(), first)


def test_sb3_learn_runs_on_our_pong():
    model = A2C('CnnPolicy', PongSB3Env(2), n_steps=4, seed=0, device='cpu')
    model.learn(16)
    assert model.num_timesteps == 16


def test_model_atoms_on_random_policy():
    torch.manual_seed(0)
    model = PolicyLogits(make_policy())
    obs, labels, objects = synthetic_frames(2)
    objects = {'background': 0, **objects}
    table = model_atoms(model, SB3_FC, obs, labels, objects)
    for metric in (Metric.HIERARCHICAL_NORM, Metric.SHARE_POS):
        shares = table[(table.metric == metric) & table.object.isin(objects)]
        assert sorted(shares.object) == sorted(objects)
        assert shares.value.sum() == pytest.approx(1.0)


def test_bad_layer_lists_sb3_layers():
    model = PolicyLogits(make_policy())
    obs, labels, objects = synthetic_frames(1)
    with pytest.raises(ValueError, match=r"no layer 'features_extractor\.fc'; its layers: policy, "
                                         r'policy\.features_extractor, policy\.features_extractor\.cnn'):
        model_atoms(model, 'features_extractor.fc', obs, labels, objects)


def test_compact_weights_round_trip(tmp_path):
    torch.manual_seed(1)
    policy = make_policy()
    save_policy(policy, tmp_path/'policy.safetensors', {'steps': 3})
    loaded, meta = load_policy(tmp_path/'policy.safetensors')
    assert meta == {'steps': 3}
    assert (tmp_path/'policy.safetensors').stat().st_size < 3.5e6        # float16, extractor once
    obs, _, _ = synthetic_frames(2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(obs), PolicyLogits(policy)(obs), atol=0.05, rtol=0)


def test_train_sb3_tool_writes_a_package_and_never_overwrites(tmp_path, capsys):
    import importlib.util, json
    from pathlib import Path
    spec = importlib.util.spec_from_file_location(
        'train_sb3', Path(__file__).resolve().parents[1]/'tools'/'train_sb3.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    args = ['--name', 'tiny', '--out', str(tmp_path), '--num-envs', '2', '--max-steps', '40',
            '--eval-every', '20', '--eval-points', '2', '--final-points', '2']
    tool.main(args)
    folder = tmp_path/'tiny'
    assert {p.name for p in folder.iterdir()} == {'policy.safetensors', 'log.parquet',
                                                  'atoms.parquet', 'manifest.json'}
    manifest = json.loads((folder/'manifest.json').read_text())
    assert manifest['steps'] >= 40 and manifest['won'] + manifest['lost'] >= 2
    assert manifest['command'].startswith('python tools/train_sb3.py --name tiny')
    policy, meta = load_policy(folder/'policy.safetensors')
    assert policy(torch.zeros(1, 4, 84, 84)).shape == (1, 3)     # our Pong: 3 actions
    with pytest.raises(SystemExit, match='exists: it is never overwritten'):
        tool.main(args)
