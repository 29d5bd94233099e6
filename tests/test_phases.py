"Phases: change points found on synthetic trajectories, none on flat ones, rises, bad input."

import numpy as np, pandas as pd, pytest
from atoms.attention import Metric
from atoms.relevance import Method
from atoms.phases import (
    SCORE,
    CostTrend,
    boundary_consistency,
    detect_phases,
    log_schedule,
    paddle_rise,
    rise_lags,
    rise_step,
    score_rise,
    synthetic_trajectory,
    trajectory,
    log_logistic,
    load_trajectory,
    power_schedule,
    phase_costs,
)

LEVELS3 = {
    'ball': [0.2, 0.5, 0.5, 0.3],
    'agent_paddle': [0.1, 0.1, 0.3, 0.4],
    'opponent_paddle': [0.4, 0.2, 0.1, 0.1],
}


def tidy(traj, metric=Metric.HIERARCHICAL_NORM, method=Method.LRP_TWO_PASS):
    "ATOM table and log made from a trajectory."
    at = (
        traj.drop(columns=SCORE)
        .reset_index()
        .melt(id_vars='step', var_name='object', value_name='value')
    )
    lg = pd.DataFrame(
        {'global_step': traj.index.to_numpy(), 'charts/points_won_rate': traj[SCORE].to_numpy()}
    )
    return at.assign(metric=metric, method=method), lg


def first_after(steps, breaks):
    "Step of the first checkpoint at or after each break."
    return [int(steps[np.searchsorted(steps, b)]) for b in breaks]


# --- trajectories ---------------------------------------------------------------------------------


def test_trajectory_roundtrip_and_other_rows_ignored():
    syn = synthetic_trajectory(seed=3)
    at, lg = tidy(syn)
    other = tidy(syn, metric=Metric.COMBINATORIAL, method=Method.GRADIENT_TWO_PASS)[0]
    tr = trajectory(pd.concat([at, other]), lg)
    np.testing.assert_allclose(tr[syn.columns].to_numpy(), syn.to_numpy())
    assert tr.attrs['metric'] == Metric.HIERARCHICAL_NORM


def test_trajectory_score_from_nearest_log_row():
    syn = synthetic_trajectory(seed=0)
    at, lg = tidy(syn)
    lg = lg.assign(global_step=lg.global_step + 1)  # log rows one step after each checkpoint
    np.testing.assert_allclose(trajectory(at, lg)[SCORE], syn[SCORE])
    with pytest.raises(ValueError, match='no log row'):  # nothing at or before the first checkpoint
        trajectory(at, lg, direction='backward')


@pytest.mark.parametrize(
    'kw, msg',
    [
        (dict(metric=Metric.SHARE_POS), f"unknown metric '{Metric.SHARE_POS}'"),
        (dict(method=Method.OCCLUSION_TWO_PASS), f"unknown method '{Method.OCCLUSION_TWO_PASS}'"),
        (dict(objects=['ball', 'ghost']), "['ghost'] not in"),
    ],
)
def test_trajectory_bad_selection(kw, msg):
    at, lg = tidy(synthetic_trajectory())
    with pytest.raises(ValueError, match=msg.replace('[', r'\[').replace(']', r'\]')):
        trajectory(at, lg, **kw)


def test_trajectory_bad_tables():
    at, lg = tidy(synthetic_trajectory())
    with pytest.raises(ValueError, match='incomplete'):
        trajectory(at.drop(index=at.index[5]), lg)
    with pytest.raises(ValueError, match='duplicate'):
        trajectory(pd.concat([at, at.iloc[:1]]), lg)
    with pytest.raises(ValueError, match='lacks column'):
        trajectory(at, lg.drop(columns='charts/points_won_rate'))
    with pytest.raises(ValueError, match='must be a pandas DataFrame'):
        trajectory(at.to_numpy(), lg)


# --- change points --------------------------------------------------------------------------------


@pytest.mark.parametrize('model', ['l2', 'rbf', 'trend'])
@pytest.mark.parametrize('seed', [0, 1])
def test_three_change_points_recovered(model, seed):
    breaks = (5e3, 1e5, 2e6)
    tr = synthetic_trajectory(
        breaks=breaks, levels=LEVELS3, noise=0.02, steps=log_schedule(1e3, 1e7, 60), seed=seed
    )
    ph = detect_phases(tr, model=model)
    assert len(ph.boundaries) == 3, ph.boundaries
    np.testing.assert_allclose(np.log10(ph.boundaries), np.log10(breaks), atol=0.1)


@pytest.mark.parametrize('seed', [0, 1])
def test_change_points_on_the_training_schedule(seed):
    st = power_schedule(5e6, 100)  # from step 0, index ∝ √step
    breaks = (1e5, 1.5e6)
    tr = synthetic_trajectory(breaks=breaks, steps=st, width=0.03, seed=seed)
    ph = detect_phases(tr)
    assert len(ph.boundaries) == 2
    for b, t in zip(ph.boundaries, breaks):  # within one checkpoint of the truth
        i = np.searchsorted(st, t)
        assert st[i - 1] <= b <= st[i + 1]
    assert rise_step(tr, SCORE) > 0 and paddle_rise(tr) > 0


def test_load_trajectory(tmp_path):
    from atoms.core import ArtifactError, save_table

    syn = synthetic_trajectory(seed=2)
    at, lg = tidy(syn)
    save_table(at, tmp_path / 'atoms.parquet')
    save_table(lg, tmp_path / 'log.parquet')
    np.testing.assert_allclose(load_trajectory(tmp_path)[syn.columns].to_numpy(), syn.to_numpy())
    with pytest.raises(ArtifactError, match='file not found'):
        load_trajectory(tmp_path / 'missing')


def test_boundary_is_first_checkpoint_of_new_phase():
    st = log_schedule(1e3, 1e7, 60)
    breaks = (3e4, 6e5)
    tr = synthetic_trajectory(breaks=breaks, noise=0.005, steps=st, seed=4)
    ph = detect_phases(tr, model='l2')
    assert ph.boundaries == first_after(st, breaks)
    assert ph.idx == [int(np.searchsorted(st, b)) for b in breaks]
    assert ph.segments.n_checkpoints.sum() == len(st) and ph.segments.phase.tolist() == [1, 2, 3]


def test_forced_number_of_boundaries():
    tr = synthetic_trajectory(breaks=(3e4, 6e5), seed=5)
    assert detect_phases(tr, n_bkps=2).boundaries == detect_phases(tr).boundaries
    assert detect_phases(tr, n_bkps=0).boundaries == []
    with pytest.raises(ValueError, match='impossible'):
        detect_phases(tr, n_bkps=40)


def flat(seed, n=50, d=3):
    return synthetic_trajectory(
        breaks=(),
        levels={f'o{j}': [0.3] for j in range(d)},
        noise=0.05,
        steps=log_schedule(1e3, 1e7, n),
        seed=seed,
    )


@pytest.mark.parametrize('model', ['l2', 'rbf', 'trend'])
def test_flat_trajectory_no_phase_invented(model):
    n_false = sum(len(detect_phases(flat(s), model=model).boundaries) > 0 for s in range(10))
    assert n_false <= 1  # the calibrated null allows ~1-5 % false phases


def test_penalty_is_what_guards_against_false_phases():
    # the same detector with a far too small penalty does invent phases: the test above can fail
    assert (
        sum(len(detect_phases(flat(s), penalty=0.0, model='l2').boundaries) > 0 for s in range(3))
        == 3
    )
    assert (
        sum(
            len(detect_phases(flat(s), penalty='bic', model='l2').boundaries) > 0 for s in range(10)
        )
        <= 3
    )


@pytest.mark.parametrize('model', ['l2', 'rbf'])
def test_pelt_and_dynp_agree_on_the_number_of_phases(model):
    # two exact methods: PELT on the penalised problem, Dynp per K + the same penalty
    for tr in (
        synthetic_trajectory(
            breaks=(5e3, 1e5, 2e6), levels=LEVELS3, steps=log_schedule(1e3, 1e7, 50), seed=7
        ),
        flat(3, n=40),
    ):
        pc = phase_costs(tr, model=model, max_bkps=4)
        ph = detect_phases(tr, model=model)
        k = int(pc.n_bkps[pc.penalised.idxmin()])
        assert k == len(ph.boundaries) and pc.boundaries[k] == ph.boundaries


def test_trend_cost_matches_polyfit():
    y = np.random.default_rng(0).standard_normal((40, 2)).cumsum(0)
    c = CostTrend().fit(y)
    for s, e in [(0, 40), (4, 7), (10, 31)]:
        t = np.arange(s, e)
        ref = sum(
            ((y[s:e, j] - np.polyval(np.polyfit(t, y[s:e, j], 1), t)) ** 2).sum() for j in range(2)
        )
        assert c.error(s, e) == pytest.approx(ref, rel=1e-8, abs=1e-9)


@pytest.mark.parametrize(
    'mutate, msg',
    [
        (lambda t: t.iloc[:5], 'too few checkpoints'),
        (
            lambda t: t.assign(ball=np.where(np.arange(len(t)) == 7, np.nan, t.ball)),
            'NaN or infinite',
        ),
        (lambda t: t.drop(columns='ball'), r"\['ball'\] not in"),
        (lambda t: t.iloc[::-1], 'strictly increasing'),
        (lambda t: t[[SCORE]], 'no object columns'),
    ],
)
def test_detect_phases_bad_input(mutate, msg):
    tr = synthetic_trajectory()
    objs = ['ball'] if 'ball' in msg else None
    with pytest.raises(ValueError, match=msg):
        detect_phases(mutate(tr), objects=objs)


def test_detect_phases_bad_options():
    tr = synthetic_trajectory()
    with pytest.raises(ValueError, match='unknown model'):
        detect_phases(tr, model='normal')
    with pytest.raises(ValueError, match="penalty must be"):
        detect_phases(tr, penalty='aic')
    with pytest.raises(ValueError, match="'bic' is defined"):
        detect_phases(tr, penalty='bic', model='rbf')


# --- rises ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    'mid, w, frac', [(1e5, 0.2, 0.5), (3e4, 0.1, 0.5), (2e5, 0.15, 0.2), (1e5, 0.1, 0.8)]
)
def test_rise_of_a_logistic_at_its_known_crossing(mid, w, frac):
    st = log_schedule(1e2, 1e8, 121)  # 20 checkpoints per decade, tails far from mid
    tr = pd.DataFrame({'agent_paddle': 0.1 + 0.3 * log_logistic(st, mid, w)}, index=st)
    expected = np.log10(mid) + w * np.log(frac / (1 - frac))  # logistic⁻¹(frac), in decades
    assert np.log10(paddle_rise(tr, frac=frac)) == pytest.approx(expected, abs=0.01)


def test_rise_rules():
    st = log_schedule(1e3, 1e7, 60)
    x = log_logistic(st, 1e5, 0.1)
    spike = x.copy()
    spike[5] = 1.0
    tr = pd.DataFrame({'x': x, 'spike': spike, 'down': 1 - x, SCORE: x}, index=st)
    assert rise_step(tr, 'spike') == pytest.approx(
        rise_step(tr, 'x')
    )  # a lone spike is not the rise
    assert st[4] < rise_step(tr, 'spike', hold=1) < st[5]  # ...unless hold=1 says so
    assert np.isnan(rise_step(tr, 'down'))  # no rise, no invented step
    assert score_rise(tr) == pytest.approx(rise_step(tr, 'x'))
    with pytest.raises(ValueError, match='frac must be'):
        rise_step(tr, 'x', frac=0)
    with pytest.raises(ValueError, match='baseline must be'):
        rise_step(tr, 'x', baseline='max')
    with pytest.raises(ValueError, match='too few checkpoints'):
        rise_step(tr.iloc[:9], 'x')
    with pytest.raises(ValueError, match='NaN'):
        rise_step(tr.assign(x=np.nan), 'x')


def test_no_rise_in_noise():
    risen = [np.isfinite(rise_step(flat(s, d=1), 'o0')) for s in range(10)]
    assert sum(risen) <= 1
    assert rise_step(flat(0, d=1), 'o0', min_rise=0) > 0  # without the guard, noise "rises"


def test_rise_lags_across_seeds():
    trs = [
        synthetic_trajectory(
            breaks=(10**5.6,),
            levels={'agent_paddle': [0.1, 0.4]},
            width=0.1,
            noise=0.005,
            score=(0.1, 0.9, 10**5.1, 0.1),
            seed=s,
        )
        for s in range(5)
    ]
    rl = rise_lags(trs, names=list('abcde'))
    assert list(rl.runs.index) == list('abcde')
    lag = rl.summary.loc['lag_decades']
    assert lag.n == 5 and lag.estimate == pytest.approx(0.5, abs=0.05)
    assert lag.ci_low <= lag.estimate <= lag.ci_high
    one = rise_lags(trs[:1])
    assert one.summary.ci_low.isna().all() and one.summary.ci_high.isna().all()
    assert one.summary.loc['lag_decades', 'estimate'] == pytest.approx(rl.runs.lag_decades.iloc[0])
    with pytest.raises(ValueError, match='names for'):
        rise_lags(trs, names=['a'])


# --- consistency ----------------------------------------------------------------------------------


def test_boundary_consistency_scores():
    a = [1e4, 1e5, 1e6]
    shifted = [b * 10**0.1 for b in a]
    bc = boundary_consistency([a, shifted])
    assert bc.mean_distance == pytest.approx(0.1) and bc.mean_f1 == 1.0
    far = boundary_consistency([a, [b * 10**0.4 for b in a]], tol=0.25)
    assert far.mean_f1 == 0.0 and far.mean_distance == pytest.approx(0.4)
    part = boundary_consistency([a, a[:1]])
    assert part.pairs.f1[0] == pytest.approx(0.5)
    assert boundary_consistency([[], []]).mean_f1 == 1.0
    assert np.isnan(boundary_consistency([a, []]).mean_distance)
    with pytest.raises(ValueError, match='at least two'):
        boundary_consistency([a])
    with pytest.raises(ValueError, match='positive env steps'):
        boundary_consistency([a, [-1.0]])


def test_boundary_consistency_on_detected_phases():
    phs = [detect_phases(synthetic_trajectory(seed=s)) for s in range(3)]
    bc = boundary_consistency(phs, names=['x', 'y', 'z'])
    assert len(bc.pairs) == 3 and bc.mean_f1 == 1.0 and bc.mean_distance < 0.1


# --- seeds together -------------------------------------------------------------------------------


def test_seed_bands_mean_and_interval_over_seeds():
    from atoms.phases import seed_bands, t_interval
    seeds = [synthetic_trajectory(seed=s) for s in range(5)]
    bands = seed_bands(seeds)
    row = bands[(bands.column == 'agent_paddle')].iloc[30]
    values = [t.agent_paddle[row.step] for t in seeds]
    assert row.seeds == 5 and np.isclose(row['mean'], np.mean(values))
    assert np.allclose((row.lo, row.hi), t_interval(values))
    shorter = seed_bands([seeds[0], seeds[1].iloc[:40]])   # a seed that stopped early
    late = shorter[shorter.step > seeds[1].index[39]]
    assert (late.seeds == 1).all() and late.lo.isna().all()


def test_phase_leaders_and_their_agreement():
    from atoms.phases import leader_agreement, leader_sentence, phase_leaders
    runs = {f'g__a2c__{s}': detect_phases(synthetic_trajectory(seed=s)) for s in range(3)}
    runs['h__a2c__1'] = detect_phases(synthetic_trajectory(levels=LEVELS3, breaks=(1e4, 1e5, 1e6)))
    games = {r: r.split('__')[0] for r in runs}
    leaders = phase_leaders(runs, games)
    assert (leaders.share >= 0).all() and 'background' not in set(leaders.leader)
    agreement = leader_agreement(leaders).set_index(['game', 'position'])
    assert agreement.loc[('g', 'first')].leader == 'opponent_paddle'
    assert agreement.loc[('g', 'last')].agree == 3
    assert agreement.loc[('h', 'first')].leader == 'opponent_paddle'
    assert agreement.loc[('h', 'last')].leader == 'agent_paddle'   # LEVELS3's last phase
    assert 'g: the first phase is led by the opponent paddle in 3 of 3 seeds' in \
        leader_sentence(leader_agreement(leaders))


def test_load_runs_reads_cross_evaluations(tmp_path):
    from atoms.core import save_table
    from atoms.phases import CROSSEVAL_FILE, crosseval_profiles, load_runs
    for game in ('pong', 'pong-2balls'):
        run = tmp_path/f'{game}__a2c__nature__1'
        at, lg = tidy(synthetic_trajectory())
        save_table(at, run/'atoms.parquet')
        save_table(lg, run/'log.parquet')
    cross = pd.DataFrame(dict(train_game='pong', eval_game='pong', step=1, object=['ball', 'x+y'],
                              method=Method.LRP_TWO_PASS, hierarchical_norm=[0.5, np.nan]))
    save_table(cross, tmp_path/'pong__a2c__nature__1'/CROSSEVAL_FILE)
    runset = load_runs(tmp_path)
    assert list(runset.crosseval) == ['pong__a2c__nature__1']
    assert crosseval_profiles(runset.crosseval)['pong'].to_dict() == \
        {'ball': {'pong__a2c__nature__1': 0.5}}
