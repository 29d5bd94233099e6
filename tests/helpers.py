"Small helpers shared by the tests (imported as `from helpers import ...`; pytest puts tests/ on the path)."
from pathlib import Path
from atoms.core import sha256


def folder_hashes(folder) -> dict:
    "sha256 of every file under `folder`, by its path relative to it: to show a command changed nothing."
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): sha256(p) for p in sorted(folder.rglob('*')) if p.is_file()}


def flip_byte(path, at: int = -20):
    "Invert one byte of the file at `path` (offset `at`, negative from the end)."
    data = bytearray(Path(path).read_bytes())
    data[at] ^= 0xFF
    Path(path).write_bytes(bytes(data))
