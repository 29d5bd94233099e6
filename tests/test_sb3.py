"""Stable-Baselines3 on our Pong (nbs/17_sb3): the `VecEnv` adapter steps, resets and trains under SB3's
own `learn`; `model_atoms` explains a random-initialised SB3 `CnnPolicy`; a bad layer name lists SB3's
layers; the compact weights load back."""
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
