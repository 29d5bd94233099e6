"""Round-trip nbdev notebooks and percent-format scripts (developer tool, not part of the package).

    python tools/nbpy.py to-nb nbs/_scratch/01_games.py nbs/01_games.ipynb
    python tools/nbpy.py to-py nbs/01_games.ipynb nbs/_scratch/01_games.py

Cells start with `# %%` (code) or `# %% [markdown]` (markdown, every line prefixed by `# `).
Cell tags go after the marker: `# %% tags=["remove-cell"]`.
"""
import json, re, sys
from pathlib import Path

MARK = re.compile(r'^# %%(?P<md> \[markdown\])?(?: tags=(?P<tags>\[.*\]))?\s*$')


def to_nb(src, dst):
    cells, cur = [], None
    for line in Path(src).read_text().splitlines():
        m = MARK.match(line)
        if m:
            cur = dict(md=bool(m['md']), tags=json.loads(m['tags']) if m['tags'] else [], lines=[])
            cells.append(cur)
        elif cur is not None:
            cur['lines'].append(line)
    out = []
    for c in cells:
        lines = c['lines']
        while lines and not lines[-1].strip(): lines.pop()
        while lines and not lines[0].strip(): lines.pop(0)
        if c['md']: lines = [l[2:] if l.startswith('# ') else l.lstrip('#') for l in lines]
        text = '\n'.join(lines)
        meta = {'tags': c['tags']} if c['tags'] else {}
        cell = dict(cell_type='markdown' if c['md'] else 'code', metadata=meta, source=text)
        if not c['md']: cell.update(execution_count=None, outputs=[])
        out.append(cell)
    nb = dict(cells=out, metadata=dict(kernelspec=dict(display_name='Python 3', language='python', name='python3')),
              nbformat=4, nbformat_minor=5)
    for i, c in enumerate(nb['cells']): c['id'] = f'c{i:03d}'
    Path(dst).write_text(json.dumps(nb, indent=1) + '\n')


def to_py(src, dst):
    nb = json.loads(Path(src).read_text())
    parts = []
    for c in nb['cells']:
        text = ''.join(c['source']) if isinstance(c['source'], list) else c['source']
        tags = c.get('metadata', {}).get('tags')
        t = f' tags={json.dumps(tags)}' if tags else ''
        if c['cell_type'] == 'markdown':
            parts.append(f'# %% [markdown]{t}\n' + '\n'.join('# ' + l if l else '#' for l in text.splitlines()))
        else:
            parts.append(f'# %%{t}\n' + text)
    Path(dst).write_text('\n\n'.join(parts) + '\n')


if __name__ == '__main__':
    cmd, src, dst = sys.argv[1:4]
    {'to-nb': to_nb, 'to-py': to_py}[cmd](src, dst)
