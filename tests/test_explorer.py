"""The explorer: the static page in headless Chromium (network off), and the live widget.

The browser test builds an explorer page itself from a committed run (a clean clone has no
book_output/), opens it from disk in Debian's Chromium, driven over the DevTools protocol through
a pipe (`--remote-debugging-pipe`: no port, no extra package), moves the checkpoint slider with the
keyboard, and compares screenshots of the heatmap before and after. Screenshots and the time the
page took to draw are written to $EXPLORER_SHOTS when it is set (for a person to look at; the time
is a measurement, not a test: a loaded machine draws the page more slowly).
"""
import base64, io, json, os, shutil, subprocess, time
from pathlib import Path

import numpy as np
import pytest

from atoms.explore import ExplorerPage, explore, explorer_chart, explorer_data, standalone_html
from atoms.relevance import Method

CHROMIUM = shutil.which('chromium')
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed: `make test` installs it "
                             '(apt-get install chromium); without it the browser test cannot run')
OFFLINE_FLAGS = ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic',
                 '--no-first-run', '--disable-background-networking', '--disable-component-update',
                 '--disable-sync',
                 '--proxy-server=127.0.0.1:9', '--host-resolver-rules=MAP * ~NOTFOUND',
                 '--allow-file-access-from-files', '--window-size=1200,1000', '--hide-scrollbars']


class Browser:
    "Headless Chromium over the DevTools protocol on fds 3 (commands) and 4 (replies), one page."

    def __init__(self, user_dir: Path):
        to_chrome, self._cmd = os.pipe()
        self._res, from_chrome = os.pipe()

        def fds():
            os.dup2(to_chrome, 3)
            os.dup2(from_chrome, 4)
        self.proc = subprocess.Popen([CHROMIUM, *OFFLINE_FLAGS, f'--user-data-dir={user_dir}',
                                      '--remote-debugging-pipe', 'about:blank'],
                                     pass_fds=(3, 4), preexec_fn=fds, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(to_chrome)
        os.close(from_chrome)
        self._buf, self._id, self.events = b'', 0, []
        target = self.call('Target.createTarget', url='about:blank')['targetId']
        attached = self.call('Target.attachToTarget', targetId=target, flatten=True)
        self.session = attached['sessionId']
        for domain in ('Page', 'Runtime', 'Log', 'Network'):
            self.call(f'{domain}.enable', session=True)
        self.call('Network.emulateNetworkConditions', session=True, offline=True, latency=0,
                  downloadThroughput=-1, uploadThroughput=-1)

    def _message(self) -> dict:
        while b'\0' not in self._buf:
            chunk = os.read(self._res, 1 << 20)
            if not chunk: raise RuntimeError('chromium closed the DevTools pipe')
            self._buf += chunk
        raw, self._buf = self._buf.split(b'\0', 1)
        return json.loads(raw)

    def call(self, method, session=False, **params) -> dict:
        self._id += 1
        msg = dict(id=self._id, method=method, params=params)
        if session: msg['sessionId'] = self.session
        os.write(self._cmd, json.dumps(msg).encode() + b'\0')
        while True:
            m = self._message()
            if m.get('id') == self._id:
                if 'error' in m: raise RuntimeError(f'{method}: {m["error"]}')
                return m['result']
            self.events.append(m)

    def js(self, expression):
        r = self.call('Runtime.evaluate', session=True, expression=expression, awaitPromise=True,
                      returnByValue=True)
        if 'exceptionDetails' in r: raise RuntimeError(r['exceptionDetails'])
        return r['result'].get('value')

    def wait_for(self, expression, timeout=30.0):
        end = time.time() + timeout
        while time.time() < end:
            if self.js(expression): return
            time.sleep(0.05)
        raise TimeoutError(expression)

    def key(self, name, keycode):
        for kind in ('rawKeyDown', 'keyUp'):
            self.call('Input.dispatchKeyEvent', session=True, type=kind, key=name, code=name,
                      windowsVirtualKeyCode=keycode)

    def screenshot(self, clip) -> bytes:
        r = self.call('Page.captureScreenshot', session=True, format='png',
                      clip=dict(clip, scale=1))
        return base64.b64decode(r['data'])

    def errors(self) -> list[str]:
        out = []
        for e in self.events:
            p = e.get('params', {})
            if e.get('method') == 'Runtime.consoleAPICalled' and p['type'] in ('error', 'assert'):
                out.append(str(p['args']))
            elif e.get('method') == 'Runtime.exceptionThrown':
                out.append(str(p['exceptionDetails']))
            elif e.get('method') == 'Log.entryAdded' and p['entry']['level'] == 'error':
                out.append(p['entry']['text'])
        return out

    def requested(self) -> list[str]:
        return [e['params']['request']['url'] for e in self.events
                if e.get('method') == 'Network.requestWillBeSent']

    def close(self):
        try: self.call('Browser.close')
        except Exception: pass
        try: self.proc.wait(10)
        except subprocess.TimeoutExpired: self.proc.kill()


HEATMAP = """(() => {
  const c = document.querySelector('.atoms-explorer canvas').getBoundingClientRect();
  return {x: c.left, y: c.top, width: 400, height: 410}; })()"""   # the heatmap: top left panel
SLIDER = "document.querySelector('.vega-bindings input[type=range]')"
VIEW = 'Object.values(window.atomsExplorers || {})[0]'


def pixels(png: bytes) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(png)).convert('RGB')).astype(int)


@pytest.fixture(scope='module')
def page_file(tmp_path_factory):
    "An explorer page of one committed run, with its static fallback, as one HTML file on disk."
    path = tmp_path_factory.mktemp('explorer')/'explorer.html'
    chart = explorer_chart(explorer_data('pong__a2c__1', frames=[0, 1]))
    path.write_text(standalone_html(ExplorerPage(chart)))
    return path


@needs_chromium
def test_explorer_page_moves_offline(page_file, tmp_path):
    browser = Browser(tmp_path/'profile')
    try:
        t0 = time.time()
        browser.call('Page.navigate', session=True, url=page_file.as_uri())
        browser.wait_for(f'{VIEW} !== undefined')
        opened = time.time() - t0
        assert browser.js("document.querySelector('.atoms-explorer-static') === null")  # SVG gone
        clip = browser.js(HEATMAP)
        before = browser.screenshot(clip)
        assert browser.js(f'{VIEW}.signal("checkpoint")') == 7
        browser.js(f'{SLIDER}.focus()')
        for _ in range(4): browser.key('ArrowLeft', 37)
        browser.wait_for(f'{VIEW}.signal("checkpoint") === 3')
        browser.js(f'{VIEW}.runAsync().then(() => true)')
        after = browser.screenshot(clip)
        changed = (np.abs(pixels(before) - pixels(after)).sum(-1) > 30).mean()
        assert changed > 0.01, f'only {changed:.2%} of the heatmap pixels changed'
        assert browser.errors() == []
        assert all(u.startswith(('file:', 'data:', 'about:')) for u in browser.requested())
        if os.environ.get('EXPLORER_SHOTS'):
            out = Path(os.environ['EXPLORER_SHOTS'])
            out.mkdir(parents=True, exist_ok=True)
            (out/'before.png').write_bytes(before)
            (out/'after.png').write_bytes(after)
            whole = browser.call('Page.captureScreenshot', session=True, format='png')['data']
            (out/'page.png').write_bytes(base64.b64decode(whole))
            (out/'timing.json').write_text(json.dumps(dict(open_s=opened, changed=changed,
                                                           bytes=page_file.stat().st_size)))
    finally:
        browser.close()


def test_live_explorer_changes_with_checkpoint_and_method():
    live = explore('pong__a2c__1', n_frames=2)          # its package keeps the final weights only
    first = live.shown['map'].copy()
    assert live.shown['source'] == 'kept' and live.shown['step'] == live.checkpoint.options[-1]
    live.checkpoint.value = live.checkpoint.options[3]
    assert live.shown['source'] == 'kept' and not np.allclose(live.shown['map'], first)
    live.method.value = Method.GRADXINPUT_TWO_PASS
    assert live.shown['map'] is None and 'no weights' in live.shown['source']
    live.checkpoint.value = live.checkpoint.options[-1]
    assert live.shown['source'] == 'computed' and live.shown['map'].shape == (84, 84)
    assert not np.allclose(live.shown['map'], first)
    assert live.data.maps.method.tolist() == [Method.GRADXINPUT_TWO_PASS]


def test_live_explorer_takes_an_observation_and_says_when_weights_are_missing():
    obs = np.zeros((4, 84, 84), np.uint8)
    obs[:, 40:44, 40:42] = 236
    live = explore('pong__a2c__1', obs=obs, n_frames=1)
    live.frame.value = ('own', 0)
    assert live.shown['source'] == 'computed' and len(live.data.boxes) == 0
    nature = explore('pong__a2c__nature__2', n_frames=1)     # a package without checkpoints
    nature.method.value = Method.OCCLUSION_TWO_PASS
    assert nature.shown['map'] is None and 'no weights' in nature.shown['source']


def test_atoms_explore_is_callable_however_imported():
    import atoms
    import atoms.explore as module
    assert callable(atoms.explore) and callable(module)
    assert module.explore is explore
