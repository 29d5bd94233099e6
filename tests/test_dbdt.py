"DBDT: oracle and random agents, bad scene specs, reproducibility, interception geometry, CIs, the `atoms dbdt` command."
import json, shlex
from dataclasses import asdict
import numpy as np, pandas as pd, pytest, torch, tyro
from scipy.stats import binomtest, norm, pearsonr
from atoms.policies import save_checkpoint
from atoms.training import TrainConfig, net_config
from atoms.core import artifacts_dir, load_table, read_manifest, save_manifest, sha256, verify_artifact, write_json, write_manifest
from atoms.dbdt import DBDTConfig, DBDT_FILES, bounce_height, dbdt, dbdt_command
from atoms.dbdt import (BEYOND_BRIGHTNESS, CONDITIONS, behaviour_claims, condition_config, dbdt_tables,
                        grey_control_table, with_condition)
from atoms.dbdt import (SceneSpec, cross_ticks, attention_behaviour, attention_logit, logistic_fit, check_spec, dbdt_trials, face_x, intercepts, make_scenes, net_agent,
                        oracle_agent, random_agent, run_trials, start_scenes, summarise, wilson, TWO_BALL_GAMES)
from atoms.games import GameConfig, PongVectorEnv
from atoms.nets import make_net
from helpers import flip_byte, folder_hashes

CFG = GameConfig('pong-2balls', frame_skip=2)


def rates(df):
    return summarise(df.assign(agent='x')).set_index('measure').rate


# --- the test measures what it should -----------------------------------------------------------------

@pytest.mark.parametrize('game', TWO_BALL_GAMES)
def test_oracle_follows_its_ball(game):
    r = rates(dbdt_trials(oracle_agent(0), game, trials=300, seed=3)[0])
    assert r['follows_a'] >= 0.95 and r['returns_a'] >= 0.9 and r['returns_b'] <= 0.05
    r = rates(dbdt_trials(oracle_agent(1), game, trials=300, seed=3)[0])
    assert r['follows_a'] <= 0.05
    r = rates(dbdt_trials(oracle_agent('first'), game, trials=300, seed=3)[0])
    assert r['follows_first'] >= 0.95 and 0.35 <= r['follows_a'] <= 0.65     # order and identity are independent


def test_random_agent_is_at_chance():
    df = dbdt_trials(random_agent(5), 'pong-2balls-target', trials=600, seed=1)[0]
    s = summarise(df.assign(agent='random')).set_index('measure')
    for m in ('follows_a', 'follows_first', 'follows_upper'):
        assert s.loc[m, 'lo'] < 0.5 < s.loc[m, 'hi'], (m, s.loc[m].to_dict())
    assert s.loc['follows_a', 'n'] >= 590                                    # ties are rare


def test_scene_draws_are_balanced_and_unconfounded():
    _, meta = make_scenes(4000, CFG, seed=0)
    tab = pd.crosstab(meta['first'], meta['upper'], normalize=True).to_numpy()
    np.testing.assert_allclose(tab, 0.25, atol=0.02)
    assert (meta.ticks_0 != meta.ticks_1).all()
    lo, hi = SceneSpec().separation
    assert meta.separation.between(lo, hi).all()


# --- bad input ------------------------------------------------------------------------------------------

@pytest.mark.parametrize('spec, msg', [
    (SceneSpec(separation=(0.5, 10.)), 'overlap at the paddle'),
    (SceneSpec(separation=(20., 100.)), 'does not fit in the field'),
    (SceneSpec(arrival=(30, 40)), "behind the opponent's paddle"),
    (SceneSpec(gap=(0, 3)), 'strictly first'),
    (SceneSpec(vy=(-1., 1.)), 'speed magnitude'),
    (SceneSpec(arrival=(10.5, 12)), 'whole ticks'),
    (SceneSpec(separation=(30., 20.)), 'lo <= hi'),
])
def test_bad_specs_fail_clearly(spec, msg):
    with pytest.raises(ValueError, match=msg): check_spec(spec, CFG)
    with pytest.raises(ValueError, match=msg): dbdt_trials(oracle_agent(0), trials=4, spec=spec)


def test_bad_scenes_fail_clearly():
    scene, _ = make_scenes(2, CFG, seed=0)
    env = PongVectorEnv(2, config=CFG)
    overlap = {k: v.copy() for k, v in scene.items()}; overlap['ball_x'][0] = 40.; overlap['ball_y'][0] = 30.
    with pytest.raises(ValueError, match='the two balls overlap'): run_trials(oracle_agent(0)(env), env, overlap)
    outside = {k: v.copy() for k, v in scene.items()}; outside['ball_x'][1, 1] = -3.
    with pytest.raises(ValueError, match='ball must lie in'): run_trials(oracle_agent(0)(env), env, outside)
    away = {k: v.copy() for k, v in scene.items()}; away['ball_vx'][0, 0] = -2.
    with pytest.raises(ValueError, match='towards the agent'): run_trials(oracle_agent(0)(env), env, away)
    with pytest.raises(ValueError, match='two-ball game'): dbdt_trials(oracle_agent(0), 'pong', trials=2)
    with pytest.raises(ValueError, match='unknown game'): dbdt_trials(oracle_agent(0), 'tennis', trials=2)


# --- reproducibility --------------------------------------------------------------------------------------

def test_same_seed_same_results_any_batching():
    a = dbdt_trials(random_agent(0), trials=120, seed=7, num_envs=120)[0]
    b = dbdt_trials(random_agent(0), trials=120, seed=7, num_envs=120)[0]
    pd.testing.assert_frame_equal(a, b)
    c = dbdt_trials(random_agent(0), trials=120, seed=8, num_envs=120)[0]
    assert not a[['intercept_0', 'intercept_1']].equals(c[['intercept_0', 'intercept_1']])
    o1 = dbdt_trials(oracle_agent(0), trials=50, seed=2, num_envs=50)[0]
    o2 = dbdt_trials(oracle_agent(0), trials=50, seed=2, num_envs=7)[0]
    pd.testing.assert_frame_equal(o1, o2)


def test_sampling_policy_reproducible():
    torch.manual_seed(0); net = make_net('actor_critic', net_config(TrainConfig()))
    a = dbdt_trials(net_agent(net, 'sample', seed=1), trials=40, seed=0)[0]
    b = dbdt_trials(net_agent(net, 'sample', seed=1), trials=40, seed=0)[0]
    pd.testing.assert_frame_equal(a, b)
    with pytest.raises(ValueError, match="mode must be 'greedy' or 'sample'"): net_agent(net, 'argmax')


# --- geometry ------------------------------------------------------------------------------------------------

def test_bounce_height_matches_stepwise_bouncing():
    "The closed form φ equals a ball moved tick by tick and reflected off 0 and the span."
    span, y0, vy = 82., 30., 1.7
    y, v = y0, vy
    for t in range(1, 300):
        y += v
        if y < 0: y, v = -y, -v
        elif y > span: y, v = 2*span - y, -v
        height, direction = bounce_height(y0 + vy * t, span)
        assert height == pytest.approx(y, abs=1e-9) and direction == np.sign(v)


@pytest.mark.parametrize('frame_skip', [1, 2, 3])
def test_intercepts_match_the_engine(frame_skip):
    "Predicted interception points equal the height at which the engine moves each ball across the paddle plane."
    cfg = GameConfig('pong-2balls', frame_skip=1)
    n = 40; rng = np.random.default_rng(frame_skip)
    env = PongVectorEnv(n, config=cfg); env.reset(seed=0)
    e = env.engine
    env.set_scene(ball_x=np.stack([rng.uniform(5, 35, n), rng.uniform(40, 70, n)], 1), ball_y=rng.uniform(0, 82, (n, 2)),
                  ball_vx=2.0, ball_vy=rng.uniform(-2.5, 2.5, (n, 2)), agent_y=rng.uniform(0, 72, n))
    pred, seen = intercepts(e), np.full((n, 2), np.nan)
    for _ in range(50):
        x0, vx0 = e.ball_x.copy(), e.ball_vx.copy()
        env.step(rng.integers(0, 3, n))
        crossed = np.isnan(seen) & (vx0 > 0) & (x0 <= face_x(cfg)) & ((e.ball_x > face_x(cfg)) | (e.ball_vx < 0))
        seen[crossed] = e.ball_y[crossed]
    assert not np.isnan(seen).any()
    np.testing.assert_allclose(pred, seen, atol=1e-9)


def test_crossing_tick_on_exact_boundary():
    "A ball that lands exactly on the plane crosses it on the next tick, as the engine's hit check does."
    env = PongVectorEnv(1, config=GameConfig('pong-2balls', frame_skip=1)); env.reset(seed=0)
    env.set_scene(ball_x=np.array([[face_x(env.cfg) - 4, 30.]]), ball_vx=2.0, ball_vy=0., ball_y=np.array([[10., 60.]]), agent_y=4.)
    np.testing.assert_array_equal(cross_ticks(env.engine)[0, 0], 3)
    for _ in range(2): env.step(np.zeros(1, int))
    assert env.engine.ball_vx[0, 0] > 0                                        # on the plane, not yet hit
    env.step(np.zeros(1, int))
    assert env.engine.ball_vx[0, 0] < 0                                        # hit on tick 3


@pytest.mark.parametrize('frame_skip', [1, 2, 3])
def test_scenes_cross_when_and_where_drawn(frame_skip):
    cfg = GameConfig('pong-2balls-target', frame_skip=frame_skip)
    spec = SceneSpec(arrival=(6, 12), gap=(2, 6))
    scene, meta = make_scenes(64, cfg, spec, seed=4)
    env = PongVectorEnv(64, config=cfg); obs, labels = start_scenes(env, scene)
    np.testing.assert_allclose(intercepts(env.engine), meta[['intercept_0', 'intercept_1']].to_numpy(), atol=1e-9)
    ticks = cross_ticks(env.engine)
    np.testing.assert_array_equal(ticks, meta[['ticks_0', 'ticks_1']].to_numpy())
    np.testing.assert_array_equal(cfg.greys[labels], obs)                     # labels of every stacked frame
    df = dbdt_trials(oracle_agent(0), cfg.game, 64, 4, spec, frame_skip=frame_skip)[0]
    np.testing.assert_array_equal(df.arrive_step_0, np.ceil(meta.ticks_0 / frame_skip))


# --- statistics ------------------------------------------------------------------------------------------------

def test_wilson_matches_scipy():
    for k, n in [(0, 10), (3, 10), (50, 200), (200, 200)]:
        ci = binomtest(k, n).proportion_ci(method='wilson')
        np.testing.assert_allclose(wilson(k, n, z=norm.ppf(0.975)), (ci.low, ci.high), atol=1e-9)


def test_attention_behaviour_is_pearson_of_difference():
    rng = np.random.default_rng(0)
    x = rng.normal(size=300)
    df = pd.DataFrame({'m_a': x + 1, 'm_b': 1.0, 'followed': (rng.random(300) > 1 / (1 + np.exp(-2 * x))).astype(int)})
    r = attention_behaviour(df, 'm', n_boot=500)
    assert r['r'] == pytest.approx(pearsonr(x, (df.followed == 0).astype(float))[0])
    assert r['lo'] < r['r'] < r['hi'] and r['lo'] > 0
    assert r['n'] == 300 and r['diff_when_a'] > r['diff_when_b']
    assert np.isnan(attention_behaviour(df.assign(followed=1), 'm')['r'])
    ties = df.assign(followed=np.where(np.arange(300) < 100, -1, df.followed))
    assert attention_behaviour(ties, 'm')['n'] == 200


def test_logistic_fit_matches_direct_maximisation():
    from scipy.optimize import minimize
    rng = np.random.default_rng(3); n = 2000
    X = np.column_stack([np.ones(n), rng.normal(size=n), rng.integers(0, 2, n) - 0.5])
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ [0.3, 1.0, -1.2])))).astype(float)
    ref = minimize(lambda b: np.sum(np.logaddexp(0, X @ b) - y * (X @ b)), np.zeros(3), method='BFGS', options={'gtol': 1e-8}).x
    b, se, ok = logistic_fit(X, y)
    assert ok and np.allclose(b, ref, atol=1e-4) and (se > 0).all()
    b, se, ok = logistic_fit(X, (X[:, 2] > 0).astype(float))                 # perfectly separated
    assert not ok and np.isnan(b).all()


def test_attention_logit_controls_for_order():
    "Attention that only mirrors arrival order has no effect once order is controlled for."
    rng = np.random.default_rng(0); n = 3000
    first = rng.integers(0, 2, n)
    df = pd.DataFrame({'first': first, 'upper': rng.integers(0, 2, n), 'nearest': rng.integers(0, 2, n),
                       'm_a': (first == 0) + rng.normal(0, 0.5, n), 'm_b': 0.0,
                       'followed': np.where(rng.random(n) < np.where(first == 0, 0.8, 0.2), 0, 1)})
    assert attention_behaviour(df, 'm', n_boot=200)['r'] > 0.3                    # the raw correlation is strong …
    r = attention_logit(df, 'm')
    assert r['converged'] and r['lo'] < 0 < r['hi'], r                             # … the controlled effect is nil
    assert attention_logit(df, 'm', controls=())['lo'] > 0


# --- the command --------------------------------------------------------------------------------------------------

def _run_folder(tmp_path, **cfg):
    tc = TrainConfig(game='pong-2balls-target', **cfg)
    torch.manual_seed(0); net = make_net('actor_critic', net_config(tc))
    run = tmp_path/'pong-2balls-target__a2c__1'
    for step in (0, 4000):
        save_checkpoint(net, run/'checkpoints'/f'step_{step:09d}.safetensors', step, tc)
    write_json(run/'config.json', asdict(tc))
    write_manifest(run, command='a stand-in for atoms train', config=asdict(tc))
    return run




def cli_error(capsys, argv, monkeypatch=None):
    "Run `atoms` in-process expecting a clean error: (exit code, stderr lines); the test must not run."
    from atoms.cli import main
    if monkeypatch is not None:
        def no_play(*a, **k): raise AssertionError('the test ran before the error was found')
        monkeypatch.setattr('atoms.dbdt.game_results', no_play)
    with pytest.raises(SystemExit) as e: main(argv)
    return e.value.code, capsys.readouterr().err.strip().splitlines()


def test_cli_writes_tables_and_manifest(tmp_path, capsys):
    from atoms.cli import main
    run = _run_folder(tmp_path, frames=2, frame_skip=3)
    main(['dbdt', str(run), '--trials', '10', '--num_envs', '4', '--no-progress', '--games', 'pong-2balls-target'])
    out = run/'dbdt'
    assert capsys.readouterr().out.strip() == str(out)
    m = verify_artifact(out)
    assert sorted(m['files']) == ['dbdt.parquet', 'dbdt_attention.parquet', 'dbdt_summary.parquet']
    assert m['step'] == 4000 and m['checkpoint'].endswith('step_000004000.safetensors') and m['seed'] == 0
    df = load_table(out/'dbdt.parquet')
    assert len(df) == 20 and set(df.agent) == {'pong-2balls-target__a2c__1@4000'}
    assert df.groupby('condition').size().to_dict() == {'normal': 10, 'swapped': 10}          # the grey control by default
    assert {'hierarchical_norm_a', 'share_pos_b', 'followed', 'returned_0'} <= set(df.columns)
    np.testing.assert_array_equal(df.arrive_step_0, np.ceil(df.ticks_0 / 3))        # the run's frame_skip
    s = load_table(out/'dbdt_summary.parquet')
    assert set(s.measure) >= {'follows_a', 'follows_first', 'returns_a'} and (s.n <= 10).all()
    att = load_table(out/'dbdt_attention.parquet')
    assert set(att.metric) == {'hierarchical_norm', 'share_pos'} and {'r', 'lo', 'hi', 'logit_coef', 'logit_converged'} <= set(att.columns)


def test_cli_reproducible_and_first_checkpoint(tmp_path):
    from atoms.cli import main
    run = _run_folder(tmp_path)
    args = ['dbdt', str(run), '--trials', '8', '--no-progress', '--no-attention', '--checkpoint', 'first', '--out']
    main(args + [str(tmp_path/'a')]); main(args + [str(tmp_path/'b')])
    a, b = load_table(tmp_path/'a'/'dbdt.parquet'), load_table(tmp_path/'b'/'dbdt.parquet')
    pd.testing.assert_frame_equal(a, b)
    assert set(a.step) == {0} and len(a) == 24 and not (tmp_path/'a'/'dbdt_attention.parquet').exists()


@pytest.mark.parametrize('args, msg', [(['--checkpoint', '7'], 'no checkpoint at step 7'),
                                       (['--checkpoint', 'latest'], "checkpoint must be 'last'"),
                                       (['--trials', '0'], 'trials and num_envs must be >= 1'),
                                       (['--scene.gap', '0', '2'], 'strictly first')])
def test_cli_bad_input(tmp_path, capsys, args, msg):
    from atoms.cli import main
    run = _run_folder(tmp_path)
    with pytest.raises(SystemExit) as e: main(['dbdt', str(run), '--no-progress', '--no-attention'] + args)
    assert e.value.code == 2 and msg in capsys.readouterr().err


def test_cli_missing_run(tmp_path, capsys):
    from atoms.cli import main
    with pytest.raises(SystemExit): main(['dbdt', str(tmp_path/'nope'), '--no-progress'])
    assert 'no checkpoints' in capsys.readouterr().err


def test_cli_corrupt_checkpoint(tmp_path, capsys):
    from atoms.cli import main
    run = _run_folder(tmp_path)
    (run/'checkpoints'/'step_000004000.safetensors').write_bytes(b'not a checkpoint')
    with pytest.raises(SystemExit) as e: main(['dbdt', str(run), '--no-progress'])
    assert e.value.code == 2 and 'step_000004000.safetensors' in capsys.readouterr().err


# --- hardening: what it reads is verified first, nothing written on an error ------------------------------



@pytest.mark.parametrize('damage', ['flip', 'truncate', 'delete_manifest', 'config'])
def test_verifies_the_run_before_it_plays(tmp_path, capsys, monkeypatch, damage):
    run = _run_folder(tmp_path)
    ckpt = run/'checkpoints'/'step_000004000.safetensors'
    named = {'flip': ckpt, 'truncate': ckpt, 'delete_manifest': run/'manifest.json', 'config': run/'config.json'}[damage]
    if damage == 'flip': flip_byte(ckpt, at=-100)
    elif damage == 'truncate': ckpt.write_bytes(ckpt.read_bytes()[:1000])
    elif damage == 'delete_manifest': (run/'manifest.json').unlink()
    else: (run/'config.json').write_text(json.dumps({**json.loads((run/'config.json').read_text()), 'game': 'pong'}))
    before = folder_hashes(tmp_path)
    code, err = cli_error(capsys, ['dbdt', str(run), '--no-progress', '--trials', '4'], monkeypatch)
    assert code != 0 and len(err) == 1 and str(named) in err[0], err
    assert folder_hashes(tmp_path) == before


def test_another_runs_checkpoint_is_refused_even_with_a_forged_manifest(tmp_path, capsys, monkeypatch):
    run = _run_folder(tmp_path)
    tc = TrainConfig(game='pong')
    torch.manual_seed(1)
    net = make_net('actor_critic', net_config(tc))
    ckpt = run/'checkpoints'/'step_000004000.safetensors'
    save_checkpoint(net, ckpt, 4000, tc)                                 # a pong agent renamed into the run
    m = read_manifest(run)
    m['files']['checkpoints/step_000004000.safetensors'] = sha256(ckpt)
    save_manifest(run, m)                                                # and its hash forged, re-sealed
    before = folder_hashes(tmp_path)
    code, err = cli_error(capsys, ['dbdt', str(run), '--no-progress'], monkeypatch)
    assert code != 0 and len(err) == 1 and 'step_000004000.safetensors' in err[0] and 'not of this run' in err[0], err
    assert folder_hashes(tmp_path) == before


def test_stray_final_checkpoint_is_an_error_naming_it(tmp_path, capsys, monkeypatch):
    run = _run_folder(tmp_path)
    (run/'checkpoints'/'step_final.safetensors').write_bytes((run/'checkpoints'/'step_000004000.safetensors').read_bytes())
    before = folder_hashes(tmp_path)
    for which in ('last', 'first', '4000'):
        code, err = cli_error(capsys, ['dbdt', str(run), '--no-progress', '--checkpoint', which], monkeypatch)
        assert code != 0 and len(err) == 1 and 'step_final.safetensors' in err[0], err
    assert folder_hashes(tmp_path) == before


@pytest.mark.parametrize('where', ['file', 'under_a_file', 'run', 'parent', 'foreign'])
def test_bad_out_fails_before_the_test_runs(tmp_path, capsys, monkeypatch, where):
    run = _run_folder(tmp_path)
    (tmp_path/'notes.txt').write_text('mine')
    (tmp_path/'es').mkdir()
    write_manifest(tmp_path/'es', command='atoms evalset --game pong')
    out = {'file': tmp_path/'notes.txt', 'under_a_file': tmp_path/'notes.txt'/'dbdt', 'run': run,
           'parent': tmp_path, 'foreign': tmp_path/'es'}[where]
    before = folder_hashes(tmp_path)
    code, err = cli_error(capsys, ['dbdt', str(run), '--no-progress', '--out', str(out)], monkeypatch)
    assert code != 0 and len(err) == 1 and str(out) in err[0], err
    assert folder_hashes(tmp_path) == before


def test_recorded_command_reruns_as_printed(tmp_path):
    from atoms.cli import main
    run = _run_folder(tmp_path)
    cfg = DBDTConfig(str(run), trials=6, num_envs=4, progress=False, attention=False, games=('pong-2balls',),
                     out=str(tmp_path/'a b'))
    out = dbdt(cfg)
    command = read_manifest(out)['command']
    assert command == dbdt_command(cfg)
    assert tyro.cli(DBDTConfig, args=shlex.split(command)[2:]) == cfg
    first = load_table(out/'dbdt.parquet')
    main(shlex.split(command)[1:])                                       # re-run exactly as printed
    pd.testing.assert_frame_equal(load_table(out/'dbdt.parquet'), first)


def test_manifest_lists_only_what_dbdt_wrote(tmp_path):
    run = _run_folder(tmp_path)
    run_manifest = (run/'manifest.json').read_bytes()
    cfg = DBDTConfig(str(run), trials=6, num_envs=4, progress=False, games=('pong-2balls',))
    out = dbdt(cfg)
    (out/'notes.txt').write_text('a reader\'s notes')
    dbdt(cfg)                                                            # same settings: rerun allowed
    m = verify_artifact(out)
    assert sorted(m['files']) == sorted(DBDT_FILES) and not m['commands']['dbdt']['in_progress']
    assert (run/'manifest.json').read_bytes() == run_manifest           # the run's own manifest untouched
    out2 = dbdt(DBDTConfig(str(run), trials=6, num_envs=4, progress=False, games=('pong-2balls',),
                           attention=False, out=str(tmp_path/'b')))
    assert sorted(verify_artifact(out2)['files']) == ['dbdt.parquet', 'dbdt_summary.parquet']


def test_rerun_with_other_settings_is_refused_not_mixed(tmp_path, capsys):
    run = _run_folder(tmp_path)
    dbdt(DBDTConfig(str(run), trials=6, num_envs=4, progress=False, attention=False, games=('pong-2balls',)))
    before = folder_hashes(tmp_path)
    code, err = cli_error(capsys, ['dbdt', str(run), '--no-progress', '--no-attention', '--trials', '7',
                                   '--games', 'pong-2balls'])
    assert code != 0 and len(err) == 1 and 'other settings' in err[0] and 'trials: 6 -> 7' in err[0], err
    assert folder_hashes(tmp_path) == before


# --- the committed results ------------------------------------------------------------------------------------

def test_committed_tables_are_what_the_code_produces(tmp_path):
    "`atoms dbdt` on a committed run gives its committed tables: behaviour exactly, attention to 1e-5."
    run = artifacts_dir()/'runs'/'pong__a2c__1'
    if not (run/'dbdt'/'manifest.json').exists(): pytest.skip('no committed DBDT tables for pong__a2c__1')
    seed = read_manifest(run/'dbdt')['config'].get('relevance_seed', 'output')   # 'output' before it was recorded
    out = dbdt(DBDTConfig(str(run), out=str(tmp_path), relevance_seed=seed, progress=False))
    def committed(name): return with_condition(load_table(run/'dbdt'/name))   # older: training greys only
    def ours(name):
        table = with_condition(load_table(out/name))
        return table[table.condition.isin(set(committed(name).condition))].reset_index(drop=True)
    for name in ('dbdt.parquet', 'dbdt_summary.parquet', 'dbdt_attention.parquet'):
        pd.testing.assert_frame_equal(ours(name), committed(name), check_exact=False, rtol=0, atol=1e-5)
    new, old = ours('dbdt.parquet'), committed('dbdt.parquet')
    behaviour = [c for c in old.columns if not c.startswith(('hierarchical_norm', 'share_pos'))]
    pd.testing.assert_frame_equal(new[behaviour], old[behaviour], check_exact=True)
    pd.testing.assert_frame_equal(ours('dbdt_summary.parquet'),                  # statsmodels' Wilson
                                  committed('dbdt_summary.parquet'),  # differs ~1e-16
                                  check_exact=False, rtol=0, atol=1e-12)
    assert set(load_table(out/'dbdt.parquet').condition) == set(CONDITIONS)


# --- the grey control: target or bright? ------------------------------------------------------------------------

def test_swapped_scenes_are_the_same_scenes_with_the_ball_greys_exchanged():
    normal, swapped = (condition_config('pong-2balls-target', c, frame_skip=2) for c in CONDITIONS)
    scene, _ = make_scenes(16, normal, seed=5)
    obs_n, labels_n = start_scenes(PongVectorEnv(16, config=normal), scene)
    obs_s, labels_s = start_scenes(PongVectorEnv(16, config=swapped), scene)
    np.testing.assert_array_equal(labels_n, labels_s)                                  # same geometry
    exchanged = np.where(obs_n == 236, 90, np.where(obs_n == 90, 236, obs_n))
    np.testing.assert_array_equal(obs_s, exchanged)                                    # only the greys differ
    assert (obs_n == 236).any() and (obs_n == 90).any()
    with pytest.raises(ValueError, match='needs two ball greys'): condition_config('pong-2balls', 'swapped')


def test_grey_control_tells_target_follower_from_bright_follower():
    "An oracle that reads which ball is the target and one that goes for the brighter ball: same rates with the training greys, told apart by the swap."
    trials = []
    for name, agent in (('pong-2balls-target__oracle__1', oracle_agent(0)), ('pong__oracle__1', oracle_agent('bright'))):
        for condition in CONDITIONS:
            df = dbdt_trials(agent, 'pong-2balls-target', trials=40, seed=11, num_envs=40, condition=condition)[0]
            trials.append(df.assign(agent=f'{name}@0'))
    summary = summarise(pd.concat(trials, ignore_index=True))
    normal = summary[(summary.condition == 'normal') & (summary.measure == 'follows_a')].rate
    assert (normal >= 0.95).all()                                                      # indistinguishable …
    table = grey_control_table(summary).set_index('trained')
    assert table.cue.to_dict() == {'pong-2balls-target': 'target', 'pong': 'bright'}   # … until the greys swap
    assert table.loc['pong-2balls-target', 'rate_swapped'] >= 0.95 and table.loc['pong', 'rate_swapped'] <= 0.05
    assert table.loc['pong', 'rate_bright'] >= 0.95 and 0.4 <= table.loc['pong-2balls-target', 'rate_bright'] <= 0.6


def test_grey_control_criterion_writes_its_headings():
    from atoms.phases import claim_heading
    assert claim_heading(BEYOND_BRIGHTNESS, 'agree') == BEYOND_BRIGHTNESS.holds != BEYOND_BRIGHTNESS.fails
    assert claim_heading(BEYOND_BRIGHTNESS, 'undecided: 0 seeds').endswith('Not decided yet (0 seeds)')


def test_legacy_tables_without_condition_load_as_normal():
    summary, attention, skills = dbdt_tables(artifacts_dir()/'runs')
    assert set(summary.condition) <= set(CONDITIONS) and set(attention.condition) <= set(CONDITIONS)
    claims, details = behaviour_claims(summary, attention, skills, control=True)
    assert list(claims.index) == ['behaviour', 'control', 'predicts']
    assert list(behaviour_claims(summary, attention, skills)[0].index) == ['behaviour', 'predicts']
    # a legacy table: the normal condition's rows without the column
    legacy = summary[summary.condition == 'normal'].drop(columns='condition')
    legacy_attention = attention[attention.condition == 'normal'].drop(columns='condition')
    claims_legacy, _ = behaviour_claims(legacy, legacy_attention, skills, control=True)
    pd.testing.assert_frame_equal(claims.drop(index='control'), claims_legacy.drop(index='control'))
    if 'swapped' not in set(summary.condition):
        assert claims.loc['control', 'verdict'] == 'undecided: 0 seeds'
        assert claims.loc['control', 'claim'] == BEYOND_BRIGHTNESS.claim
    every = dbdt_tables(artifacts_dir()/'runs', net='all')[0]
    assert set(every.net) >= set(summary.net) and len(every) >= len(summary)


# --- statsmodels in place of the hand-written statistics ------------------------------------------------------

def hand_wilson(k, n, z=1.96):
    "The hand-written Wilson interval the module had before statsmodels (kept here as the reference)."
    k, n = np.asarray(k, float), np.asarray(n, float)
    p = k / n
    den = 1 + z**2 / n
    mid = (p + z**2 / (2*n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / den
    return mid - half, mid + half


def hand_logistic_fit(X, y, max_iter=100, tol=1e-10, max_coef=30.):
    "The hand-written Newton-Raphson logistic regression the module had before statsmodels."
    coef = np.zeros(X.shape[1])
    def hessian(c):
        p = 1 / (1 + np.exp(-(X @ c)))
        return p, (X * (p * (1 - p))[:, None]).T @ X
    for _ in range(max_iter):
        p, h = hessian(coef)
        step = np.linalg.solve(h, X.T @ (y - p))
        coef = coef + step
        if np.abs(coef).max() > max_coef: break
        if np.abs(step).max() < tol: return coef, np.sqrt(np.diag(np.linalg.pinv(hessian(coef)[1]))), True
    return np.full_like(coef, np.nan), np.full_like(coef, np.nan), False


def test_statsmodels_wilson_equals_the_hand_written_one():
    k, n = np.array([0, 1, 7, 50, 159, 177, 199, 200]), np.array([10, 3, 9, 100, 200, 200, 200, 200])
    np.testing.assert_allclose(np.array(wilson(k, n)), np.array(hand_wilson(k, n)), rtol=0, atol=1e-15)


@pytest.mark.parametrize('seed, coef', [(0, [0.3, 1.0, -1.2]), (1, [-0.5, 0.2, 0.0]), (2, [1.0, -2.0, 0.7])])
def test_statsmodels_logit_equals_the_hand_written_newton(seed, coef):
    rng = np.random.default_rng(seed); n = 800
    X = np.column_stack([np.ones(n), rng.normal(size=n), rng.integers(0, 2, n) - 0.5])
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ coef)))).astype(float)
    new, old = logistic_fit(X, y), hand_logistic_fit(X, y)
    assert new[2] and old[2]
    np.testing.assert_allclose(new[0], old[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(new[1], old[1], rtol=0, atol=1e-6)
