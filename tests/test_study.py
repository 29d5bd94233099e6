"""`atoms study` through a real Dask scheduler and two worker processes on 127.0.0.1."""
import hashlib, json, os, signal, socket, subprocess, sys, threading, time
from dataclasses import asdict, replace
from pathlib import Path
import pandas as pd, pytest
from distributed import Client
from tqdm.auto import tqdm
from atoms.analysis import checkpoints_of
from atoms.core import read_manifest
from atoms.study import StudyConfig, collect, connect, disconnect, expand, study, train_config

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_for_workers(address: str, n: int, timeout: float = 60):
    with Client(address, timeout=timeout) as client: client.wait_for_workers(n, timeout=timeout)


@pytest.fixture(scope='module')
def cluster():
    "A `dask scheduler` and two single-threaded `dask worker` processes; killed at the end."
    port = free_port()
    address = f'tcp://127.0.0.1:{port}'
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    host = ['--host', '127.0.0.1', '--no-dashboard']
    procs = [subprocess.Popen([BIN/'dask', 'scheduler', '--port', str(port), *host], **quiet)]
    def add_worker():
        worker = [BIN/'dask', 'worker', address, '--nthreads', '1', '--no-nanny', *host]
        procs.append(subprocess.Popen(worker, **quiet))
    info = dict(address=address, procs=procs, add_worker=add_worker)
    try:
        for _ in range(2): add_worker()
        wait_for_workers(address, 2)
        yield info
    finally:
        for p in procs:
            if p.poll() is None: p.kill()
        for p in procs: p.wait(timeout=30)


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp('study')
    return StudyConfig(games=('pong', 'pong-2balls'), crosseval_games=('pong', 'pong-2balls'),
                       seeds=(1, 2), total_steps=1600, num_envs=4,
                       checkpoints=3, eval_points=4, eval_envs=4, n_frames=8, map_checkpoints=2,
                       dbdt_trials=4, runs_root=str(root/'runs'), packages=str(root/'packages'),
                       progress=False, connect_timeout_s=5)


def snapshot(*folders) -> dict:
    "sha256 and mtime of every file under `folders`."
    return {p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for f in folders for p in sorted(Path(f).rglob('*')) if p.is_file()}


def tables(cfg: StudyConfig) -> dict:
    "The result tables of every run, without the columns that measure time."
    out = {}
    for run in sorted(Path(cfg.runs_root).glob('*__*')):
        for name in ('atoms.parquet', 'log.parquet', 'dbdt/dbdt.parquet',
                     'crosseval/crosseval.parquet'):
            if (run/name).exists():
                df = pd.read_parquet(run/name)
                timing = [c for c in df if c in ('charts/SPS', 'time/elapsed_s')]
                out[run.name, name] = df.drop(columns=timing)
    return out


def test_study_completes_then_skips(cluster, tiny):
    cfg = replace(tiny, scheduler=cluster['address'])
    table = study(cfg)
    assert set(table['status']) == {'done'}, table
    assert len(table) == 4 * 7   # train, analyse, dbdt, crosseval, intervene, robustness, package: 4 runs
    steps = list(table[table.run == 'pong__a2c__small__1'].step)
    assert steps == ['train', 'analyse', 'dbdt', 'crosseval', 'intervene', 'robustness', 'package']
    runs, packages = Path(cfg.runs_root), Path(cfg.packages)
    assert (runs/'pong-2balls__a2c__small__2'/'dbdt'/'dbdt.parquet').exists()
    assert (runs/'pong__a2c__small__1'/'dbdt'/'dbdt.parquet').exists()   # pong agents meet two balls too
    crosseval = pd.read_parquet(runs/'pong__a2c__small__1'/'crosseval'/'crosseval.parquet')
    assert set(crosseval.eval_game) == {'pong', 'pong-2balls'}
    assert (runs/'logs'/'pong__a2c__small__1.train.log').exists()
    for name in ('atoms.parquet', 'crosseval/crosseval.parquet', 'intervene/intervene.parquet'):   # package last
        assert (packages/'pong__a2c__small__1'/name).exists()
    assert (packages/'pong-2balls__a2c__small__2'/'dbdt'/'dbdt.parquet').exists()
    kept = {seed: read_manifest(packages/f'pong__a2c__small__{seed}')['checkpoint_steps']
            for seed in (1, 2)}
    final = checkpoints_of(runs/'pong__a2c__small__1')[-1][0]
    assert kept == {1: [final], 2: []}      # seed 1 keeps its final checkpoint, the others none
    before = snapshot(cfg.runs_root, cfg.packages)
    again = study(cfg)
    assert set(again['status']) == {'skipped'}
    assert snapshot(cfg.runs_root, cfg.packages) == before     # nothing rewritten


def kill_a_worker_mid_train(address: str, runs_root: str, procs: list) -> tuple[int, str]:
    "Wait until a worker trains a run that has saved a resume state, then SIGKILL that worker."
    with Client(address, timeout=30) as client:
        for _ in range(3000):
            busy = [(w, str(k)) for w, keys in client.processing().items() for k in keys
                    if str(k).startswith('train-')]
            run = lambda key: Path(runs_root)/key[len('train-'):-len('-12345678')]
            busy = [(w, k) for w, k in busy if (run(k)/'state.safetensors').exists()]
            if busy: break
            time.sleep(0.02)
        else: raise AssertionError('no training task got under way')
        pid = client.run(os.getpid, workers=[busy[0][0]])[busy[0][0]]
    assert pid in [p.pid for p in procs]
    os.kill(pid, signal.SIGKILL)
    return pid, run(busy[0][1]).name


def test_collect_ignores_a_later_default_client(cluster):
    "The cause of a past hang: a client opened after the study's, closed while the study waits."
    client = connect(StudyConfig(scheduler=cluster['address']))
    try:
        nap = client.submit(time.sleep, 2, pure=False)
        status = client.submit(dict, run='r', step='s', status='done', after=nap, pure=False)
        later = Client(cluster['address'], timeout=10)   # this process's default client from now
        threading.Timer(0.5, later.close).start()        # closed (its loop stopped) before `nap` ends
        out = []
        waiter = threading.Thread(daemon=True, target=lambda: out.extend(
            collect(client, {status: {}}, tqdm(disable=True))))
        waiter.start()
        waiter.join(timeout=60)
        assert not waiter.is_alive(), 'collect hung on the loop of a closed client'
        assert out[0]['status'] == 'done'
    finally: disconnect(client)


def test_lost_worker_still_completes_identically(cluster, tiny, tmp_path):
    "Killing a worker mid-task still completes the study, with tables equal to an undisturbed run."
    undisturbed = replace(tiny, scheduler=cluster['address'])
    if not Path(undisturbed.runs_root).exists(): study(undisturbed)
    cfg = replace(undisturbed, games=('pong',), runs_root=str(tmp_path/'runs'),
                  packages=str(tmp_path/'packages'))
    out = {}
    runner = threading.Thread(target=lambda: out.update(table=study(cfg)), daemon=True)
    runner.start()
    killed, run = kill_a_worker_mid_train(cfg.scheduler, cfg.runs_root, cluster['procs'])
    cluster['add_worker']()                            # a replacement joins, as on a real cluster
    runner.join(timeout=300)
    assert not runner.is_alive(), 'the study had not returned 300 s after the worker was killed'
    assert set(out['table']['status']) == {'done'}, out['table']
    assert next(p for p in cluster['procs'] if p.pid == killed).wait(timeout=10) == -signal.SIGKILL
    log = (Path(cfg.runs_root)/'logs'/f'{run}.train.log').read_text()
    assert log.count(' TrainConfig {') == 2            # the lost task ran again, resuming from disk
    got, want = tables(cfg), tables(undisturbed)
    assert len(got) == 2 * 4 and set(got) <= set(want)     # atoms, log, dbdt, crosseval of two runs
    for k in got: pd.testing.assert_frame_equal(got[k], want[k], obj=str(k))


@pytest.mark.parametrize('change, message', [
    (dict(games=('tennis',)), "StudyConfig.games: unknown game 'tennis'"),
    (dict(algos=('sac',)), "StudyConfig.algos: unknown algo 'sac'"),
    (dict(nets=('huge',)), "StudyConfig.nets: unknown net 'huge'"),
    (dict(seeds=()), 'StudyConfig.seeds: empty'),
    (dict(relevance_seed='max'), "StudyConfig.relevance_seed: unknown seed 'max'"),
    (dict(steps=('train', 'plot')), "StudyConfig.steps: unknown step 'plot'"),
])
def test_bad_names(tiny, change, message):
    with pytest.raises(ValueError, match=message): study(replace(tiny, **change))


def test_unreachable_scheduler_fails_fast(tiny, tmp_path):
    t0 = time.monotonic()
    cfg = replace(tiny, runs_root=str(tmp_path), scheduler=f'tcp://127.0.0.1:{free_port()}',
                  connect_timeout_s=1)
    with pytest.raises(ValueError, match='StudyConfig.scheduler: cannot reach'): study(cfg)
    assert time.monotonic() - t0 < 15


def test_foreign_run_folder_is_refused(tiny, tmp_path):
    made = replace(tiny, runs_root=str(tmp_path/'runs'))    # a run folder as the tiny study makes it
    key = expand(made)[0]
    (tmp_path/'runs'/key.name).mkdir(parents=True)
    (tmp_path/'runs'/key.name/'config.json').write_text(json.dumps(asdict(train_config(made, key))))
    cfg = replace(made, total_steps=3200)
    before = snapshot(tmp_path)
    message = r'StudyConfig.runs_root: .* another config \(total_steps: 1600 there, 3200 here\)'
    with pytest.raises(ValueError, match=message): study(cfg)
    assert snapshot(tmp_path) == before


def test_a_failed_run_does_not_stop_the_others(cluster, tiny, tmp_path, capsys):
    cfg = replace(tiny, games=('pong',), scheduler=cluster['address'],
                  runs_root=str(tmp_path/'runs'), packages=str(tmp_path/'packages'))
    (tmp_path/'runs').mkdir()
    (tmp_path/'runs'/'pong__a2c__small__2').write_text('a file where the run folder should be')
    table = study(cfg).set_index(['run', 'step'])['status']
    assert list(table['pong__a2c__small__1']) == ['done'] * 7
    assert list(table['pong__a2c__small__2']) == ['failed'] + ['blocked'] * 6
    err = capsys.readouterr().err
    log = tmp_path/'runs'/'logs'/'pong__a2c__small__2.train.log'
    assert 'failed: pong__a2c__small__2 train: FileExistsError' in err and f'(log: {log})' in err
    assert 'Traceback' in log.read_text()
