"""LRP: zennit and the fast path against a hand-written dense-matrix z⁺ propagation; conservation; batching."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from atoms.nets import NetConfig, QNetwork, SMALL, make_net
from atoms.relevance import (explain, zennit_neuron_relevance, zennit_pixel_relevance, zplus_forward,
                             fast_neuron_relevance, fast_pixel_relevance, checkpoint_atoms, synthetic_frames, METHODS,
                             fused_inputs, Method, METHOD_LABELS, MODES, method_label, RelevanceSeed,
                             RELEVANCE_SEEDS)
from atoms.attention import object_attention, combine_maps, Metric

TINY = NetConfig(frames=2, size=12, channels=(3, 4), kernels=(4, 3), strides=(2, 1), hidden=6, n_actions=3)
EPS = 1e-6


def tiny_net(seed=0, bias=0.1):
    torch.manual_seed(seed)
    net = QNetwork(TINY)
    with torch.no_grad():
        for n, p in net.named_parameters():
            if n.endswith('bias'): p.copy_(bias * torch.randn_like(p))
    return net.eval()


def dense(layer, in_shape):
    "The matrix (out, in) of a conv/linear layer without bias, built from the unit basis."
    n = int(np.prod(in_shape))
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)
    with torch.no_grad():
        if isinstance(layer, nn.Conv2d):
            out = nn.functional.conv2d(basis, layer.weight.double(), None, layer.stride)
        else: out = basis @ layer.weight.double().T
    return out.reshape(n, -1).T.numpy()


def reference(net, x):
    "Forward in float64 and hand-written z⁺ (bias not propagated, Flat on the first layer) as dense matrices."
    conv1, conv2 = [m for m in net.body.modules() if isinstance(m, nn.Conv2d)]
    fc, head = net.fc[0], net.head
    shapes = [(TINY.frames, TINY.size, TINY.size), (3, 5, 5), (4, 3, 3)]
    Ms = [dense(conv1, shapes[0]), dense(conv2, shapes[1]), dense(fc, (36,)), dense(head, (6,))]
    bs = [m.bias.double().detach().numpy() for m in (conv1, conv2, fc, head)]
    bs[0], bs[1] = np.repeat(bs[0], 25), np.repeat(bs[1], 9)
    a = [x.reshape(-1).double().numpy() / 255]
    for i, (M, b) in enumerate(zip(Ms, bs)):
        z = M @ a[-1] + b
        a.append(np.maximum(z, 0) if i < 3 else z)
    f = a[-1]

    def zplus(M, a_in, R):
        Mp = np.clip(M, 0, None)
        return a_in * (Mp.T @ (R / (Mp @ a_in + EPS)))

    R_k = zplus(Ms[3], a[3], f)                                      # pass 1: output f(x) -> F_c
    C = (np.abs(Ms[0]) > 0).astype(float)                            # Flat: every connection weight 1
    maps = []
    for k in range(TINY.hidden):                                     # pass 2: one-hot at F_c -> pixels
        R = np.eye(TINY.hidden)[k]
        R = zplus(Ms[2], a[2], R)
        R = zplus(Ms[1], a[1], R)
        R = C.T @ (R / (C @ np.ones_like(a[0]) + EPS))
        maps.append(R.reshape(shapes[0]))
    return R_k, np.stack(maps), f


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_zplus_matches_dense_reference(seed):
    net = tiny_net(seed)
    x = torch.randint(0, 256, (1, TINY.frames, TINY.size, TINY.size), dtype=torch.uint8)
    R_k, maps, f = reference(net, x[0])
    all_k = torch.arange(TINY.hidden)[None]
    r_z, out_z = zennit_neuron_relevance(net, x, relevance_seed='output')   # the reference seeds with f(x)
    np.testing.assert_allclose(out_z[0].numpy(), f, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r_z[0].numpy(), R_k, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(zennit_pixel_relevance(net, x, all_k)[0].numpy(), maps, rtol=1e-4, atol=1e-7)
    records, out = zplus_forward(net, x)
    fast = fast_neuron_relevance(records, out, relevance_seed='output')[0].numpy()
    np.testing.assert_allclose(fast, R_k, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(fast_pixel_relevance(records, all_k, batch=4)[0].numpy(), maps, rtol=1e-4, atol=1e-7)


def test_conservation_without_bias():
    net = tiny_net(3, bias=0.0)
    x = torch.randint(0, 256, (4, TINY.frames, TINY.size, TINY.size), dtype=torch.uint8)
    r, out = zennit_neuron_relevance(net, x, relevance_seed='output')
    with torch.no_grad(): a = net.body(x)
    reached = (a @ net.head.weight.clamp(min=0).T) > 0               # outputs whose z⁺ denominator is not 0
    assert reached.any() and (a > 0).any()
    np.testing.assert_allclose(r.sum(1), (out * reached).sum(1), rtol=1e-4, atol=1e-6)   # pass 1 sums to Σ f(x)
    maps = zennit_pixel_relevance(net, x, torch.arange(TINY.hidden).expand(4, -1))
    sums = maps.sum((2, 3, 4))
    np.testing.assert_allclose(sums[a > 0], torch.ones(int((a > 0).sum())), rtol=1e-3)  # each active seed of 1 -> 1 (up to the stabiliser)


@pytest.mark.parametrize('backend', ['fast', 'zennit'])
def test_batched_two_pass_equals_per_neuron_loop(backend):
    torch.manual_seed(0)
    net = make_net('q', SMALL).eval()
    x = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    e = explain(net, x, backend=backend, batch=7)                  # small batches: chunking across frames
    assert (e.neurons >= 0).any()
    for i in range(3):
        for j, k in enumerate(e.neurons[i].tolist()):
            if k < 0: assert e.pixel_relevance[i, j].abs().sum() == 0; continue
            one = zennit_pixel_relevance(net, x[i:i+1], torch.tensor([[k]]))[0, 0]
            scale = float(one.abs().max())
            torch.testing.assert_close(e.pixel_relevance[i, j], one, rtol=1e-4, atol=1e-6 * scale)


def test_fast_equals_zennit_on_nature_net():
    torch.manual_seed(4)
    net = make_net('actor_critic', NetConfig()).eval()
    with torch.no_grad():
        for p in net.parameters(): p.add_(0.01 * torch.randn_like(p))     # biases and a head that is not tiny
    x = torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8)
    a, b = explain(net, x, relevance_seed='softmax', backend='fast'), explain(net, x, relevance_seed='softmax', backend='zennit')
    torch.testing.assert_close(a.neuron_relevance, b.neuron_relevance, rtol=1e-4, atol=1e-6)
    assert torch.equal(a.neurons, b.neurons)
    torch.testing.assert_close(a.pixel_relevance, b.pixel_relevance, rtol=1e-3, atol=1e-6 * float(b.pixel_relevance.abs().max()))
    a, b = explain(net, x, mode='action', backend='fast'), explain(net, x, mode='action', backend='zennit')
    torch.testing.assert_close(a.pixel_relevance, b.pixel_relevance, rtol=1e-3, atol=1e-6 * float(b.pixel_relevance.abs().max()))
    np.testing.assert_allclose(a.pixel_relevance.sum((1, 2, 3, 4)), a.output.max(1).values, rtol=1e-3)   # conservation


def test_shapes_and_other_methods():
    net = tiny_net(5)
    x = torch.randint(0, 256, (2, TINY.frames, TINY.size, TINY.size), dtype=torch.uint8)
    for method in METHODS:
        kw = {'patch': 3} if method == 'occlusion' else {}
        e = explain(net, x, method, relevance_seed='softmax', **kw)
        X, J = e.neurons.shape
        assert e.neuron_relevance.shape == (X, J) and e.pixel_relevance.shape == (X, J, TINY.frames, TINY.size, TINY.size)
        assert e.pixel_relevance.abs().sum() > 0
        a = explain(net, x, method, mode='action', **kw)
        assert a.pixel_relevance.shape == (2, 1, TINY.frames, TINY.size, TINY.size)
    for comp in ('zplus_wsquare', 'epsilon_plus_flat', 'epsilon_alpha2_beta1_flat'):
        assert explain(net, x, composite=comp, relevance_seed='softmax').pixel_relevance.abs().sum() > 0


def test_bad_input():
    net = tiny_net(0)
    with pytest.raises(ValueError, match='expected observations of shape'): explain(net, torch.zeros(2, 3, 12, 12))
    with pytest.raises(ValueError, match='expected observations of shape'): explain(net, torch.zeros(2, 2, 84, 84))
    with pytest.raises(ValueError, match="unknown method"): explain(net, torch.zeros(1, 2, 12, 12), 'lime')
    with pytest.raises(ValueError, match="relevance_seed must be"):
        explain(net, torch.zeros(1, 2, 12, 12), relevance_seed='logits')
    with pytest.raises(ValueError, match="unknown composite"): explain(net, torch.zeros(1, 2, 12, 12), composite='z')
    obs, lab, objs = synthetic_frames(2)
    big = make_net('q', SMALL)
    with pytest.raises(ValueError, match='labels shape'): checkpoint_atoms(big, obs, lab[:, :1], objs, step=0)
    with pytest.raises(ValueError, match='unknown to objects'): checkpoint_atoms(big, obs, lab, {'ball': 3}, step=0)


def test_checkpoint_atoms_table():
    obs, lab, objs = synthetic_frames(4)
    torch.manual_seed(0)
    t = checkpoint_atoms(make_net('actor_critic', SMALL), obs, lab, objs, step=5000, relevance_seed='softmax', frames_per_chunk=3)
    assert list(t.columns) == ['step', 'object', 'metric', 'method', 'value'] and (t.step == 5000).all()
    assert set(t.method) == {Method.LRP_TWO_PASS}
    np.testing.assert_allclose(t.query("metric == 'hierarchical_norm'").value.sum(), 1.0)
    assert t.value.notna().all()


@pytest.mark.parametrize('cfg', [SMALL, NetConfig(channels=(8, 16, 16), kernels=(6, 4, 3), strides=(3, 2, 1), hidden=32)])
def test_fused_atom_inputs_equal_full_maps(cfg):
    "The block/fold shortcuts of the sweep give the same R̄ and combined maps as the full per-neuron maps."
    torch.manual_seed(1)
    net = make_net('actor_critic', cfg).eval()
    obs, lab, objs = synthetic_frames(5, seed=3)
    lab[4][lab[4] == 2] = 0                                            # opponent absent from frame 4
    e = explain(net, obs, relevance_seed='softmax')
    records, _ = zplus_forward(net, obs)
    oa, maps = fused_inputs(records, e.neurons, e.neuron_relevance, lab, objs, batch=9)
    ref = object_attention(e.pixel_relevance, lab, objs)
    np.testing.assert_array_equal(np.isnan(oa), np.isnan(ref))
    assert np.isnan(oa[4, :, 1]).all() and not np.isnan(oa[:4]).any()
    np.testing.assert_allclose(np.nan_to_num(oa), np.nan_to_num(ref), rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(maps, combine_maps(e.neuron_relevance, e.pixel_relevance), rtol=1e-4, atol=1e-9)
    t_fused = checkpoint_atoms(net, obs, lab, objs, step=1, relevance_seed='softmax', frames_per_chunk=2)
    t_zennit = checkpoint_atoms(net, obs, lab, objs, step=1, relevance_seed='softmax', backend='zennit')
    pd_equal = np.allclose(t_fused.value, t_zennit.value, rtol=1e-3, atol=1e-7, equal_nan=True)
    assert pd_equal and (t_fused.object == t_zennit.object).all()


def test_method_labels_cover_the_committed_tables():
    "Every label in the committed ATOM tables is one of `METHOD_LABELS`, built as `{method}_{mode}`."
    tables = sorted((Path(__file__).resolve().parents[1] / 'artifacts' / 'runs').glob('*/atoms.parquet'))
    assert tables
    assert METHOD_LABELS == tuple(method_label(m, mode) for m in METHODS for mode in MODES)
    for f in tables:
        assert set(pd.read_parquet(f, columns=['method']).method) <= set(METHOD_LABELS), f


def steered_net(bias, weight=0.05, seed=0):
    "`tiny_net` whose head gives f_j(x) = weight · Σ_k a_k(x) + bias_j: equal positive weights, chosen biases."
    net = tiny_net(seed)
    with torch.no_grad():
        net.head.weight.fill_(weight)
        net.head.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    return net


def non_empty_s(net, x, relevance_seed, backend):
    "Per frame, whether S is non-empty."
    return (explain(net, x, relevance_seed=relevance_seed, backend=backend).neurons >= 0).any(1).tolist()


# which choices promise a non-empty S, per constructed output (z+ keeps the seed's sign: R_k = a_k/Σa · Σ_j seed_j)
PROMISES = {
    'all negative': ([-9., -8., -7.], {'output': False, 'softmax': True, 'action': False, 'above_mean': True}),
    'ties': ([0., 0., 0.], {'output': True, 'softmax': True, 'action': True, 'above_mean': False}),
    'one dominant': ([-1., 9., -1.], {'output': True, 'softmax': True, 'action': True, 'above_mean': True}),
}


@pytest.mark.parametrize('backend', ['fast', 'zennit'])
@pytest.mark.parametrize('case', sorted(PROMISES))
def test_pass1_seed_options_on_constructed_outputs(case, backend):
    "All logits negative, ties, one dominant: S is non-empty exactly where each choice promises it."
    bias, promised = PROMISES[case]
    net = steered_net(bias)
    x = torch.randint(0, 256, (3, TINY.frames, TINY.size, TINY.size), dtype=torch.uint8)
    out = net.decision(x)
    assert (net.body(x) > 0).any(1).all()                            # F_c passes relevance in every frame
    if case == 'all negative': assert (out < 0).all()
    if case == 'ties': assert (out == out[:, :1]).all() and (out > 0).all()
    if case == 'one dominant': assert (out.argmax(1) == 1).all() and (out[:, [0, 2]] < 0).all()
    assert set(promised) == set(RELEVANCE_SEEDS)
    for choice, non_empty in promised.items():
        assert non_empty_s(net, x, choice, backend) == [non_empty] * 3, (case, choice)


def test_old_seed_keyword_still_works():
    "The pass-1 seed's old keyword `seed` gives the same result as `relevance_seed`, with a DeprecationWarning."
    net, x = steered_net([-9., -8., -7.]), torch.randint(0, 256, (2, TINY.frames, TINY.size, TINY.size), dtype=torch.uint8)
    with pytest.warns(DeprecationWarning, match='relevance_seed'):
        old = explain(net, x, seed=RelevanceSeed.SOFTMAX)
    torch.testing.assert_close(old.neuron_relevance, explain(net, x, relevance_seed=RelevanceSeed.SOFTMAX).neuron_relevance)
    with pytest.warns(DeprecationWarning):
        checkpoint_atoms(net, x, np.ones(x.shape, np.int64), {'a': 1}, step=0, seed='softmax')
    with pytest.raises(ValueError, match='once'):
        checkpoint_atoms(net, x, np.ones(x.shape, np.int64), {'a': 1}, step=0, relevance_seed='output', seed='softmax')


def test_shares_skip_and_count_frames_with_empty_s():
    "Frames with an empty S are left out of the shares and counted; the other frames give the same shares."
    net = tiny_net(3)
    x = torch.randint(0, 256, (6, TINY.frames, TINY.size, TINY.size), dtype=torch.uint8)
    total = net.body(x).sum(1).detach()
    threshold = float(total.median())
    net = steered_net([-threshold * 0.05] * 3, seed=3)               # f(x) < 0 exactly where Σa(x) < the median
    below = (total < threshold).numpy()
    assert 0 < below.sum() < len(x)
    lab = np.zeros(x.shape, np.int64)
    lab[:, :, :4, :4], lab[:, :, 6:, 6:] = 1, 2                          # both objects in every frame
    objs = {'a': 1, 'b': 2}
    t = checkpoint_atoms(net, x, lab, objs, step=0, relevance_seed='output').set_index(['metric', 'object']).value
    assert (t[Metric.SHARE_POS_SKIPPED] == below.sum()).all() and (t[Metric.SHARE_ABS_SKIPPED] == below.sum()).all()
    for m in (Metric.SHARE_POS, Metric.SHARE_ABS, Metric.SHARE_POS_PER_PX, Metric.SHARE_ABS_PER_PX):
        assert t[m].notna().all(), m
    kept = checkpoint_atoms(net, x[~below], lab[~below], objs, step=0, relevance_seed='output')
    kept = kept.set_index(['metric', 'object']).value
    np.testing.assert_allclose(t[Metric.SHARE_POS], kept[Metric.SHARE_POS], rtol=1e-6)
    assert (kept[Metric.SHARE_POS_SKIPPED] == 0).all()
    t_soft = checkpoint_atoms(net, x, lab, objs, step=0, relevance_seed='softmax').set_index(['metric', 'object']).value
    assert (t_soft[Metric.SHARE_POS_SKIPPED] == 0).all()                  # softmax: S is never empty
