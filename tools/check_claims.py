"""Check the built book: no heading claims what its own verdict denies.

    .venv/bin/python tools/check_claims.py [site]   # `make book` runs it on book_output/

Each claim that the results chapters decide has a criterion (`atoms.phases`, `atoms.dbdt` and
`atoms.algorithms`) whose verdict writes both the claim's row in a claims table (claim first,
verdict last) and its heading (`claim_heading`). On every page of the built site, a heading that
one verdict writes must stand on a page whose claims table shows that verdict for that claim.
Exit 1, naming page, heading and claim, when a page breaks that.
"""
import sys
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLAIN = str.maketrans('‘’“”', "''\"\"")   # Sphinx's smart quotes in headings, undone


class Page(HTMLParser):
    "The headings (h1-h3 text) and table rows (cell texts) of one HTML page."
    def __init__(self):
        super().__init__()
        self.headings, self.rows, self._text, self._in = [], [], None, None

    def handle_starttag(self, tag, attrs):
        if tag in ('h1', 'h2', 'h3', 'td', 'th'): self._in, self._text = tag, []
        if tag == 'tr': self.rows.append([])

    def handle_endtag(self, tag):
        if tag != self._in: return
        text = ' '.join(''.join(self._text).split()).rstrip('#¶ ').strip().translate(PLAIN)
        if tag.startswith('h'): self.headings.append(text)
        elif self.rows: self.rows[-1].append(text)
        self._in = None

    def handle_data(self, data):
        if self._in: self._text.append(data)


def criteria():
    "Every criterion the results chapters decide."
    sys.path.insert(0, str(ROOT))
    from atoms import algorithms, dbdt, phases
    return [v for m in (phases, dbdt, algorithms) for v in vars(m).values()
            if isinstance(v, phases.Criterion)]


def heading_verdict(criterion, heading: str):
    "The verdict whose heading `heading` is, for `criterion`; None if it is none of them."
    from atoms.phases import claim_heading
    if heading == criterion.holds: return 'agree'
    if heading == criterion.fails: return 'disagree'
    stem = claim_heading(criterion, 'undecided: 0 seeds')[:-len('0 seeds)')]
    return f'undecided: {heading[len(stem):-1]}' if heading.startswith(stem) else None


def problems(html: str, name: str, crits) -> list[str]:
    "Headings of one page that claim a verdict which its claims table denies (or does not show)."
    page = Page()
    page.feed(html)
    found = []
    for c in crits:
        shown = {row[-1] for row in page.rows if row and row[0] == c.claim}
        for heading in page.headings:
            claimed = heading_verdict(c, heading)
            if claimed is None or claimed in shown: continue
            found.append(f'{name}: heading "{heading}" claims "{claimed}" for "{c.claim}", but '
                         f'its table shows {", ".join(sorted(shown)) or "no verdict row"}')
    return found


def check(site) -> list[str]:
    "Problems on every results page of the built `site`."
    crits, found = criteria(), []
    for page in sorted(Path(site).rglob('*.html')):
        found += problems(page.read_text(errors='replace'), str(page.relative_to(site)), crits)
    return found


if __name__ == '__main__':
    site = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT/'book_output'
    if not (site/'index.html').exists(): sys.exit(f'{site}: no built book (run `make book`)')
    found = check(site)
    print(*found, sep='\n') if found else print(f'{site}: every claim heading matches its verdict')
    sys.exit(1 if found else 0)
