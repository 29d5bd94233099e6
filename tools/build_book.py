"""Build the book: Jupyter Book 1 into _build/html, then publish the site as book_output/.

    .venv/bin/python tools/build_book.py      # what `make book` runs

Notebooks execute in cache mode (see _config.yml): only notebooks whose code changed re-run, unless
artifacts/ changed, which re-runs them all. They run first one per core (jupyter-cache's parallel
executor, into the same cache; Jupyter Book itself executes one at a time and then only reads the
cache). Any
warning, any failing cell or any page that loads a script from another host fails the build
(non-zero exit); book_output/ is replaced only by a build that passed.
"""
import re, shutil, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT/'book_output'
# A built page must not fetch code or styles from another host (the book is read offline): no
# <script src> or stylesheet <link> to another host, and no CDN named anywhere in HTML/JS/CSS.
# (`\bcdn` and not `cdn`: the theme's icon font has an icon called "keycdn".)
EXTERNAL = re.compile(r'''<script[^>]+src=["']?(?:https?:)?//|<link[^>]+href=["']?(?:https?:)?//[^"'>]+\.(?:css|js)\b'''
                      r'|\bcdn|jsdelivr|unpkg\.com|googleapis\.com', re.I)


def external_refs(folder) -> list[str]:
    "Lines of the HTML/JS/CSS files under `folder` that reference an external script host or a CDN."
    hits = []
    for p in sorted(Path(folder).rglob('*')):
        if p.suffix not in ('.html', '.js', '.css') or not p.is_file(): continue
        for i, line in enumerate(p.read_text(errors='replace').splitlines(), 1):
            m = EXTERNAL.search(line)
            if m: hits.append(f'{p.relative_to(folder)}:{i}: ...{line[max(0, m.start()-60):m.end()+60]}...')
    return hits


def invalidate_cache_if_artifacts_changed():
    "Notebooks are cached by their code alone: when artifacts/ changes, drop the cache so chapters re-read it."
    import hashlib
    h = hashlib.sha256()
    for p in sorted((ROOT/'artifacts').rglob('*')):
        if p.is_file(): h.update(p.relative_to(ROOT).as_posix().encode()); h.update(p.read_bytes())
    stamp = ROOT/'_build'/'.artifacts.sha256'
    if stamp.exists() and stamp.read_text() == h.hexdigest(): return
    stale = [ROOT/'_build'/d for d in ('.jupyter_cache', '.doctrees') if (ROOT/'_build'/d).exists()]
    if stale: print('artifacts/ changed since the last build: re-executing every notebook', flush=True)
    for d in stale: shutil.rmtree(d)                 # Sphinx's environment too, or it would not even re-read the pages
    stamp.parent.mkdir(exist_ok=True); stamp.write_text(h.hexdigest())


def book_notebooks() -> list[Path]:
    "The notebooks of _toc.yml that the book executes (less _config.yml's execute.exclude_patterns)."
    import fnmatch, yaml
    toc = yaml.safe_load((ROOT/'_toc.yml').read_text())
    skip = yaml.safe_load((ROOT/'_config.yml').read_text())['execute'].get('exclude_patterns', [])
    files = [toc['root']] + [c['file'] for part in toc['parts'] for c in part['chapters']]
    return [ROOT/f'{f}.ipynb' for f in files
            if (ROOT/f'{f}.ipynb').exists() and not any(fnmatch.fnmatch(f'{f}.ipynb', p) for p in skip)]


def pre_execute():
    "Execute the book's stale notebooks one per core into the book's cache (failures re-run in the build)."
    from jupyter_cache import get_cache
    from jupyter_cache.executors import load_executor
    cache = get_cache(str(ROOT/'_build'/'.jupyter_cache'))
    for nb in book_notebooks(): cache.add_nb_to_project(str(nb))
    stale = [r.pk for r in cache.list_unexecuted()]
    if not stale: return
    print(f'executing {len(stale)} notebooks, one per core', flush=True)
    result = load_executor('local-parallel', cache).run_and_cache(filter_pks=stale, timeout=600)
    for uri in result.errored + result.excepted: print(f'  failed (re-run by the build): {uri}', flush=True)


def build() -> int:
    jb = Path(sys.executable).parent/'jupyter-book'
    t0 = time.time()
    invalidate_cache_if_artifacts_changed()
    pre_execute()
    cmd = [str(jb), 'build', str(ROOT), '--path-output', str(ROOT), '--warningiserror', '--keep-going']
    print('$', ' '.join(cmd), flush=True)
    rc = subprocess.run(cmd, cwd=ROOT).returncode
    html = ROOT/'_build'/'html'
    if rc != 0 or not (html/'index.html').exists():
        print(f'\nBOOK BUILD FAILED (jupyter-book exit code {rc}); book_output/ left unchanged.', file=sys.stderr)
        return rc or 1
    hits = external_refs(html)
    if hits:
        print('\nBOOK BUILD FAILED: pages reference external hosts (the book must work offline):', *hits[:20],
              sep='\n  ', file=sys.stderr)
        return 1
    tmp = ROOT/'book_output.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(html, tmp)
    shutil.rmtree(OUT, ignore_errors=True)
    tmp.rename(OUT)
    n = sum(1 for _ in OUT.rglob('*.html'))
    print(f'\nbook_output/: {n} HTML pages, built in {time.time()-t0:.0f} s; open book_output/index.html')
    return 0


if __name__ == '__main__':
    sys.exit(build())
