"""The claims' decision rules: statsmodels replaces the hand-written statistics without changing a
number of the committed tables, and every test decides (or says it cannot) with 1 and with 5 seeds."""
import numpy as np
import pandas as pd
import pytest

from atoms.core import artifacts_dir, load_artifact
from atoms.dbdt import (ATTENTION_PREDICTS, DISTINCT_BEHAVIOUR, attention_logit,
                        attention_predicts_test, distinct_behaviour_test, wilson)
from atoms.phases import (CONSISTENT, DISTINCT_ATTENTION, PADDLE_LATE, PHASES, claim_heading,
                          consistency_test, crosseval_distinct_test, crosseval_profiles,
                          distinct_attention_test, log_schedule, paddle_late_test, phases_test,
                          smallest_p)
from atoms.relevance import Method

DBDT_RUNS = sorted(p.parent for p in (artifacts_dir()/'runs').glob('*/dbdt/manifest.json'))


@pytest.mark.parametrize('folder', DBDT_RUNS, ids=lambda p: p.parent.name)
def test_wilson_reproduces_committed_intervals(folder):
    "The committed summaries were made by the hand-written Wilson interval: same numbers to 1e-6."
    summary = load_artifact(folder, 'dbdt_summary.parquet')
    lo, hi = wilson(summary.k, summary.n)
    np.testing.assert_allclose(lo, summary.lo, atol=1e-6)
    np.testing.assert_allclose(hi, summary.hi, atol=1e-6)


@pytest.mark.parametrize('folder', DBDT_RUNS, ids=lambda p: p.parent.name)
def test_logit_reproduces_committed_coefficients(folder):
    "statsmodels' Logit gives the committed (hand-written Newton) coefficients and intervals."
    trials = load_artifact(folder, 'dbdt.parquet')
    committed = load_artifact(folder, 'dbdt_attention.parquet')
    for row in committed.itertuples():
        rows = trials.game == row.game
        if 'condition' in trials:   # tables with the swapped-grey control: one fit per condition
            rows &= trials.condition == getattr(row, 'condition', 'normal')
        fit = attention_logit(trials[rows], row.metric)
        assert fit['converged'] == row.logit_converged
        np.testing.assert_allclose([fit['coef'], fit['lo'], fit['hi']],
                                   [row.logit_coef, row.logit_lo, row.logit_hi], atol=1e-6)


def seeds(values, n):
    "The first `n` of `values`, as a per-seed Series."
    return pd.Series(values[:n], dtype=float)


@pytest.mark.parametrize('n', [1, 5])
def test_every_criterion_decides_with_1_and_5_seeds(n):
    rng = np.random.default_rng(n)
    assert phases_test([3, 2, 4, 1, 2][:n])['verdict'] == 'agree'
    lags = pd.DataFrame({'lag_score': seeds([0.05, -0.02, 0.01, 0.03, 0.0], n),
                         'lag_others': seeds([0.8, 0.7, 0.9, 0.75, 0.85], n)})
    late = paddle_late_test(lags)['verdict']
    assert late == ('undecided: 1 seed' if n == 1 else 'agree')
    means = np.array([[0.6, 0.3, 0.1], [0.2, 0.6, 0.2], [0.3, 0.2, 0.5]])
    profiles = pd.DataFrame(np.repeat(means, n, 0) + 0.02 * rng.random((3 * n, 3)))
    distinct = distinct_attention_test(profiles, np.repeat(['a', 'b', 'c'], n), n_perm=300)
    assert distinct['verdict'] == ('undecided: 1 seed' if n == 1 else 'agree')
    steps = [log_schedule(1e3, 1e7, 60)] * (3 * n)
    bounds = [[2e4, 3e5]] * (3 * n)
    games = list(np.repeat(['a', 'b', 'c'], n))
    assert consistency_test(bounds, games, steps, n_sim=200)['verdict'] == 'agree'
    hits = pd.DataFrame({'k': [180, 175, 185, 178, 182][:n], 'n': 200})
    base = pd.DataFrame({'k': [150, 155, 148, 160, 152][:n], 'n': 200})
    assert distinct_behaviour_test(hits, base)['verdict'] == 'agree'
    rows = pd.DataFrame({'trained': 'x', 'game': 'g', 'logit_coef': [1.0] * n,
                         'logit_lo': [0.5] * n, 'logit_hi': [1.5] * n})
    assert attention_predicts_test(rows)['verdict'] == 'agree'


def test_headings_follow_verdicts():
    "A heading is the finding only when its verdict agrees; otherwise it says what was found."
    for c in (PHASES, CONSISTENT, PADDLE_LATE, DISTINCT_ATTENTION, DISTINCT_BEHAVIOUR,
              ATTENTION_PREDICTS):
        assert claim_heading(c, 'agree') == c.holds
        assert claim_heading(c, 'disagree') == c.fails != c.holds
        assert 'Not decided' in claim_heading(c, 'undecided: 1 seed')
        assert c.paper and c.paper.lower() not in ('yes', 'no')


def crosseval_tables(n_seeds, distinct, noise=0.03, seed=0):
    "Cross-evaluation tables of 3 training games × `n_seeds`, on 2 evaluation games; run -> game."
    rng, tables = np.random.default_rng(seed), {}
    means = np.array([[0.6, 0.3, 0.1], [0.2, 0.6, 0.2], [0.3, 0.2, 0.5]])
    objects = {'pong': ['ball', 'agent_paddle', 'opponent_paddle'],
               'pong-2balls-target': ['target', 'distractor', 'agent_paddle']}
    for k, train in enumerate(['pong', 'pong-2balls', 'pong-2balls-target']):
        for s in range(n_seeds):
            rows = []
            for game, objs in objects.items():
                h = np.clip(means[k if distinct else 0] + noise * rng.standard_normal(3), 0, None)
                rows += [dict(train_game=train, eval_game=game, step=1, method=Method.LRP_TWO_PASS,
                              object=o, hierarchical_norm=v) for o, v in zip(objs, h)]
                rows.append(dict(train_game=train, eval_game=game, step=1,
                                 method=Method.LRP_TWO_PASS, object='agent_paddle+ball',
                                 hierarchical_norm=np.nan))
            tables[f'{train}__a2c__nature__{s + 1}'] = pd.DataFrame(rows)
    return tables, {run: run.split('__')[0] for run in tables}


@pytest.mark.parametrize('n_seeds, distinct, expected', [
    (3, True, 'agree'),                  # clearly distinct profiles per training game
    (3, False, 'disagree'),              # one profile for all, up to seed noise
    (2, True, 'undecided: 2 seeds'),     # 3 games × 2 seeds: smallest exact p is 6/90
    (1, True, 'undecided: 1 seed'),
])
def test_crosseval_distinct_attention(n_seeds, distinct, expected):
    tables, games = crosseval_tables(n_seeds, distinct)
    result = crosseval_distinct_test(crosseval_profiles(tables), games, n_resamples=999)
    assert result['verdict'] == expected
    if expected in ('agree', 'disagree'):
        assert len(result['runs']) == 3 * n_seeds and len(result['per_eval']) == 2
        assert (result['contrast'] > 0.1) == (expected == 'agree')


def test_crosseval_distinct_attention_needs_two_games_and_tables():
    tables, games = crosseval_tables(3, True)
    one_game = {r: t for r, t in tables.items() if games[r] == 'pong'}
    assert crosseval_distinct_test(crosseval_profiles(one_game), games)['verdict'] == \
        'undecided: 1 game'
    assert crosseval_distinct_test({}, games)['verdict'] == 'undecided: no cross-evaluation'
    assert smallest_p([3, 3, 3]) < 0.05 <= smallest_p([2, 2, 2])
