"""`model_atoms` (nbs/14_any_agent): equal to the library's fast path on our own network, running on two
foreign architectures (a Stable-Baselines3-like `CnnPolicy` and a CleanRL-style `Agent`), one-line errors;
the CleanRL `Agent` holding our trained Atari agent's weights gives the fast path's ATOMs."""
import numpy as np
import pytest
import torch
from torch import nn
import atoms
from atoms.analysis import checkpoints_of
from atoms.any_agent import cleanrl_state_dict, model_atoms
from atoms.atari import ATARI_LABELS, ATARI_PONG
from atoms.attention import Metric, atoms_table
from atoms.core import artifacts_dir, read_manifest
from atoms.evalset import load_eval_set
from atoms.nets import SMALL, NetConfig, make_net
from atoms.policies import load_checkpoint
from atoms.relevance import checkpoint_atoms, explain, method_label, synthetic_frames

KEYS = ['step', 'object', 'metric', 'method']
CHECKPOINT = artifacts_dir()/'runs'/'pong__a2c__1'/'checkpoints'/'step_001500000.safetensors'
ATARI_RUN = artifacts_dir()/'runs'/'atari-pong__ppo__1'   # our Atari PPO agent (its step: the manifest's)


pytestmark = pytest.mark.usefixtures('one_thread')   # see conftest.py


def fast_table(net, obs, labels, objects, mode='two_pass', **kw):
    "The library's own path: `explain` on the fast z⁺ path, then `atoms_table`."
    e = explain(net, obs, mode=mode, **kw)
    return atoms_table(e.neuron_relevance, e.pixel_relevance, labels, objects, 0, method_label('lrp', mode))


def assert_same_table(ours, theirs, atol=1e-5):
    assert ours[KEYS].values.tolist() == theirs[KEYS].values.tolist()
    assert ours.value.isna().tolist() == theirs.value.isna().tolist()
    np.testing.assert_allclose(ours.value.fillna(0), theirs.value.fillna(0), atol=atol, rtol=1e-4)


def test_top_level_export():
    assert atoms.model_atoms is model_atoms
    from atoms import model_atoms as imported
    assert imported is model_atoms


@pytest.mark.parametrize('mode', ['two_pass', 'action'])
def test_equals_fast_path_random_init(mode):
    torch.manual_seed(3)
    net = make_net('actor_critic', SMALL)
    obs, labels, objects = synthetic_frames(6, seed=1)
    ours = model_atoms(net, 'body.2', obs, labels, objects, forward=net.decision, mode=mode, batch=64)
    assert_same_table(ours, fast_table(net, obs, labels, objects, mode))


def test_equals_fast_path_on_a_committed_checkpoint():
    net, meta = load_checkpoint(CHECKPOINT)
    es = load_eval_set(meta['config']['game'])
    obs, labels = torch.as_tensor(es['obs'][:12]), es['labels'][:12]
    ours = model_atoms(net, 'body.2', obs, labels, es['objects'], forward=net.decision, step=7)
    theirs = fast_table(net, obs, labels, es['objects']).assign(step=7)
    assert_same_table(ours, theirs)
    h = ours[ours.metric == Metric.HIERARCHICAL].value
    assert h.notna().all() and (h > 0).any()


# --- Two architectures no one here wrote, in their own module layout (random weights) ---------------------

class NatureCNN(nn.Module):
    "Stable-Baselines3's `NatureCNN` features extractor: `cnn` then `linear` (Linear + ReLU)."
    def __init__(self, n_channels: int = 4, features_dim: int = 512):
        super().__init__()
        self.cnn = nn.Sequential(nn.Conv2d(n_channels, 32, 8, 4), nn.ReLU(),
                                 nn.Conv2d(32, 64, 4, 2), nn.ReLU(),
                                 nn.Conv2d(64, 64, 3, 1), nn.ReLU(), nn.Flatten())
        self.linear = nn.Sequential(nn.Linear(64 * 7 * 7, features_dim), nn.ReLU())

    def forward(self, obs): return self.linear(self.cnn(obs))


class MlpExtractor(nn.Module):
    "SB3's `MlpExtractor` with `net_arch=[]` (the `CnnPolicy` default): empty policy and value nets."
    def __init__(self):
        super().__init__()
        self.policy_net, self.value_net = nn.Sequential(), nn.Sequential()

    def forward_actor(self, features): return self.policy_net(features)


class CnnPolicy(nn.Module):
    "The module layout of SB3's `ActorCriticCnnPolicy`; forward returns (actions, values, log-probabilities)."
    def __init__(self, n_actions: int = 3):
        super().__init__()
        self.features_extractor = NatureCNN()
        self.mlp_extractor = MlpExtractor()
        self.action_net = nn.Linear(512, n_actions)
        self.value_net = nn.Linear(512, 1)

    def extract_features(self, obs): return self.features_extractor(obs.float() / 255.0)

    def forward(self, obs):
        features = self.extract_features(obs)
        logits = self.action_net(self.mlp_extractor.forward_actor(features))
        actions = logits.argmax(1)
        return actions, self.value_net(features), logits.log_softmax(1).gather(1, actions[:, None])


class PolicyLogits(nn.Module):
    "The wrapper a user of SB3 writes: forward returns the action logits."
    def __init__(self, policy: CnnPolicy):
        super().__init__()
        self.policy = policy

    def forward(self, obs):
        features = self.policy.extract_features(obs)
        return self.policy.action_net(self.policy.mlp_extractor.forward_actor(features))


class Agent(nn.Module):
    "CleanRL's PPO Atari `Agent` (`network`, `actor`, `critic`), forward = the actor's logits."
    def __init__(self, n_actions: int = 6):
        super().__init__()
        self.network = nn.Sequential(
            nn.Conv2d(4, 32, 8, stride=4), nn.ReLU(), nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(), nn.Flatten(), nn.Linear(64 * 7 * 7, 512), nn.ReLU())
        self.actor = nn.Linear(512, n_actions)
        self.critic = nn.Linear(512, 1)

    def forward(self, x): return self.actor(self.network(x / 255.0))


def frames_with_background(n=2):
    obs, labels, objects = synthetic_frames(n, seed=2)
    return obs, labels, {'background': 0, **objects}


def assert_shares_sum_to_one(table, objects):
    for metric in (Metric.SHARE_POS, Metric.SHARE_ABS, Metric.HIERARCHICAL_NORM):
        values = table[(table.metric == metric) & table.object.isin(objects)].value
        assert len(values) == len(objects) and values.notna().all(), metric
        assert abs(values.sum() - 1) < 1e-5, (metric, values.sum())


def test_sb3_like_cnn_policy():
    torch.manual_seed(0)
    obs, labels, objects = frames_with_background()
    policy = CnnPolicy()
    table = model_atoms(PolicyLogits(policy), 'policy.features_extractor.linear', obs, labels, objects,
                        mass=0.5)
    assert_shares_sum_to_one(table, objects)
    assert set(table.method) == {'lrp_two_pass'}
    with pytest.raises(ValueError, match='returns a tuple, not a batch of vectors'):
        model_atoms(policy, 'features_extractor.linear', obs, labels, objects)


def test_cleanrl_agent_either_name_of_fc():
    torch.manual_seed(0)
    obs, labels, objects = frames_with_background()
    agent = Agent()
    after_relu = model_atoms(agent, 'network.8', obs, labels[:, -1], objects, mass=0.5)
    linear = model_atoms(agent, 'network.7', obs, labels[:, -1], objects, mass=0.5)
    assert_same_table(after_relu, linear, atol=1e-7)
    assert_shares_sum_to_one(after_relu, objects)
    action = model_atoms(agent, 'network.8', obs, labels, objects, mode='action')
    assert set(action.method) == {'lrp_action'}
    assert_shares_sum_to_one(action, objects)


@pytest.mark.parametrize('call, message', [
    (lambda a, o, l, g: model_atoms(a, 'features_extractor.linear', o, l, g),
     "Agent has no layer 'features_extractor.linear'; its layers: network, network.0, network.1"),
    (lambda a, o, l, g: model_atoms(a, 'network.8', o, l[:, :, :80], g),
     'labels of shape (2, 4, 80, 84) do not match the observations of shape (2, 4, 84, 84)'),
    (lambda a, o, l, g: model_atoms(a, 'network.8', o, l, g, forward=lambda x: a(x)[:, :, None]),
     'the model returns shape (2, 6, 1) for 2 observations, not a batch of vectors'),
    (lambda a, o, l, g: model_atoms(a, 'network.8', o[:, :, :80], l[:, :, :80], g),
     'the model cannot take observations of shape (2, 4, 80, 84)'),
    (lambda a, o, l, g: model_atoms(a, 'critic', o, l, g),
     "layer 'critic' does not run in the model's forward"),
    (lambda a, o, l, g: model_atoms(a, 'network.8', o, l, g, seed='softmax'), "unknown option(s) ['seed']"),
])
def test_errors_in_one_line(call, message):
    obs, labels, objects = synthetic_frames(2)
    with pytest.raises(ValueError) as e:
        call(Agent(), obs, labels, objects)
    assert message in str(e.value) and '\n' not in str(e.value)


# --- The CleanRL-style Agent holding our trained Atari agent's weights --------------------------------------

def trained_atari_agent():
    "Our Atari PPO agent at the package's final checkpoint, and a CleanRL `Agent` holding its weights."
    step = read_manifest(ATARI_RUN)['checkpoint_steps'][-1]
    net, meta = load_checkpoint(dict(checkpoints_of(ATARI_RUN))[step])
    assert meta['step'] == step
    agent = Agent(net.cfg.n_actions)
    agent.load_state_dict(cleanrl_state_dict(net.state_dict(), agent))
    return net, agent.eval(), step


def test_cleanrl_agent_with_our_atari_weights_equals_the_fast_path():
    "model_atoms on the CleanRL layout = `checkpoint_atoms` (what `atoms analyse` runs) on our net."
    net, agent, step = trained_atari_agent()
    es = load_eval_set(ATARI_PONG)
    assert es['objects'] == ATARI_LABELS
    obs, labels = torch.as_tensor(es['obs'][::19]), es['labels'][::19]     # 8 stacks across the set
    with torch.no_grad():
        np.testing.assert_allclose(agent(obs.float()), net.decision(obs), atol=1e-5, rtol=0)
    ours = model_atoms(agent, 'network.8', obs, labels, es['objects'], step=step)
    theirs = checkpoint_atoms(net, obs, labels, es['objects'], step)
    assert_same_table(ours, theirs, atol=1e-6)
    h = ours[ours.metric == Metric.HIERARCHICAL_NORM].set_index('object').value
    assert h.notna().all() and abs(h.sum() - 1) < 1e-6


@pytest.mark.parametrize('state, message', [
    (lambda: make_net('actor_critic').state_dict(),
     "our 'head.weight' (3, 512) does not fit Agent.actor.weight (6, 512)"),
    (lambda: make_net('q', NetConfig(n_actions=6)).state_dict(),
     "Agent weights ['critic.weight', 'critic.bias'] have no counterpart in our network"),
    (lambda: {'encoder.weight': torch.zeros(1)}, "'encoder.weight' has no place in the CleanRL layout"),
    (lambda: {'body.1.6.weight': torch.zeros(1)},
     "our 'body.1.6.weight' goes to 'network.6.weight', which Agent does not have"),
])
def test_cleanrl_state_dict_errors_in_one_line(state, message):
    with pytest.raises(ValueError) as e:
        cleanrl_state_dict(state(), Agent())
    assert message in str(e.value) and '\n' not in str(e.value)


def test_cleanrl_state_dict_renames_every_weight():
    net = make_net('actor_critic', NetConfig(n_actions=6))
    renamed = cleanrl_state_dict(net.state_dict(), Agent())
    assert sorted(renamed) == sorted(Agent().state_dict())
    assert torch.equal(renamed['network.7.weight'], net.fc[0].weight)
    assert torch.equal(renamed['critic.bias'], net.value.bias)
