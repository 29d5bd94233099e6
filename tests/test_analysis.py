"Hardening of `atoms analyse` and `atoms package`: nothing a command does destroys, launders or mis-reads a run."
import os, shlex, shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import tyro

import atoms.analysis as analysis
from atoms.analysis import (AnalyseConfig, PackageConfig, analyse, analyse_command,
                            analysed_relevance_seed, package_run, read_maps,
                            SCALE_SUFFIX)
from atoms.core import (ArtifactError, artifacts_dir, load_table, load_weights, read_manifest,
                        save_manifest, verify_artifact)
from helpers import copy_run, flip_byte, folder_hashes, tiny_run_and_eval_sets

torch.set_num_threads(1)
FAST = dict(progress=False, map_checkpoints=2, map_frames=2)   # tiny analyses


@pytest.fixture(scope='module')
def made(tmp_path_factory):
    "A tiny trained run and a six-frame evaluation set, made once; tests copy them."
    run, sets = tiny_run_and_eval_sets(tmp_path_factory.mktemp('made'), n=6)
    return run, sets['pong']


@pytest.fixture
def run(made, tmp_path):
    "A fresh copy of the tiny trained run (not analysed yet)."
    return copy_run(made[0], tmp_path)


@pytest.fixture
def es(made):
    return str(made[1])


@pytest.fixture
def analysed(run, es):
    "The tiny run, analysed."
    analyse(AnalyseConfig(str(run), eval_dir=es, **FAST))
    return run




# ---- item 1: `atoms package` never deletes what it reads -------------------------------------------

@pytest.mark.parametrize('where', ['run', 'parent', 'inside'])
def test_package_refuses_destination_that_holds_or_is_the_run(analysed, where):
    out = {'run': analysed, 'parent': analysed.parent, 'inside': analysed/'pkg'}[where]
    sibling = analysed.parent/'other_run'
    sibling.mkdir()
    (sibling/'keep.txt').write_text('precious')
    before = folder_hashes(analysed.parent)
    with pytest.raises(ValueError, match='PackageConfig.out: .* inside it or above it'):
        package_run(PackageConfig(str(analysed), out=str(out)))
    assert folder_hashes(analysed.parent) == before


def test_package_default_destination_of_a_packaged_run_is_refused(analysed, tmp_path, monkeypatch):
    (tmp_path/'settings.ini').write_text('')
    (tmp_path/'atoms').mkdir()
    monkeypatch.setenv('ATOMS_ROOT', str(tmp_path))
    committed = tmp_path/'artifacts'/'runs'/'pong__a2c__1'
    package_run(PackageConfig(str(analysed), out=str(committed), checkpoints=2))
    before = folder_hashes(committed)
    with pytest.raises(ValueError, match='is the run'):
        package_run(PackageConfig(str(committed)))          # default destination: itself
    assert folder_hashes(committed) == before


def test_package_refuses_a_foreign_non_empty_destination(analysed, tmp_path):
    out = tmp_path/'somewhere'
    out.mkdir()
    (out/'thesis.tex').write_text('years of work')
    with pytest.raises(ArtifactError, match='not empty and not a previous package of'):
        package_run(PackageConfig(str(analysed), out=str(out)))
    assert (out/'thesis.tex').read_text() == 'years of work'


def test_repackaging_replaces_only_its_own_previous_package(analysed, tmp_path):
    out = tmp_path/'pkgs'/'pong__a2c__1'
    neighbour = tmp_path/'pkgs'/'neighbour.txt'
    package_run(PackageConfig(str(analysed), out=str(out), checkpoints=2))
    neighbour.write_text('stay')
    (out/'stale.txt').write_text('from an older package')
    package_run(PackageConfig(str(analysed), out=str(out), checkpoints=3))
    assert len(read_manifest(out)['checkpoint_steps']) == 3
    assert not (out/'stale.txt').exists()
    assert neighbour.read_text() == 'stay'
    assert sorted(p.name for p in out.parent.iterdir()) == ['neighbour.txt', 'pong__a2c__1']
    verify_artifact(out)


def test_package_verifies_the_run_it_reads(analysed, tmp_path):
    flip_byte(analysed/'atoms.parquet')
    with pytest.raises(ArtifactError, match=r'atoms\.parquet: sha256 does not match'):
        package_run(PackageConfig(str(analysed), out=str(tmp_path/'pkg')))
    assert not (tmp_path/'pkg').exists()


# ---- item 2: manifests are never laundered ---------------------------------------------------------

@pytest.mark.parametrize('name', ['checkpoints/step_000000000.safetensors', 'atoms.parquet'])
def test_analyse_refuses_a_corrupted_file_and_changes_nothing(analysed, es, name):
    flip_byte(analysed/name)
    before = folder_hashes(analysed)
    with pytest.raises(ArtifactError, match=f'{name}: sha256 does not match the manifest'):
        analyse(AnalyseConfig(str(analysed), eval_dir=es, **FAST))
    assert folder_hashes(analysed) == before


def fail_on_call(monkeypatch, name: str, n: int = 1):
    "Make `atoms.analysis.<name>` raise at its n-th call, as a kill at that write would."
    real, calls = getattr(analysis, name), [0]
    def flaky(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n: raise KeyboardInterrupt(f'killed at {name} #{n}')
        return real(*args, **kwargs)
    monkeypatch.setattr(analysis, name, flaky)


def test_rerun_resumes_its_own_interrupted_run_but_refuses_other_changes(run, es, monkeypatch):
    fail_on_call(monkeypatch, 'save_table', 2)
    with pytest.raises(KeyboardInterrupt):
        analyse(AnalyseConfig(str(run), eval_dir=es, **FAST))
    monkeypatch.undo()
    assert read_manifest(run)['commands']['analyse']['in_progress'] is True
    flip_byte(run/'checkpoints'/'step_000000480.safetensors')
    with pytest.raises(ArtifactError, match=r'step_000000480\.safetensors: sha256 does not match'):
        analyse(AnalyseConfig(str(run), eval_dir=es, **FAST))
    flip_byte(run/'checkpoints'/'step_000000480.safetensors')       # undo the damage
    analyse(AnalyseConfig(str(run), eval_dir=es, **FAST))              # its own files: resumed
    m = verify_artifact(run)
    assert {'atoms.parquet', 'maps.safetensors'} <= set(m['files'])
    assert m['commands']['analyse']['in_progress'] is False


# ---- item 4: resume only rows made with the same settings ------------------------------------------

def test_analyse_refuses_to_mix_rows_of_other_settings(run, es):
    analyse(AnalyseConfig(str(run), eval_dir=es, n_frames=3, **FAST))
    before = folder_hashes(run)
    with pytest.raises(ArtifactError, match=r'other settings \(n_frames: 3 -> None\); to start over, '
                                            r'delete atoms\.parquet, maps\.safetensors'):
        analyse(AnalyseConfig(str(run), eval_dir=es, **FAST))
    assert folder_hashes(run) == before
    (run/'atoms.parquet').unlink()
    (run/'maps.safetensors').unlink()
    analyse(AnalyseConfig(str(run), eval_dir=es, **FAST))           # started over, as told
    assert read_manifest(run)['config']['analyse']['n_frames'] is None


# ---- item 5: a kill between the table write and the maps write loses nothing -----------------------

@pytest.mark.parametrize('killed_at', ['save_weights', 'save_table'])
def test_kill_between_table_and_maps_loses_nothing(made, tmp_path, es, monkeypatch, killed_at):
    clean = Path(shutil.copytree(made[0], tmp_path/'clean'))
    analyse(AnalyseConfig(str(clean), eval_dir=es, **FAST))
    killed = Path(shutil.copytree(made[0], tmp_path/'killed'))
    fail_on_call(monkeypatch, killed_at, 1)
    with pytest.raises(KeyboardInterrupt):
        analyse(AnalyseConfig(str(killed), eval_dir=es, **FAST))
    monkeypatch.undo()
    analyse(AnalyseConfig(str(killed), eval_dir=es, **FAST))
    want, got = load_weights(clean/'maps.safetensors')[0], load_weights(killed/'maps.safetensors')[0]
    assert sorted(got) == sorted(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    key = ['step', 'method', 'object', 'metric']
    pd.testing.assert_frame_equal(load_table(killed/'atoms.parquet').sort_values(key).reset_index(drop=True),
                                  load_table(clean/'atoms.parquet').sort_values(key).reset_index(drop=True))


# ---- item 6: analyse on a packaged run keeps where it came from ------------------------------------

def test_analyse_on_a_packaged_run_keeps_its_source(analysed, es, tmp_path):
    out = package_run(PackageConfig(str(analysed), out=str(tmp_path/'pkg'), checkpoints=2))
    kept = ('source', 'source_commands', 'source_git_revision', 'checkpoint_steps')
    before = {k: read_manifest(out)[k] for k in kept}
    analyse(AnalyseConfig(str(out), eval_dir=es, **FAST))
    m = verify_artifact(out)
    assert {k: m[k] for k in kept} == before
    assert m['command'].startswith('atoms analyse')


# ---- items 8 and 9: bad arguments and stray files, one line naming the field or file ---------------

@pytest.mark.parametrize('field, value, lowest', [('n_frames', 0, 1), ('n_frames', -148, 1),
                                                  ('map_frames', -1, 1), ('map_checkpoints', -2, 0)])
def test_analyse_rejects_out_of_range_numbers(run, es, field, value, lowest):
    before = folder_hashes(run)
    with pytest.raises(ValueError, match=f'^AnalyseConfig.{field} must be >= {lowest}, got {value}$'):
        analyse(AnalyseConfig(str(run), eval_dir=es, **{**FAST, field: value}))
    assert folder_hashes(run) == before


def test_stray_checkpoint_name_is_reported_by_name(run, es):
    shutil.copy(run/'checkpoints'/'step_000000480.safetensors', run/'checkpoints'/'step_final.safetensors')
    with pytest.raises(ArtifactError, match=r'step_final\.safetensors: not a checkpoint name') as e:
        analyse(AnalyseConfig(str(run), eval_dir=es, **FAST))
    assert '\n' not in str(e.value)


# ---- item 10: leftover .tmp files are cleaned up; files follow the umask --------------------------

def test_analyse_removes_tmp_files_of_interrupted_writes_and_respects_umask(run, es):
    stale = run/'.atoms.parquet.k1ll3d.tmp'
    stale.write_bytes(b'half a table')
    old = os.umask(0o022)
    try: analyse(AnalyseConfig(str(run), eval_dir=es, **FAST))
    finally: os.umask(old)
    assert not stale.exists()
    assert list(run.rglob('*.tmp')) == []
    assert (run/'atoms.parquet').stat().st_mode & 0o777 == 0o644
    assert (run/'maps.safetensors').stat().st_mode & 0o777 == 0o644


# ---- item 11: the recorded command is re-runnable as printed ---------------------------------------

def test_recorded_analyse_command_parses_back_to_the_same_config(analysed, es):
    recorded = read_manifest(analysed)['command']
    words = shlex.split(recorded)
    assert words[:2] == ['atoms', 'analyse']
    assert tyro.cli(AnalyseConfig, args=words[2:]) == AnalyseConfig(str(analysed), eval_dir=es,
                                                                    map_checkpoints=2, map_frames=2)
    odd = AnalyseConfig("runs/it's here", methods=('lrp_action', 'gradient_two_pass'), n_frames=5)
    assert tyro.cli(AnalyseConfig, args=shlex.split(analyse_command(odd))[2:]) == odd


def test_analyse_refuses_a_checkpoint_the_manifest_does_not_list(run, es):
    stray = run/'checkpoints'/'step_000000999.safetensors'
    shutil.copy(run/'checkpoints'/'step_000000480.safetensors', stray)
    before = folder_hashes(run)
    with pytest.raises(ArtifactError, match=r'step_000000999\.safetensors: not listed in'):
        analyse(AnalyseConfig(str(run), eval_dir=es, **FAST))
    assert folder_hashes(run) == before


def test_rows_of_an_analysis_recorded_only_in_the_config_are_not_mixed(analysed, es):
    "A run analysed before settings were recorded in `commands` (older code) is checked too."
    m = read_manifest(analysed)
    del m['commands']
    save_manifest(analysed, m)
    with pytest.raises(ArtifactError, match=r'other settings \(n_frames: None -> 3\)'):
        analyse(AnalyseConfig(str(analysed), eval_dir=es, n_frames=3, **FAST))


# ---- the pass-1 seed: recorded, and 'output' for analyses made before it was --------------------

def test_relevance_seed_is_recorded_and_changes_the_rows(run, es, tmp_path):
    analyse(AnalyseConfig(str(run), eval_dir=es, n_frames=3, **FAST))
    assert read_manifest(run)['config']['analyse']['relevance_seed'] == 'softmax'
    assert analysed_relevance_seed(run) == 'softmax'
    with pytest.raises(ArtifactError, match=r"other settings \(relevance_seed: 'softmax' -> 'output'\)"):
        analyse(AnalyseConfig(str(run), eval_dir=es, n_frames=3, relevance_seed='output', **FAST))
    with pytest.raises(ValueError, match=r"^AnalyseConfig.relevance_seed must be one of"):
        analyse(AnalyseConfig(str(run), eval_dir=es, relevance_seed='logits', **FAST))


def test_an_analysis_that_predates_the_relevance_seed_counts_as_output(run, es):
    "Its record lacks `relevance_seed`: resuming with 'output' adds to it, 'softmax' is refused."
    analyse(AnalyseConfig(str(run), eval_dir=es, n_frames=3, relevance_seed='output', **FAST))
    m = read_manifest(run)
    del m['commands']['analyse']['settings']['relevance_seed']
    del m['config']['analyse']['relevance_seed']
    save_manifest(run, m)
    assert analysed_relevance_seed(run) == 'output'
    with pytest.raises(ArtifactError, match=r"other settings \(relevance_seed: 'output' -> 'softmax'\)"):
        analyse(AnalyseConfig(str(run), eval_dir=es, n_frames=3, **FAST))
    before = load_table(run/'atoms.parquet')
    analyse(AnalyseConfig(str(run), eval_dir=es, n_frames=3, relevance_seed='output',
                          methods=('lrp_two_pass', 'gradient_action'), **FAST))
    after = load_table(run/'atoms.parquet')
    assert set(after.method) == {'lrp_two_pass', 'lrp_action', 'gradient_action'}
    pd.testing.assert_frame_equal(after.iloc[:len(before)], before)
    assert 'relevance_seed' not in read_manifest(run)['commands']['analyse']['settings']


# ---- light packages: the final checkpoint only, or none; maps in 8 bits -----------------------------

@pytest.mark.parametrize('checkpoints, kept', [(0, []), (1, ['step_000000480.safetensors']),
                                               (2, ['step_000000000.safetensors',
                                                    'step_000000480.safetensors'])])
def test_package_keeps_the_asked_checkpoints_ending_with_the_final(analysed, tmp_path, capsys,
                                                                   checkpoints, kept):
    out = package_run(PackageConfig(str(analysed), out=str(tmp_path/'pkg'), checkpoints=checkpoints))
    m = verify_artifact(out)
    assert sorted(p.name for p in (out/'checkpoints').glob('*')) == kept
    assert m['checkpoint_steps'] == [int(k[5:14]) for k in kept] and m['complete'] is True
    pd.testing.assert_frame_equal(load_table(out/'atoms.parquet'), load_table(analysed/'atoms.parquet'))
    assert 'MB without weights' in capsys.readouterr().out


def test_package_maps_are_8_bit_and_read_back_as_float32(analysed, tmp_path):
    out = package_run(PackageConfig(str(analysed), out=str(tmp_path/'pkg'), checkpoints=0))
    stored = load_weights(out/'maps.safetensors')[0]
    assert {v.dtype for k, v in stored.items() if not k.endswith(SCALE_SUFFIX)} == {torch.int8}
    assert {v.dtype for v in load_weights(analysed/'maps.safetensors')[0].values()} == {torch.float32}
    packed, meta = read_maps(out)
    full, _ = read_maps(analysed)
    assert sorted(packed) == sorted(full) and meta['game'] == 'pong'
    for k in full:
        assert packed[k].dtype == full[k].dtype == np.float32
        step = np.abs(full[k]).max(axis=(1, 2), keepdims=True) / 254     # half a step per frame
        assert (np.abs(packed[k] - full[k]) <= step * (1 + 1e-5)).all(), k
        assert (packed[k][full[k] == 0] == 0).all(), k
    light = package_run(PackageConfig(str(analysed), out=str(tmp_path/'light'), checkpoints=1))
    again = package_run(PackageConfig(str(light), out=str(tmp_path/'again'), checkpoints=1))
    twice = read_maps(again)[0]                          # a package of a package: not packed twice
    assert all(np.allclose(twice[k], packed[k], rtol=0, atol=1e-9) for k in packed)


def test_package_refuses_a_negative_number_of_checkpoints(analysed, tmp_path):
    with pytest.raises(ValueError, match='PackageConfig.checkpoints must be >= 0, got -1'):
        package_run(PackageConfig(str(analysed), out=str(tmp_path/'pkg'), checkpoints=-1))
    assert not (tmp_path/'pkg').exists()



def test_a_committed_package_without_an_analysis_record_counts_as_output(tmp_path):
    "The committed packages predate both the analysis record and the setting: 'softmax' is refused."
    run = Path(shutil.copytree(artifacts_dir()/'runs'/'pong__a2c__1', tmp_path/'pong__a2c__1'))
    assert 'analyse' not in read_manifest(run).get('commands', {})
    assert analysed_relevance_seed(run) == 'output'
    before = folder_hashes(run)
    with pytest.raises(ArtifactError, match=r"other settings \(relevance_seed: 'output' -> 'softmax'\)"):
        analyse(AnalyseConfig(str(run), progress=False))
    assert folder_hashes(run) == before
