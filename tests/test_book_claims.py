"The book build's claim check: a heading never claims what its verdict row denies."
import importlib.util
from pathlib import Path

import pytest

from atoms.algorithms import ALGOS_MATCHED, NETS_FINAL
from atoms.dbdt import BEYOND_BRIGHTNESS
from atoms.phases import PHASES, claim_heading

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location('check_claims', ROOT/'tools'/'check_claims.py')
check_claims = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_claims)


def page(heading: str, verdict: str) -> str:
    "A built page as Sphinx writes it: a heading with its link, and a claims table row."
    return (f'<h1>Title<a class="headerlink" href="#t">#</a></h1>'
            f'<h2>{heading}<a class="headerlink" href="#h">#</a></h2>'
            f'<table><tr><th>claim</th><th>agree?</th></tr>'
            f'<tr><td>{PHASES.claim}</td><td>{verdict}</td></tr></table>')


@pytest.mark.parametrize('verdict', ['agree', 'disagree', 'undecided: 1 seed'])
def test_heading_written_by_its_verdict_passes(verdict):
    assert check_claims.problems(page(claim_heading(PHASES, verdict), verdict), 'p', [PHASES]) == []


def test_heading_that_the_verdict_denies_fails():
    found = check_claims.problems(page(PHASES.holds, 'disagree'), 'p', [PHASES])
    assert found == [f'p: heading "{PHASES.holds}" claims "agree" for "{PHASES.claim}", but its '
                     'table shows disagree']
    undecided = check_claims.problems(page(claim_heading(PHASES, 'undecided: 2 seeds'), 'agree'),
                                      'p', [PHASES])
    assert 'claims "undecided: 2 seeds"' in undecided[0]


def test_smart_quotes_in_headings_are_read_as_plain_quotes():
    "Sphinx turns ' into ’ in headings; the check must still see the heading."
    from atoms.phases import PADDLE_LATE
    html = (f'<h2>{PADDLE_LATE.holds.replace(chr(39), chr(8217))}</h2><table><tr>'
            f'<td>{PADDLE_LATE.claim}</td><td>disagree</td></tr></table>')
    assert 'claims "agree"' in check_claims.problems(html, 'p', [PADDLE_LATE])[0]


def test_heading_without_its_verdict_row_fails():
    html = f'<h2>{PHASES.fails}<a class="headerlink" href="#h">#</a></h2>'
    assert 'no verdict row' in check_claims.problems(html, 'p', [PHASES])[0]


def test_a_claims_table_without_headings_passes():
    "The summary page shows verdicts without a heading per claim."
    html = f'<table><tr><td>{PHASES.claim}</td><td>disagree</td></tr></table>'
    assert check_claims.problems(html, 'p', [PHASES]) == []


def test_every_criterion_is_checked():
    """Every `Criterion` of the package: the paper's six claims, the DBDT's brightness control and
    the two comparisons each of algorithms and of networks."""
    names = {c.claim for c in check_claims.criteria()}
    assert len(names) == 11 and {PHASES.claim, BEYOND_BRIGHTNESS.claim, ALGOS_MATCHED.claim,
                                 NETS_FINAL.claim} <= names


@pytest.mark.skipif(not (ROOT/'book_output'/'index.html').exists(), reason='book not built')
def test_built_book_headings_match_verdicts():
    assert check_claims.check(ROOT/'book_output') == []
