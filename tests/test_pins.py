"""Pins that a refactor must not move: the ATOMs of the committed agents and same-seed training weights.

The ATOM test recomputes, with today's library, the ATOMs of two committed checkpoints per run on the
committed evaluation set and compares them with the committed `atoms.parquet` rows (written when the
run was analysed). The weight pins hash a tiny training run of each algorithm; float results depend on
the CPU's vector unit, so they are checked only on the kind of CPU they were recorded on."""
import hashlib, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import torch
from atoms.analysis import analysed_relevance_seed, split_method
from atoms.attention import Metric
from atoms.core import artifacts_dir, cpu_model, load_table, load_weights, read_manifest
from atoms.evalset import load_eval_set
from atoms.policies import load_checkpoint
from atoms.relevance import checkpoint_atoms
from atoms.training import TrainConfig, train

RUNS = sorted(p.name for p in (artifacts_dir()/'runs').iterdir()   # packages with weights (seed 1)
              if (p/'atoms.parquet').exists() and read_manifest(p).get('checkpoint_steps'))
KEYS = ['step', 'object', 'metric', 'method']
# The relevance shares now skip (and count) frames without relevance to share instead of turning the whole
# checkpoint into NaN. Tables analysed before that change lack the count rows and hold NaN shares where one
# frame had none; only there may the recomputed share be finite, and only if the new count says frames
# were skipped.
SKIP_COUNT = {Metric.SHARE_POS: Metric.SHARE_POS_SKIPPED, Metric.SHARE_POS_PER_PX: Metric.SHARE_POS_SKIPPED,
              Metric.SHARE_ABS: Metric.SHARE_ABS_SKIPPED, Metric.SHARE_ABS_PER_PX: Metric.SHARE_ABS_SKIPPED}


def newly_finite(both, new) -> np.ndarray:
    "Rows of `both` that were NaN and are now finite because the share skipped frames without relevance."
    counts = new[new.metric.isin(set(SKIP_COUNT.values()))].set_index(['metric', 'object']).value
    skipped = [m in SKIP_COUNT and counts.get((SKIP_COUNT[m], g), 0) > 0 for m, g in zip(both.metric, both.object)]
    return (both.value_old.isna() & both.value_new.notna() & np.array(skipped, bool)).to_numpy()


@pytest.mark.parametrize('name', RUNS)
def test_committed_atoms_unchanged(name):
    run = artifacts_dir()/'runs'/name
    steps = read_manifest(run)['checkpoint_steps']
    table = load_table(run/'atoms.parquet')
    seed = analysed_relevance_seed(run)   # 'output': the committed tables predate the setting
    torch.set_num_threads(1)
    for step in sorted({steps[len(steps) // 2], steps[-1]}):
        net, meta = load_checkpoint(run/'checkpoints'/f'step_{step:09d}.safetensors')
        es = load_eval_set(meta['config']['game'])
        old = table[table.step == step]
        for m in sorted(set(old.method)):
            new = checkpoint_atoms(net, torch.as_tensor(es['obs']), es['labels'], es['objects'], step,
                                   *split_method(m), relevance_seed=seed)
            counts_are_new = not old.metric.isin(set(SKIP_COUNT.values())).any()
            compared = new[~new.metric.isin(set(SKIP_COUNT.values()))] if counts_are_new else new
            both = old[old.method == m].merge(compared, on=KEYS, suffixes=('_old', '_new'))
            assert len(both) == (old.method == m).sum() == len(compared), f'{name} {step} {m}: rows differ'
            same = ~newly_finite(both, new)
            np.testing.assert_allclose(both.value_new[same], both.value_old[same], atol=1e-6, rtol=0,
                                       err_msg=f'{name} step {step} {m}')


TINY = dict(total_steps=2000, num_envs=4, n_steps=5, checkpoints=4, eval_points=4, eval_envs=4,
            progress=False, threads=1)
DQN = dict(learning_starts=100, buffer_mb=4, n_steps=1, batch_size=8, total_steps=400)
# Same-seed weights are bit-identical on one machine, but the kernels torch picks (and so the bits)
# depend on the CPU: pins per (torch CPU capability, model name prefix), the most specific match
# first. The first pins were recorded on an AVX512 CPU whose model was not recorded (not this AMD
# EPYC, where the same training gives other bits, reproducibly).
WEIGHT_PINS = {
    ('AVX512', 'AMD EPYC'): {'a2c': '8d8780862ddeef26', 'ppo': 'd3d7d2aaa73d2066',
                             'dqn': 'b4bacb35e8f7c42d'},
    ('AVX512', ''): {'a2c': 'f8f952de17d74a3c', 'ppo': 'f292ae697cd231ca',
                     'dqn': '775690c1b92872d7'},
}


def machine_pins() -> dict | None:
    "The pins recorded for this machine's CPU, or None."
    capability, model = torch.backends.cpu.get_cpu_capability(), cpu_model()
    matches = [(len(prefix), pins) for (cap, prefix), pins in WEIGHT_PINS.items()
               if cap == capability and model.startswith(prefix)]
    return max(matches, key=lambda m: m[0])[1] if matches else None


@pytest.mark.skipif(machine_pins() is None, reason='no weight pins recorded for this CPU')
@pytest.mark.parametrize('algo', ['a2c', 'dqn', 'ppo'])
def test_same_seed_weights_pinned(tmp_path, algo):
    cfg = TrainConfig(algo=algo, run_dir=str(tmp_path), **{**TINY, **(DQN if algo == 'dqn' else {})})
    final = sorted((Path(train(cfg))/'checkpoints').glob('*.safetensors'))[-1]
    weights, h = load_weights(final)[0], hashlib.sha256()
    for k in sorted(weights):
        h.update(k.encode())
        h.update(weights[k].numpy().tobytes())
    assert h.hexdigest()[:16] == machine_pins()[algo]


@pytest.mark.skipif(machine_pins() is None, reason='no weight pins recorded for this CPU')
def test_steady_malloc_keeps_weights(tmp_path):
    "The allocator thresholds the CLI and the study's tasks set (`steady_malloc`) change no bit of training."
    code = ('import hashlib, sys; from pathlib import Path; from atoms.core import steady_malloc, load_weights; '
            'from atoms.training import TrainConfig, train; '
            f'assert steady_malloc(); cfg = TrainConfig(algo="a2c", run_dir={str(tmp_path)!r}, **{TINY!r}); '
            'w = load_weights(sorted((Path(train(cfg))/"checkpoints").glob("*.safetensors"))[-1])[0]; '
            'h = hashlib.sha256(); [(h.update(k.encode()), h.update(w[k].numpy().tobytes())) for k in sorted(w)]; '
            'print(h.hexdigest()[:16])')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-1] == machine_pins()['a2c']
