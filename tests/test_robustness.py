"Robustness sweep: localisation metrics on Quantus's documented cases, a tiny sweep (resume, refusal, CLI), τ and claims."
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atoms.analysis import AnalyseConfig, analyse, checkpoints_of
from atoms.cli import main
from atoms.core import load_table, read_manifest
from atoms.relevance import Method
from atoms.robustness import (LOCALISATION_METRICS, ROBUSTNESS_METHODS, RobustnessConfig,
                              hierarchy_tau, load_robustness, relevance_mass_accuracy,
                              relevance_rank_accuracy, robustness, tau_summary, tau_table)

from helpers import folder_hashes, tiny_run_and_eval_sets


# --- Quantus's documented localisation cases (tests/metrics/test_localisation_metrics.py of Quantus):
# masks and relevance maps of shape (10, 1, 224[, 224]); ones at the given slices on uniform noise.

def case(mask_at, relevance_at, noise, dims):
    rng = np.random.default_rng(1)
    shape = (10, 1) + (224,) * dims
    mask, relevance = np.zeros(shape), (rng.uniform(0, noise, shape) if noise else np.zeros(shape))
    mask[(slice(None), slice(None), *mask_at[:dims])] = 1
    relevance[(slice(None), slice(None), *relevance_at[:dims])] = 1
    return relevance, mask


S = slice
ALL_IN = ((S(50, 150),) * 2, (S(50, 150),) * 2)
NONE_IN = ((S(0, 100),) * 2, (S(100, 200),) * 2)
HALF_IN = ((S(50, 100),) * 2, (S(0, 100), S(75, 100)))
SEG_BIGGER = ((S(0, 150),) * 2, (S(50, 150),) * 2)


@pytest.mark.parametrize('dims', [1, 2])
def test_relevance_mass_accuracy_on_quantus_cases(dims):
    assert (relevance_mass_accuracy(*case(*ALL_IN, 0, dims)) == 1).all()       # all_in_gt_zeros: 1.0
    assert (relevance_mass_accuracy(*case(*NONE_IN, 0, dims)) == 0).all()      # none_in_gt_zeros: 0.0
    bigger = relevance_mass_accuracy(*case(*SEG_BIGGER, 0.1, dims))             # all_in_gt_seg_bigger
    assert ((bigger > 0.5) & (bigger < 1)).all()
    assert np.allclose(relevance_mass_accuracy(*case(*HALF_IN, 0, dims)), 0.5)  # half_in_gt_zeros: 0.5


@pytest.mark.parametrize('dims', [1, 2])
def test_relevance_rank_accuracy_on_quantus_cases(dims):
    assert (relevance_rank_accuracy(*case(*ALL_IN, 0.1, dims)) == 1).all()     # all_in_gt: 1.0
    assert (relevance_rank_accuracy(*case(*NONE_IN, 0.1, dims)) == 0).all()    # none_in_gt: 0.0
    bigger = relevance_rank_accuracy(*case(*SEG_BIGGER, 0.1, dims))             # seg_bigger: (0.5, 1)
    assert ((bigger > 0.5) & (bigger < 1)).all()
    # half_in_gt_2d: 0.5; in 1-d 100 equal values tie for 50 places, half of them in the mask: 0.5 expected
    # (Quantus's own 1-d expectation, strictly between 0.5 and 1, comes from the tie order of its sort)
    assert np.allclose(relevance_rank_accuracy(*case(*HALF_IN, 0.1, dims)), 0.5)


def naive_rank_accuracy(relevance, mask):
    "Pixel by pixel, as the definition reads: the K largest values, K the mask's size; a tie for the last places shared."
    out = []
    for r, m in zip(relevance.reshape(len(relevance), -1), mask.reshape(len(mask), -1).astype(bool)):
        k = int(m.sum())
        if not k:
            out.append(np.nan)
            continue
        kth = sorted(r, reverse=True)[k - 1]
        above = sum(1 for v in r if v > kth)
        tied = sum(1 for v in r if v == kth)
        hits = sum(1 if v > kth else (k - above) / tied if v == kth else 0 for v, inside in zip(r, m) if inside)
        out.append(hits / k)
    return np.array(out)


def test_tied_ranks_count_as_random_tie_breaking_on_average():
    rng = np.random.default_rng(2)
    relevance = rng.integers(0, 3, (5, 12)).astype(float)          # many ties
    mask = rng.random((5, 12)) < 0.4
    mask[:, 0] = True
    draws = []
    for _ in range(4000):                                          # random tie-breaking, by a tiny jitter
        jitter = relevance + rng.uniform(0, 1e-6, relevance.shape)
        draws.append(naive_rank_accuracy(jitter, mask))
    np.testing.assert_allclose(relevance_rank_accuracy(relevance, mask), np.mean(draws, 0), atol=0.02)
    np.testing.assert_allclose(relevance_rank_accuracy(relevance, mask), naive_rank_accuracy(relevance, mask))


def test_metrics_equal_naive_references():
    rng = np.random.default_rng(0)
    relevance, mask = rng.normal(size=(20, 6, 7)), rng.random((20, 6, 7)) < 0.3
    mask[0] = False
    np.testing.assert_allclose(relevance_rank_accuracy(relevance, mask), naive_rank_accuracy(relevance, mask))
    pos = relevance.clip(min=0).reshape(20, -1)
    want = (pos * mask.reshape(20, -1)).sum(1) / pos.sum(1)
    want[0] = np.nan
    np.testing.assert_allclose(relevance_mass_accuracy(relevance, mask), want)


# --- the sweep on a tiny made run

@pytest.fixture(scope='module')
def made(tmp_path_factory):
    return tiny_run_and_eval_sets(tmp_path_factory.mktemp('robustness'))


@pytest.fixture
def run(made, tmp_path):
    return Path(shutil.copytree(made[0], tmp_path/'runs'/'pong__a2c__small__1'))


def small(run, made, **kw):
    "A cheap sweep of `run` on the tiny evaluation set."
    return RobustnessConfig(str(run), **{**dict(localisation_frames=3, smoothgrad_samples=2, occlusion_patch=12,
                                                eval_dir=str(made[1]['pong']), progress=False), **kw})


def test_sweep_rows_resume_and_refuse_other_settings(run, made, monkeypatch):
    import atoms.robustness as rb
    real, calls = rb.method_rows, []
    def killed_at_third(*args, **kw):
        calls.append(args[1])
        if len(calls) == 3: raise KeyboardInterrupt
        return real(*args, **kw)
    monkeypatch.setattr(rb, 'method_rows', killed_at_third)
    with pytest.raises(KeyboardInterrupt): robustness(small(run, made))
    assert load_table(run/'robustness'/'robustness.parquet').method.nunique() == 2   # two methods survived
    monkeypatch.setattr(rb, 'method_rows', real)
    table = load_table(robustness(small(run, made)))
    steps = [s for s, _ in checkpoints_of(run)]
    assert sorted(set(zip(table.step, table.method))) == sorted((s, m) for s in steps for m in ROBUSTNESS_METHODS)
    local = table[table.metric.isin(list(LOCALISATION_METRICS))]
    assert len(local) == len(steps) * len(ROBUSTNESS_METHODS) * 3 * len(LOCALISATION_METRICS)   # × objects
    assert local.value.dropna().between(0, 1).all()
    m = read_manifest(run/'robustness')
    assert m['commands']['robustness']['in_progress'] is False and m['steps'] == steps
    assert load_robustness(run).equals(table)
    before = folder_hashes(run)
    with pytest.raises(Exception, match='other settings'): robustness(small(run, made, occlusion_patch=6))
    assert folder_hashes(run) == before


def test_lrp_rows_equal_the_analysis(run, made):
    cfg = small(run, made, methods=(Method.LRP_TWO_PASS,), localisation_frames=0, checkpoints=2)
    table = load_table(robustness(cfg))
    assert set(table.metric).isdisjoint(LOCALISATION_METRICS)
    analyse(AnalyseConfig(str(run), eval_dir=str(made[1]['pong']), progress=False))
    atoms = load_table(run/'atoms.parquet')
    atoms = atoms[(atoms.method == Method.LRP_TWO_PASS) & atoms.step.isin(table.step)]
    key = ['step', 'metric', 'object']
    pd.testing.assert_frame_equal(table.sort_values(key).reset_index(drop=True),
                                  atoms.sort_values(key).reset_index(drop=True)[table.columns])


def error_of(*argv):
    try: main(list(argv))
    except SystemExit as e: return e.code


@pytest.mark.parametrize('argv, message', [
    (['--occlusion-patch', '0'], 'RobustnessConfig.occlusion_patch must be >= 1'),
    (['--methods', 'saliency_action'], "RobustnessConfig.methods: unknown method 'saliency'"),
    (['--methods', 'lrp_action', 'lrp_action'], 'RobustnessConfig.methods: give each method once'),
    (['--out', '.'], 'RobustnessConfig.out'),
])
def test_cli_errors_name_the_field(run, made, capsys, argv, message):
    out = ['--out', str(run.parent/'elsewhere')] if '--out' not in argv else []
    status = error_of('robustness', str(run), '--eval-dir', str(made[1]['pong']), *out, *argv)
    err = capsys.readouterr().err
    assert status == 2 and message in err and err.count('\n') == 1, err


def test_cli_runs_a_sweep(run, made, capsys):
    main(['robustness', str(run), '--methods', 'lrp_action', '--checkpoints', '1', '--localisation-frames', '2',
          '--eval-dir', str(made[1]['pong']), '--no-progress'])
    assert capsys.readouterr().out.strip().endswith('robustness.parquet')
    assert read_manifest(run/'robustness')['command'].startswith('atoms robustness')


def test_missing_run_is_one_line():
    assert error_of('robustness', '/no/such/run') == 2


# --- statistics

def tidy(values):
    "hierarchical_norm rows from {method: {step: [agent_paddle, opponent_paddle, ball, background]}}."
    names = ['agent_paddle', 'opponent_paddle', 'ball', 'background']
    return pd.DataFrame([dict(step=s, object=o, metric='hierarchical_norm', method=m, value=v)
                         for m, by_step in values.items() for s, vs in by_step.items() for o, v in zip(names, vs)])


def test_tau_ignores_background_and_subsets_and_summarises_over_runs():
    t = tidy({'lrp_two_pass': {1: [.5, .3, .2, .0], 2: [.5, .3, .2, .0]},
              'occlusion_action': {1: [.2, .3, .5, .9], 2: [.5, .3, .2, .9]}})
    t = pd.concat([t, t.assign(object='ball+background', value=1.)])
    assert hierarchy_tau(t, 'lrp_two_pass', 'occlusion_action').tolist() == [-1., 1.]
    taus = tau_table({'a': t, 'b': t})
    assert set(taus.method) == {'occlusion_action'} and len(taus) == 4
    row = tau_summary(taus).iloc[0]
    assert (row.runs, row.checkpoints, row.tau) == (2, 4, 0.)
