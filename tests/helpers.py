"Small helpers shared by the tests (imported as `from helpers import ...`; pytest puts tests/ on the path)."
import shutil
from pathlib import Path
from atoms.core import sha256
from atoms.evalset import EvalSetConfig, save_eval_set
from atoms.training import TrainConfig, train


def folder_hashes(folder) -> dict:
    "sha256 of every file under `folder`, by its path relative to it: to show a command changed nothing."
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): sha256(p) for p in sorted(folder.rglob('*')) if p.is_file()}


def flip_byte(path, at: int = -20):
    "Invert one byte of the file at `path` (offset `at`, negative from the end)."
    data = bytearray(Path(path).read_bytes())
    data[at] ^= 0xFF
    Path(path).write_bytes(bytes(data))


def tiny_run_and_eval_sets(tmp, games=('pong',), n: int = 6) -> tuple[Path, dict]:
    "A tiny trained pong run in `tmp`/run and an `n`-frame evaluation set per game (game -> folder)."
    run = train(TrainConfig(total_steps=480, num_envs=4, n_steps=4, checkpoints=3, eval_points=4,
                            eval_envs=4, run_dir=str(Path(tmp)/'run'), progress=False))
    sets = {game: save_eval_set(EvalSetConfig(game=game, n=n, out=str(Path(tmp)/'eval'/game)))
            for game in games}
    return Path(run), sets


def copy_run(made_run, tmp_path):
    "A fresh copy of a made run, at `tmp_path`/runs/pong__a2c__1."
    return Path(shutil.copytree(made_run, Path(tmp_path)/'runs'/'pong__a2c__1'))
