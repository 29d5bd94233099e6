"Cross-evaluation: a run's final agent on every game's evaluation set (tiny run, three tiny sets)."
import shlex, shutil
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pytest
import torch
import tyro

import atoms.analysis as analysis
from atoms.analysis import (CROSSEVAL_KEYS, AnalyseConfig, CrossEvalConfig, PackageConfig, analyse,
                            crosseval, package_run, wide_atoms)
from atoms.cli import main
from atoms.core import ArtifactError, load_table, read_manifest, save_manifest, verify_artifact
from atoms.games import GAMES
from helpers import copy_run, flip_byte, folder_hashes, tiny_run_and_eval_sets

torch.set_num_threads(1)
FINAL = 'checkpoints/step_000000480.safetensors'


@pytest.fixture(scope='module')
def made(tmp_path_factory):
    "A tiny trained pong run and a four-frame evaluation set of every game, made once."
    tmp = tmp_path_factory.mktemp('made')
    run, _ = tiny_run_and_eval_sets(tmp, GAMES, n=4)
    return run, tmp/'eval'


@pytest.fixture
def run(made, tmp_path):
    "A fresh copy of the tiny run."
    return copy_run(made[0], tmp_path)


@pytest.fixture
def root(made):
    return str(made[1])


def config(run, root, **kw):
    return CrossEvalConfig(str(run), eval_root=root, n_frames=3, progress=False, **kw)


def test_own_game_rows_equal_the_final_checkpoint_rows_of_the_analysis(run, root):
    "The agent on its own game's frames: exactly the analysis of its final checkpoint."
    analyse(AnalyseConfig(str(run), eval_dir=f'{root}/pong', n_frames=3, map_checkpoints=0,
                          progress=False))
    table = load_table(crosseval(config(run, root)))
    atoms = load_table(run/'atoms.parquet')
    own = wide_atoms(atoms[atoms.step == 480])
    same = table[table.eval_game == 'pong'].drop(columns=['train_game', 'eval_game'])
    pd.testing.assert_frame_equal(same.reset_index(drop=True), own, check_exact=True)


def test_every_game_with_its_own_objects(run, root, made):
    table = load_table(crosseval(config(run, root)))
    assert list(table.columns[:5]) == CROSSEVAL_KEYS
    assert {'share_pos_skipped', 'share_abs_skipped', 'hierarchical_norm'} <= set(table.columns)
    assert set(table.train_game) == {'pong'} and set(table.step) == {480}
    assert set(table.method) == {'lrp_two_pass', 'lrp_action'}
    for game in GAMES:
        rows = table[(table.eval_game == game) & table.hierarchical_norm.notna()]
        objects = set(read_manifest(made[1]/game)['objects'])
        assert set(rows.object) == objects, game
        for _, one in rows.groupby('method'):
            assert one.hierarchical_norm.sum() == pytest.approx(1.0)


def test_manifest_records_a_rerunnable_command(run, root):
    out = crosseval(config(run, root, games=('pong-2balls',))).parent
    assert out == run/'crosseval'
    m = verify_artifact(out)
    assert m['config'] == {k: list(v) if isinstance(v, tuple) else v
                           for k, v in asdict(config(run, root, games=('pong-2balls',))).items()}
    assert m['seed'] == 1 and m['git_revision'] and m['train_game'] == 'pong' and m['step'] == 480
    words = shlex.split(m['command'])
    assert words[:2] == ['atoms', 'crosseval']
    parsed = tyro.cli(CrossEvalConfig, args=words[2:])                  # progress is not recorded
    assert parsed == CrossEvalConfig(str(run), ('pong-2balls',), eval_root=root, n_frames=3)


def test_a_kill_between_games_keeps_the_finished_games(run, root, monkeypatch, tmp_path):
    clean = load_table(crosseval(config(run, root, out=str(tmp_path/'clean'))))
    real, calls = analysis.save_table, [0]
    def killed_at_second(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 2: raise KeyboardInterrupt('killed after the first game')
        return real(*args, **kwargs)
    monkeypatch.setattr(analysis, 'save_table', killed_at_second)
    with pytest.raises(KeyboardInterrupt):
        crosseval(config(run, root))
    monkeypatch.undo()
    kept = load_table(run/'crosseval'/'crosseval.parquet')
    assert set(kept.eval_game) == {GAMES[0]}
    assert read_manifest(run/'crosseval')['commands']['crosseval']['in_progress'] is True
    real_rows, computed = analysis.game_rows, []
    def counted(agent, game, *args):
        computed.append(game)
        return real_rows(agent, game, *args)
    monkeypatch.setattr(analysis, 'game_rows', counted)
    resumed = load_table(crosseval(config(run, root)))
    assert computed == list(GAMES[1:])                                  # the first game not redone
    pd.testing.assert_frame_equal(resumed, clean, check_exact=True)


def test_other_settings_are_refused_and_change_nothing(run, root):
    crosseval(config(run, root, games=('pong',)))
    before = folder_hashes(run)
    with pytest.raises(ArtifactError, match=r"other settings \(relevance_seed: 'softmax' -> 'output'\)"):
        crosseval(config(run, root, games=('pong',), relevance_seed='output'))
    assert folder_hashes(run) == before
    crosseval(config(run, root, games=('pong', 'pong-2balls')))       # more games: added
    assert set(load_table(run/'crosseval'/'crosseval.parquet').eval_game) == {'pong', 'pong-2balls'}


def test_clear_one_line_errors(run, root, tmp_path):
    with pytest.raises(ValueError, match=r"^CrossEvalConfig.games: unknown game 'tennis'"):
        crosseval(config(run, root, games=('pong', 'tennis')))
    with pytest.raises(FileNotFoundError, match=f'^{tmp_path/"pong"}: no evaluation set of pong'):
        crosseval(config(run, str(tmp_path)))
    m = read_manifest(run)
    save_manifest(run, {**m, 'complete': False, 'stopped_by': 'interrupted'})   # an interrupted run
    with pytest.raises(ArtifactError, match='training not finished'):
        crosseval(config(run, root))
    save_manifest(run, m)
    flip_byte(run/FINAL)
    with pytest.raises(ArtifactError, match=r'step_000000480\.safetensors: sha256 does not match'):
        crosseval(config(run, root))
    flip_byte(run/FINAL)
    shutil.copy(run/FINAL, run/'checkpoints'/'step_000000999.safetensors')
    with pytest.raises(ArtifactError, match=r'step_000000999\.safetensors: not listed in'):
        crosseval(config(run, root))
    assert not (run/'crosseval').exists()


def test_a_light_package_carries_the_table_and_can_be_cross_evaluated(run, root, tmp_path):
    table = load_table(crosseval(config(run, root, games=('pong',))))
    analyse(AnalyseConfig(str(run), eval_dir=f'{root}/pong', n_frames=3, map_checkpoints=1,
                          map_frames=2, progress=False))
    pkg = package_run(PackageConfig(str(run), checkpoints=1, out=str(tmp_path/'pkg')))
    assert sorted(p.name for p in (pkg/'checkpoints').iterdir()) == [Path(FINAL).name]
    pd.testing.assert_frame_equal(load_table(pkg/'crosseval'/'crosseval.parquet'), table)
    out = crosseval(config(pkg, root, games=('pong', 'pong-2balls')))   # its final agent is there
    assert set(load_table(out).eval_game) == {'pong', 'pong-2balls'}


def test_cli(run, root, capsys):
    main(['crosseval', str(run), '--eval_root', root, '--games', 'pong', '--n_frames', '2',
          '--no-progress'])
    assert capsys.readouterr().out.strip() == str(run/'crosseval'/'crosseval.parquet')
    with pytest.raises(SystemExit) as e:
        main(['crosseval', str(run), '--eval_root', root, '--games', 'chess'])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "unknown game 'chess'" in err
