"""ATOMs: the fast, vectorised metrics against slow, obviously-correct loops over frames, neurons and pixels."""
from itertools import combinations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings, strategies as st

from atoms.attention import (combinatorial_attention, hierarchical_attention, object_attention, relevance_share,
                             relevant_neurons, atoms_table, label_index, Metric, METRICS, subset_name,
                             skipped_frames, combine_maps)


# ---------------------------------------------------------------- reference implementations (plain loops)
def ref_object_attention(pr, labels, lab_id):
    "R̄_g^k(x) for one object, by looping over every pixel."
    X, K = pr.shape[:2]
    out = np.zeros((X, K))
    for x in range(X):
        px = [p for p in np.ndindex(labels.shape[1:]) if labels[(x, *p)] == lab_id]
        if not px: out[x] = np.nan; continue
        for k in range(K):
            vals = [pr[(x, k, *p)] for p in px]
            active = [v for v in vals if v != 0]
            out[x, k] = sum(vals) / len(active) if active else 0.0
    return out


def ref_hierarchical(nr, pr, labels, objects):
    X, K = nr.shape
    h = {}
    for g, lab in objects.items():
        rbar = ref_object_attention(pr, labels, lab)
        h[g] = sum(nr[x, k] * rbar[x, k] for x in range(X) for k in range(K)) / X
    return h


def ref_combinatorial(nr, pr, labels, objects, alpha=0.25, outside='le'):
    X, K = nr.shape
    names = list(objects)
    rbar = {g: ref_object_attention(pr, labels, objects[g]) for g in names}
    undefined = any(np.isnan(r).any() for r in rbar.values())          # an object absent from a frame: delta undefined
    out = {}
    for n in range(1, len(names) + 1):
        for T in combinations(names, n):
            total = 0.0
            for x in range(X):
                for k in range(K):
                    beta = alpha * max(rbar[g][x, k] for g in names)
                    inside = all(rbar[g][x, k] > beta for g in T)
                    if outside == 'le': rest = all(rbar[g][x, k] <= beta for g in names if g not in T)
                    else: rest = all(rbar[g][x, k] == 0 for g in names if g not in T)
                    total += nr[x, k] * (inside and rest)
            out[tuple(sorted(T))] = np.nan if undefined else total / X
    return out


def ref_relevant(nr, mass):
    mask = np.zeros(nr.shape, bool)
    for x in range(nr.shape[0]):
        pos = [max(v, 0) for v in nr[x]]
        total, held = sum(pos), 0.0
        for k in sorted(range(len(pos)), key=lambda k: -pos[k]):
            if held >= mass * total * (1 - 1e-12) or pos[k] <= 0: break
            mask[x, k] = True; held += pos[k]
    return mask


def random_case(seed, X, K, S, n_obj, sparsity):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_obj + 1, size=(X, *S))
    pr = rng.normal(size=(X, K, *S)) * (rng.random((X, K, *S)) > sparsity)
    pr[:, 0] = 0.0                                                        # one neuron with no relevance at all
    nr = rng.normal(size=(X, K)) * relevant_neurons(rng.exponential(size=(X, K)), 0.9)
    objects = {f'obj{i}': i for i in range(1, n_obj + 1)}
    return nr, pr, labels, objects


case = dict(seed=st.integers(0, 10_000), X=st.integers(1, 3), K=st.integers(1, 4),
            S=st.sampled_from([(2, 3, 3), (1, 4, 5), (3, 2, 2)]), n_obj=st.integers(1, 3),
            sparsity=st.sampled_from([0.0, 0.5, 0.9]))


@settings(max_examples=40, deadline=None)
@given(**case)
def test_hierarchical_matches_loop(seed, X, K, S, n_obj, sparsity):
    nr, pr, labels, objects = random_case(seed, X, K, S, n_obj, sparsity)
    fast, ref = hierarchical_attention(nr, pr, labels, objects), ref_hierarchical(nr, pr, labels, objects)
    assert fast.keys() == ref.keys()
    for g in ref: np.testing.assert_allclose(fast[g], ref[g], rtol=1e-6, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(**case, outside=st.sampled_from(['le', 'eq']), alpha=st.sampled_from([0.0, 0.25, 0.9]))
def test_combinatorial_matches_loop(seed, X, K, S, n_obj, sparsity, outside, alpha):
    nr, pr, labels, objects = random_case(seed, X, K, S, n_obj, sparsity)
    fast = combinatorial_attention(nr, pr, labels, objects, alpha=alpha, outside=outside)
    ref = ref_combinatorial(nr, pr, labels, objects, alpha=alpha, outside=outside)
    assert fast.keys() == ref.keys()
    for t in ref: np.testing.assert_allclose(fast[t], ref[t], rtol=1e-6, atol=1e-9, err_msg=str(t))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), X=st.integers(1, 4), K=st.integers(1, 12), mass=st.sampled_from([0.5, 0.9, 1.0]))
def test_relevant_neurons_matches_loop(seed, X, K, mass):
    rng = np.random.default_rng(seed)
    nr = rng.normal(size=(X, K)).round(1)                                 # rounding makes ties
    np.testing.assert_array_equal(relevant_neurons(nr, mass).sum(1), ref_relevant(nr, mass).sum(1))
    m = relevant_neurons(nr, mass)                                        # the chosen set holds the mass
    pos = np.clip(nr, 0, None)
    assert ((pos * m).sum(1) >= mass * pos.sum(1) * (1 - 1e-9)).all()


def test_absent_object_is_reported():
    nr, pr, labels, objects = random_case(2, 2, 3, (2, 4, 4), 2, 0.0)
    labels[1][labels[1] == 2] = 0                                         # obj2 absent from frame 1
    assert np.isnan(hierarchical_attention(nr, pr, labels, objects)['obj2'])
    assert not np.isnan(hierarchical_attention(nr, pr, labels, objects)['obj1'])
    assert all(np.isnan(v) for v in combinatorial_attention(nr, pr, labels, objects).values())
    assert all(np.isnan(v) for v in ref_combinatorial(nr, pr, labels, objects).values())


def test_torch_and_chunking_agree():
    nr, pr, labels, objects = random_case(1, 5, 3, (4, 6, 6), 3, 0.5)
    a = object_attention(pr, labels, objects)
    b = object_attention(torch.tensor(pr), torch.tensor(labels), objects, chunk_bytes=1)     # one frame per chunk
    np.testing.assert_allclose(a, b)
    h = hierarchical_attention(torch.tensor(nr), torch.tensor(pr, dtype=torch.float32), labels, objects)
    for g, v in hierarchical_attention(nr, pr, labels, objects).items(): np.testing.assert_allclose(h[g], v, rtol=1e-5)


def test_ball_gets_everything_and_area_fractions():
    X, K, S = 4, 6, (4, 84, 84)
    labels = np.zeros((X, *S), np.uint8)
    labels[:, :, 10:22, 2:4] = 1; labels[:, :, 30:42, 80:82] = 2; labels[:, :, 40:42, 40:42] = 3
    objects = {'agent_paddle': 1, 'opponent_paddle': 2, 'ball': 3}
    pr = np.zeros((X, K, *S), np.float32); pr[:, :, :, 40:42, 40:42] = 1 / 16
    nr = np.abs(np.random.default_rng(0).normal(size=(X, K)))
    h = hierarchical_attention(nr, pr, labels, objects)
    assert h['agent_paddle'] == h['opponent_paddle'] == 0 and h['ball'] > 0
    c = combinatorial_attention(nr, pr, labels, objects)
    np.testing.assert_allclose(c[('ball',)], nr.sum(1).mean())
    assert sum(v for t, v in c.items() if t != ('ball',)) == 0
    share = relevance_share(np.ones((X, *S)), labels, objects)
    np.testing.assert_allclose(share['agent_paddle'], 24 * 4 / np.prod(S)); np.testing.assert_allclose(share['ball'], 16 / np.prod(S))


def ref_share(maps, labels, objects, mode='pos', per_pixel=False):
    "The relevance share by a loop over frames: frames without relevance skipped, absent objects NaN."
    out = {}
    for g, lab in objects.items():
        vals = []
        for x in range(len(maps)):
            r = np.clip(maps[x], 0, None) if mode == 'pos' else np.abs(maps[x])
            area = (labels[x] == lab).sum()
            if area == 0: vals = [np.nan]; break
            if r.sum() == 0: continue
            vals.append(r[labels[x] == lab].sum() / r.sum() / (area if per_pixel else 1))
        out[g] = float(np.mean(vals)) if vals else np.nan
    return out


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n_empty=st.integers(0, 4), mode=st.sampled_from(['pos', 'abs']),
       per_pixel=st.booleans())
def test_share_skips_frames_without_relevance(seed, n_empty, mode, per_pixel):
    "Shares equal the loop's, skipping (and counting) frames with no relevance to share."
    nr, pr, labels, objects = random_case(seed, 4, 3, (2, 5, 5), 2, 0.3)
    nr[:n_empty] = 0                                                  # these frames: S is empty
    maps = combine_maps(nr, pr)
    got = relevance_share(maps, labels, objects, mode, per_pixel)
    want = ref_share(maps, labels, objects, mode, per_pixel)
    for g in objects: np.testing.assert_allclose(got[g], want[g], rtol=1e-6, equal_nan=True)
    assert skipped_frames(maps, mode) == sum(not np.any(m != 0) for m in maps) >= n_empty
    assert all(np.isnan(v) for v in got.values()) == (n_empty == 4 or any(np.isnan(v) for v in want.values()))


def test_one_empty_frame_does_not_turn_the_checkpoint_into_nan():
    "All-negative, empty and tied frames: shares skip and count them; h counts an empty S as zero attention."
    X, S = 4, (1, 4, 4)
    labels = np.zeros((X, *S), np.int64); labels[:, 0, 0, :2] = 1; labels[:, 0, 3, 2:] = 2
    objects = {'a': 1, 'b': 2}
    maps = np.ones((X, *S))
    maps[1] = -1.                                                     # no positive relevance
    maps[2] = 0.                                                      # no relevance at all
    assert (skipped_frames(maps, 'pos'), skipped_frames(maps, 'abs')) == (2, 1)
    for mode, kept in (('pos', [0, 3]), ('abs', [0, 1, 3])):
        got = relevance_share(maps, labels, objects, mode)
        assert got == relevance_share(maps[kept], labels[kept], objects, mode)
        np.testing.assert_allclose(got['a'], 2 / 16)                      # uniform frames: the area fraction
    nr = np.ones((X, 2)); nr[1:3] = 0                                  # frames 1 and 2: S empty
    pr = np.repeat(np.ones((X, 1, *S)), 2, 1) / 16
    t = atoms_table(nr, pr, labels, objects, step=0, method='example').set_index(['metric', 'object']).value
    assert t[Metric.SHARE_POS_SKIPPED].tolist() == [2, 2] and t[Metric.SHARE_ABS_SKIPPED].tolist() == [2, 2]
    assert t[Metric.SHARE_POS].notna().all() and t[Metric.HIERARCHICAL].notna().all()
    kept = relevance_share(combine_maps(nr, pr)[[0, 3]], labels[[0, 3]], objects)
    np.testing.assert_allclose(t[Metric.SHARE_POS][list(objects)].to_numpy(), list(kept.values()), rtol=1e-12)


def test_bad_input():
    nr, pr, labels, objects = random_case(0, 2, 3, (2, 4, 4), 2, 0.0)
    with pytest.raises(ValueError, match='labels shape'): hierarchical_attention(nr, pr, labels[:, :1], objects)
    with pytest.raises(ValueError, match='labels has 1 frames'): hierarchical_attention(nr, pr, labels[:1], objects)
    with pytest.raises(ValueError, match=r'unknown to objects'): combinatorial_attention(nr, pr, labels, {'obj1': 1})
    with pytest.raises(ValueError, match='neuron_relevance'): hierarchical_attention(nr[0], pr, labels, objects)
    with pytest.raises(ValueError, match='pixel_relevance'): hierarchical_attention(nr, pr[:, 0], labels, objects)
    with pytest.raises(ValueError, match='objects'): hierarchical_attention(nr, pr, labels, {})
    with pytest.raises(ValueError, match='distinct'): hierarchical_attention(nr, pr, labels, {'a': 1, 'b': 1, 'c': 2})


def test_atoms_table_schema():
    nr, pr, labels, objects = random_case(3, 2, 3, (2, 4, 4), 3, 0.3)
    t = atoms_table(nr, pr, labels, objects, step=123, method='lrp_two_pass')
    assert list(t.columns) == ['step', 'object', 'metric', 'method', 'value']
    assert str(t.step.dtype) == 'int64' and str(t.value.dtype) == 'float64'
    assert len(t[t.metric == Metric.COMBINATORIAL]) == 7
    assert subset_name(('obj1', 'obj2', 'obj3')) in set(t.object)
    np.testing.assert_allclose(t[t.metric == Metric.HIERARCHICAL_NORM].value.sum(), 1.0)
    assert tuple(t.metric.unique()) == METRICS[:3] + (Metric.SHARE_POS, Metric.SHARE_POS_PER_PX,
                                                      Metric.SHARE_ABS, Metric.SHARE_ABS_PER_PX,
                                                      Metric.SHARE_POS_SKIPPED, Metric.SHARE_ABS_SKIPPED)


def test_metric_names_cover_the_committed_tables():
    "Every metric name in the committed ATOM tables is one of `METRICS`."
    tables = sorted((Path(__file__).resolve().parents[1] / 'artifacts' / 'runs').glob('*/atoms.parquet'))
    assert tables
    for f in tables:
        assert set(pd.read_parquet(f, columns=['metric']).metric) <= set(METRICS), f


def test_label_index_background_and_order():
    labels = np.array([[[0, 3], [1, 3]]])
    names, idx = label_index(labels, {'ball': 3, 'paddle': 1})
    assert names == ['ball', 'paddle'] and idx.tolist() == [[2, 0, 1, 0]]      # background -> G
