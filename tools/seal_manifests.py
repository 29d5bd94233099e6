"""Seal artifact manifests: add (or renew) the `manifest_sha256` checksum of their own text.

Readers refuse a `manifest.json` without that checksum (written before manifests were sealed) or
with one that does not match its text (edited after it was written). This script seals such a
manifest again, but only after checking that every file the manifest lists still has the sha256
recorded there, so that it cannot make corrupt data readable: if any manifest given fails that
check, nothing at all is sealed. A manifest already sealed is left byte for byte as it is.

    python tools/seal_manifests.py artifacts                  # every manifest.json under artifacts/
    python tools/seal_manifests.py runs/pong__a2c__1/manifest.json
    python tools/seal_manifests.py --dry-run artifacts        # only check and say what it would do
"""
import argparse, json, sys
from pathlib import Path

# runs from a checkout, whether or not the package is installed
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from atoms.core import (ArtifactError, MANIFEST_CHECKSUM, manifest_checksum, save_manifest,
                        verify_file)

PROG = 'seal_manifests'


def find_manifests(paths) -> list[Path]:
    "The `manifest.json` files named in `paths`, a folder standing for every one under it."
    found = []
    for path in map(Path, paths):
        if path.is_dir(): found += sorted(path.rglob('manifest.json'))
        elif path.is_file() and path.name == 'manifest.json': found.append(path)
        elif path.exists(): raise ArtifactError(f'{path}: not a manifest.json nor a folder')
        else: raise ArtifactError(f'{path}: no such file or folder')
    return list(dict.fromkeys(found))


def read_raw(path: Path) -> dict:
    "The manifest at `path` as written, seal included; `ArtifactError` if it is not one."
    try: manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f'{path}: not a readable JSON file ({type(e).__name__}: {e})') from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get('files'), dict):
        raise ArtifactError(f'{path}: not a manifest (it has no "files" table)')
    return manifest


def plan(path: Path) -> tuple[dict, str]:
    "The manifest at `path` and what sealing does to it, once every file it lists verifies."
    manifest = read_raw(path)
    for name in manifest['files']: verify_file(path.parent, name, manifest)
    if MANIFEST_CHECKSUM not in manifest: return manifest, 'sealed'
    if manifest[MANIFEST_CHECKSUM] != manifest_checksum(manifest): return manifest, 'resealed'
    return manifest, 'already sealed'


def main(argv=None) -> int:
    "Check every manifest named, then seal those that need it; 1, sealing nothing, on a refusal."
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    ap.add_argument('paths', nargs='+', metavar='PATH',
                    help='a manifest.json, or a folder to search')
    ap.add_argument('--dry-run', action='store_true', help='check and report, but write nothing')
    args = ap.parse_args(argv)
    try:
        manifests = find_manifests(args.paths)
        if not manifests: raise ArtifactError(f'{" ".join(args.paths)}: no manifest.json found')
        todo = [(path, *plan(path)) for path in manifests]
    except ArtifactError as e:
        print(f'{PROG}: refused, nothing sealed: {e}', file=sys.stderr)
        return 1
    for path, manifest, action in todo:
        if action == 'already sealed': print(f'{action}: {path}')
        elif args.dry_run: print(f'would be {action}: {path}')
        else:
            save_manifest(path.parent, manifest)
            print(f'{action}: {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
