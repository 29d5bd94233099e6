"""Foundation: the environment, artifact bad input, repository layout, and the offline book."""
import importlib.util, json, os, re, shutil, signal, subprocess, sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from atoms.core import (ArtifactError, artifacts_dir, begin_command, clean_tmp, end_command, load_artifact,
                        load_weights, read_manifest, save_table, save_weights, sha256,
                        verify_artifact, write_manifest, write_text)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name):
    "Import tools/<name>.py (the tools folder is not a package)."
    spec = importlib.util.spec_from_file_location(name, ROOT/'tools'/f'{name}.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------- environment

def test_pip_check_clean():
    r = subprocess.run([sys.executable, '-m', 'pip', 'check'], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_ci_runs_exactly_make_test():
    lines = [l.strip() for l in (ROOT/'.ci'/'run').read_text().splitlines() if l.strip() and not l.startswith('#')]
    assert lines[-1] == 'make test'


# ---------------------------------------------------------------- repository root

@pytest.mark.parametrize('cwd', ['/tmp', 'nbs', 'nbs/paper'])
def test_repo_root_from_any_cwd(cwd):
    env = {k: v for k, v in os.environ.items() if k not in ('ATOMS_ROOT', 'PYTHONPATH')}
    code = 'from atoms.core import repo_root, artifacts_dir; print(repo_root()); print(artifacts_dir())'
    r = subprocess.run([sys.executable, '-c', code], cwd=ROOT/cwd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(ROOT), str(ROOT/'artifacts')]


def test_repo_root_env_override(tmp_path):
    env = dict(os.environ, ATOMS_ROOT=str(tmp_path))
    r = subprocess.run([sys.executable, '-c', 'from atoms.core import repo_root; print(repo_root())'],
                       cwd='/tmp', env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path)


# ---------------------------------------------------------------- artifacts: bad input

@pytest.fixture
def artifact(tmp_path):
    "A valid artifact folder with a table, weights and a manifest."
    a = tmp_path/'art'
    save_table(pd.DataFrame({'step': [0, 10], 'value': [0.5, 0.25]}), a/'t.parquet')
    save_weights({'w': torch.arange(6.).reshape(2, 3)}, a/'w.safetensors', {'step': 10})
    write_manifest(a, command='pytest fixture', config={'x': 1}, seed=0)
    return a


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir())}


def test_artifact_roundtrip(artifact):
    m = verify_artifact(artifact)
    assert sorted(m['files']) == ['t.parquet', 'w.safetensors']
    assert {'command', 'config', 'seed', 'git_revision', 'created', 'files'} <= set(m)
    assert load_artifact(artifact, 't.parquet')['value'].tolist() == [0.5, 0.25]
    w, meta = load_artifact(artifact, 'w.safetensors')
    assert w['w'].shape == (2, 3) and meta == {'step': 10}


def test_unknown_artifact_path(tmp_path):
    with pytest.raises(ArtifactError, match='nowhere: artifact folder not found'):
        load_artifact(tmp_path/'nowhere', 't.parquet')


def test_unknown_file_in_artifact(artifact):
    with pytest.raises(ArtifactError, match=r'other\.parquet: not listed in .*manifest\.json'):
        load_artifact(artifact, 'other.parquet')


def test_missing_manifest(artifact):
    (artifact/'manifest.json').unlink()
    with pytest.raises(ArtifactError, match=r'manifest\.json: manifest missing'):
        load_artifact(artifact, 't.parquet')


def test_unreadable_manifest(artifact):
    (artifact/'manifest.json').write_text('{not json')
    with pytest.raises(ArtifactError, match='manifest is not valid JSON'):
        verify_artifact(artifact)


def test_missing_listed_file(artifact):
    (artifact/'w.safetensors').unlink()
    with pytest.raises(ArtifactError, match=r'w\.safetensors: listed in the manifest but missing'):
        verify_artifact(artifact)


@pytest.mark.parametrize('name', ['t.parquet', 'w.safetensors'])
@pytest.mark.parametrize('damage', ['truncate', 'flip'])
def test_hash_mismatch_is_reported_not_repaired(artifact, name, damage):
    p = artifact/name; b = bytearray(p.read_bytes())
    if damage == 'truncate': b = b[:len(b)//2]
    else: b[len(b)//2] ^= 0xFF
    p.write_bytes(bytes(b))
    before = _snapshot(artifact)
    with pytest.raises(ArtifactError, match=f'{name}: sha256 does not match the manifest'):
        load_artifact(artifact, name)
    with pytest.raises(ArtifactError, match=name):
        verify_artifact(artifact)
    assert _snapshot(artifact) == before       # nothing was recomputed or overwritten


@pytest.mark.parametrize('name,kind', [('t.parquet', 'parquet'), ('w.safetensors', 'safetensors')])
def test_corrupt_file_with_matching_hash(artifact, name, kind):
    "A file that is corrupt at write time (so its hash matches) still fails to load, naming the file."
    (artifact/name).write_bytes(b'PAR1 this is not a real file' if kind == 'parquet' else b'\x08\x00\x00\x00garbage')
    write_manifest(artifact, command='pytest corrupt', seed=0)
    with pytest.raises(ArtifactError, match=f'{name}: not a readable {kind}'):
        load_artifact(artifact, name)


def test_committed_artifacts_verify():
    folders = sorted(p.parent for p in artifacts_dir().glob('*/manifest.json'))
    assert artifacts_dir()/'demo' in folders
    for f in folders: verify_artifact(f)


def test_demo_artifact_is_what_its_command_makes(tmp_path):
    "Regenerating the demo table with its recorded command's code gives the committed table."
    committed = load_artifact(artifacts_dir()/'demo', 'net_params.parquet')
    assert read_manifest(artifacts_dir()/'demo')['command'] == 'python tools/make_demo_artifact.py'
    _tool('make_demo_artifact').main(tmp_path)
    pd.testing.assert_frame_equal(load_artifact(tmp_path, 'net_params.parquet'), committed)


# ---------------------------------------------------------------- hardening: writes, weights, commands

SAVE_WEIGHTS = """
import sys, torch
from atoms.core import save_weights
meta = {k: {'i': i, 'name': k} for i, k in enumerate('step config net kind game algo seed run'.split())}
save_weights({'b': torch.ones(3), 'a': torch.arange(4.)}, sys.argv[1], meta)
"""


def test_save_weights_bytes_are_the_same_in_any_process(tmp_path):
    "Same tensors and metadata written by two processes into two folders: the same sha256."
    paths = [tmp_path/'one'/'w.safetensors', tmp_path/'two'/'w.safetensors']
    for p in paths: subprocess.run([sys.executable, '-c', SAVE_WEIGHTS, str(p)], check=True)
    assert sha256(paths[0]) == sha256(paths[1])
    assert load_weights(paths[0])[1]['config'] == {'i': 1, 'name': 'config'}


def test_load_weights_reads_the_committed_per_key_metadata():
    ckpt = sorted((artifacts_dir()/'runs'/'pong__a2c__1'/'checkpoints').glob('*.safetensors'))[0]
    tensors, meta = load_weights(ckpt)
    assert meta['config']['game'] == 'pong' and meta['step'] == 1_500_000 and meta['net']['frames'] == 4


WRITE_THREE = """
import sys
from pathlib import Path
from atoms.core import write_text
for i in range(3): write_text(Path(sys.argv[1])/f'f{i}.txt', str(i))
"""


def test_kill_at_write_hook_kills_just_before_the_nth_rename(tmp_path):
    env = {**os.environ, 'ATOMS_KILL_AT_WRITE': '2'}
    r = subprocess.run([sys.executable, '-c', WRITE_THREE, str(tmp_path)], env=env)
    assert r.returncode == -signal.SIGKILL
    assert (tmp_path/'f0.txt').read_text() == '0'
    assert not (tmp_path/'f1.txt').exists() and not (tmp_path/'f2.txt').exists()
    [leftover] = tmp_path.glob('.f1.txt.*.tmp')              # complete, but never renamed
    assert clean_tmp(tmp_path) == [leftover] and not leftover.exists()


def test_artifacts_get_the_umask_permissions(tmp_path):
    old = os.umask(0o027)
    try:
        write_text(tmp_path/'a.txt', 'x')
        save_table(pd.DataFrame({'a': [1]}), tmp_path/'t.parquet')
        save_weights({'w': torch.ones(1)}, tmp_path/'w.safetensors')
    finally: os.umask(old)
    assert {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()} == \
        {'a.txt': 0o640, 't.parquet': 0o640, 'w.safetensors': 0o640}


def test_end_command_lists_only_what_the_command_wrote(artifact):
    begin_command(artifact, 'analyse', {'n': 1}, ['atoms.parquet'])
    save_table(pd.DataFrame({'a': [1]}), artifact/'atoms.parquet')
    (artifact/'notes.txt').write_text('written by someone else meanwhile')
    m = end_command(artifact, 'analyse', command='atoms analyse art')
    assert sorted(m['files']) == ['atoms.parquet', 't.parquet', 'w.safetensors']
    assert m['history'][0]['command'] == 'pytest fixture' and m['config'] == {'x': 1}
    verify_artifact(artifact)


def test_begin_command_refuses_a_changed_file_before_writing(artifact):
    (artifact/'t.parquet').write_bytes((artifact/'t.parquet').read_bytes()[:-3])
    before = _snapshot(artifact)
    with pytest.raises(ArtifactError, match=r't\.parquet: sha256 does not match the manifest'):
        begin_command(artifact, 'analyse', {'n': 1}, ['atoms.parquet'])
    assert _snapshot(artifact) == before


# ---------------------------------------------------------------- notebooks and package

def test_nbdev_export_in_sync(tmp_path):
    "Exporting the notebooks reproduces the committed package byte for byte."
    for name in ('settings.ini', 'setup.py'): shutil.copy(ROOT/name, tmp_path/name)
    shutil.copytree(ROOT/'nbs', tmp_path/'nbs', ignore=shutil.ignore_patterns('_scratch', '.ipynb_checkpoints'))
    shutil.copytree(ROOT/'atoms', tmp_path/'atoms', ignore=shutil.ignore_patterns('__pycache__'))
    for p in (tmp_path/'atoms').glob('*.py'):
        if p.name != '__init__.py': p.unlink()         # so that a no-op export cannot pass
    r = subprocess.run([str(BIN/'nbdev_export')], cwd=tmp_path/'nbs', capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ours = {p.name: p.read_text() for p in (ROOT/'atoms').glob('*.py')}
    fresh = {p.name: p.read_text() for p in (tmp_path/'atoms').glob('*.py')}
    assert {'core.py', 'nets.py', '_modidx.py'} <= fresh.keys()
    stale = sorted(n for n in ours.keys() | fresh.keys() if ours.get(n) != fresh.get(n))
    assert not stale, f'atoms/ is out of sync with nbs/ for {stale}: run `make export`'


def test_nbdev_clean_keeps_book_metadata(tmp_path):
    "nbdev_clean must keep the cell tags and mystnb metadata that Jupyter Book reads."
    nb = dict(nbformat=4, nbformat_minor=5, metadata={}, cells=[dict(
        cell_type='code', id='c000', execution_count=3, outputs=[], source='x = 1',
        metadata={'tags': ['remove-input'], 'mystnb': {'figure': {'caption': 'c'}}, 'scrolled': True})])
    p = tmp_path/'nb.ipynb'; p.write_text(json.dumps(nb))
    shutil.copy(ROOT/'settings.ini', tmp_path/'settings.ini')
    r = subprocess.run([str(BIN/'nbdev_clean'), '--fname', str(p)], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    meta = json.loads(p.read_text())['cells'][0]['metadata']
    assert meta == {'tags': ['remove-input'], 'mystnb': {'figure': {'caption': 'c'}}}


def test_readme_generated_from_index():
    r = subprocess.run([sys.executable, str(ROOT/'tools'/'readme.py'), '--check'], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
    text = (ROOT/'README.md').read_text()
    assert 'make book' in text and 'make test' in text


# ---------------------------------------------------------------- the book's configuration

def _toc_files(toc):
    for part in toc.get('parts', []):
        for ch in part.get('chapters', []):
            yield ch['file']; yield from (s['file'] for s in ch.get('sections', []))


def test_toc_lists_every_chapter():
    toc = yaml.safe_load((ROOT/'_toc.yml').read_text())
    assert toc['format'] == 'jb-book' and toc['root'] == 'nbs/index'
    assert [p['caption'] for p in toc['parts']] == ['Results', 'Explorer', 'Library']
    files = list(_toc_files(toc))
    assert len(files) == len(set(files)), 'a page is listed twice'
    for f in [toc['root'], *files]:
        assert '_scratch' not in f
        assert (ROOT/f'{f}.ipynb').exists() or (ROOT/f'{f}.md').exists(), f'_toc.yml lists a missing page: {f}'
    on_disk = {p.relative_to(ROOT).with_suffix('').as_posix()
               for p in [*(ROOT/'nbs').glob('[0-9][0-9]_*.ipynb'), *(ROOT/'nbs'/'paper').glob('*.ipynb')]}
    missing = sorted(on_disk - set(files))
    assert not missing, f'add these notebooks to _toc.yml: {missing}'
    from sphinx_external_toc.parsing import parse_toc_yaml
    parse_toc_yaml(ROOT/'_toc.yml')          # the parser Jupyter Book uses accepts it


def test_config_is_valid_and_offline():
    from jupyter_book.config import validate_yaml
    cfg = yaml.safe_load((ROOT/'_config.yml').read_text())
    validate_yaml(cfg, raise_on_errors=True)
    ex = cfg['execute']
    assert ex['execute_notebooks'] == 'cache' and ex['timeout'] >= 300 and not ex['allow_errors'] and ex['raise_on_error']
    sx = cfg['sphinx']['config']
    assert 'sphinx_thebe' not in sx['extensions'] and not cfg['launch_buttons']['thebe']
    assert sx['nb_ipywidgets_js'] == {}
    assert not sx['mathjax_path'].startswith(('http', '//'))
    static = ROOT/sx['html_static_path'][0]
    assert (static/sx['mathjax_path']).is_file()
    for comp in sx['mathjax3_config']['loader']['load']: assert (static/'mathjax'/f'{comp}.js').is_file()
    assert cfg['launch_buttons']['binderhub_url'] and (ROOT/'binder').is_dir()


def test_vendored_scripts_are_listed_once_and_offline():
    "The chart scripts: local files under book_static/, listed once, naming no external host."
    cfg = yaml.safe_load((ROOT/'_config.yml').read_text())
    sx = cfg['sphinx']['config']
    static, scripts = ROOT/sx['html_static_path'][0], sx['html_js_files']
    assert len(scripts) == len(set(scripts)) and 'vega/vega-bundle.js' in scripts
    for js in scripts:
        assert not js.startswith(('http', '//')) and (static/js).is_file(), js
    assert _tool('build_book').external_refs(static) == []   # mathjax/ and vega/, every file
    assert (static/'vega'/'LICENSE').is_file()
    assert 'vega/vega-bundle.js' in (static/'VENDORED.md').read_text()
    bundle = (static/'vega'/'vega-bundle.js').read_text()
    assert '"5.20.1"' in bundle and 'window.vegaEmbed=' in bundle   # the Vega-Lite altair 5.5 emits


def test_repository_url_is_written_once():
    "_config.yml's repository (the launch buttons') is settings.ini's git_url."
    import configparser
    ini = configparser.ConfigParser()
    ini.read(ROOT/'settings.ini')
    cfg = yaml.safe_load((ROOT/'_config.yml').read_text())
    assert cfg['repository']['url'] == ini['DEFAULT']['git_url']
    assert cfg['repository']['branch'] == ini['DEFAULT']['branch']


def _requirement_names(lines):
    return {l.split('==')[0].strip().lower() for l in lines
            if l.strip() and not l.startswith(('#', '-'))}


def test_binder_installs_the_runtime_only():
    "Binder gets the package's run-time requirements (CPU torch), not the build and test tools."
    import configparser
    ini = configparser.ConfigParser()
    ini.read(ROOT/'settings.ini')
    lines = (ROOT/'binder'/'requirements.txt').read_text().splitlines()
    wanted = {r.lower() for r in ini['DEFAULT']['requirements'].split()}
    assert _requirement_names(lines) == wanted
    assert not wanted & {r.lower() for r in ini['DEFAULT']['dev_requirements'].split()}
    assert '--extra-index-url https://download.pytorch.org/whl/cpu' in lines
    assert '-c ../constraints.txt' in lines
    assert 'torch==2.14.1' in lines and 'torchvision==0.29.1' in lines
    post = (ROOT/'binder'/'postBuild').read_text()
    assert 'pip install --no-cache-dir --no-deps -e .' in post and '[dev]' not in post
    assert (ROOT/'binder'/'runtime.txt').read_text().strip() == 'python-3.11'
    assert (ROOT/'nbs'/'paper'/'explore.ipynb').is_file()    # the launch target


def _smoke_book(tmp_path, pages):
    "Build a one-part book of `pages` (name -> notebook JSON) with the project's _config.yml; return (rc, log, html)."
    src = tmp_path/'src'; (src/'nbs').mkdir(parents=True)
    cfg = yaml.safe_load((ROOT/'_config.yml').read_text())
    cfg['execute']['cache'] = str(tmp_path/'jcache')       # leave the repository's cache alone
    (src/'_config.yml').write_text(yaml.safe_dump(cfg))
    (src/'book_static').symlink_to(ROOT/'book_static')
    for name, nb in pages.items():
        (src/'nbs'/f'{name}.ipynb').parent.mkdir(parents=True, exist_ok=True)
        (src/'nbs'/f'{name}.ipynb').write_text(json.dumps(nb))
    names = list(pages)
    toc = dict(format='jb-book', root=f'nbs/{names[0]}',
               parts=[dict(caption='Library', chapters=[dict(file=f'nbs/{n}') for n in names[1:]])] if names[1:] else [])
    (src/'_toc.yml').write_text(yaml.safe_dump(toc))
    r = subprocess.run([str(BIN/'jupyter-book'), 'build', str(src), '--path-output', str(tmp_path), '--warningiserror',
                        '--keep-going'], capture_output=True, text=True, timeout=300)
    return r.returncode, r.stdout + r.stderr, tmp_path/'_build'/'html'


def _nb(*cells):
    return dict(nbformat=4, nbformat_minor=5, metadata=dict(kernelspec=dict(name='python3', display_name='Python 3', language='python')),
                cells=[dict(cell_type='markdown', id=f'c{i}', metadata={}, source=c) if i == 0 else
                       dict(cell_type='code', id=f'c{i}', metadata={}, source=c, outputs=[], execution_count=None)
                       for i, c in enumerate(cells)])


def test_smoke_build_landing_page_offline(tmp_path):
    "The real landing page with the project's config builds with no warning and references no external script."
    index = json.loads((ROOT/'nbs'/'index.ipynb').read_text())
    math = _nb('# Maths\n\nInline $\\alpha_t$ and display\n\n$$H(o) = \\sum_i R_i$$', 'print(1 + 1)')
    linked = set(re.findall(r'\]\((paper/\w+)\)', json.dumps(index)))   # chapters the page links to
    stubs = {name: _nb(f'# {name}') for name in sorted(linked)}
    rc, log, html = _smoke_book(tmp_path, {'index': index, 'math': math, **stubs})
    assert rc == 0, log[-3000:]
    assert (html/'nbs'/'index.html').exists()
    page = (html/'nbs'/'math.html').read_text()
    assert '_static/mathjax/startup.js' in page
    assert '_static/vega/vega-bundle.js' in page
    assert (html/'_static'/'vega'/'vega-bundle.js').is_file()
    assert _tool('build_book').external_refs(html) == []


def test_smoke_build_fails_on_cell_error(tmp_path):
    "A notebook cell that raises fails the build (non-zero exit), naming the error."
    boom = _nb('# Boom', 'raise RuntimeError("deliberate failure in a book cell")')
    rc, log, _ = _smoke_book(tmp_path, {'index': _nb('# Home'), 'boom': boom})
    assert rc != 0
    assert 'deliberate failure in a book cell' in log


# ---------------------------------------------------------------- the built book (after `make book`)

BOOK = ROOT/'book_output'
needs_book = pytest.mark.skipif(not (BOOK/'index.html').exists(), reason='book_output/ not built (run `make book`)')


@needs_book
def test_built_book_has_no_external_scripts():
    assert _tool('build_book').external_refs(BOOK) == []


@needs_book
def test_built_demo_chapter_has_static_chart_and_local_math():
    import re
    page = (BOOK/'nbs'/'paper'/'00_demo.html').read_text()
    fig = page[page.index('id="fig-params"'):]
    svg = BOOK/'nbs'/'paper'/re.search(r'<img[^>]+src="([^"]+\.svg)"', fig)[1]
    points = [(dict(kv.split(': ', 1) for kv in label.split('; ')), float(x)) for label, x in
              re.findall(r'<path aria-label="([^"]+)" role="graphics-symbol"[^>]*translate\(([-\d.]+),', svg.read_text())]
    marks = {d['layer']: x for d, x in points if d.get('net') == 'nature'}
    assert len(marks) == 6                                       # one drawn point per layer of the paper's net
    assert marks['F_c'] > marks['conv3'] > marks['value']        # placed by their parameter counts (log x axis)
    assert 'vega-embed' not in page and 'vegaEmbed' not in page  # not the CDN-loading HTML renderer
    assert '_static/mathjax/startup.js' in page
    assert (BOOK/'_static'/'mathjax'/'startup.js').is_file()
