#!/usr/bin/env python
"""Download, verify and unpack released checkpoints listed in `models/checkpoints.json`.

    python scripts/download.py list
    python scripts/download.py fetch kl-f8 cin256          # or --group first_stages / ldm, or --all
    python scripts/download.py verify kl-f8 models/first_stage_models/kl-f8/model.zip
    python scripts/download.py path kl-f8                  # where the download goes

`fetch` resumes a partial `<dest>.part` with an HTTP Range request, checks the sha256 (or,
where the manifest says `unknown`, records the first download's hash in
`models/checkpoints.recorded.json` and checks later downloads against it) and unpacks zip
archives. The shell scripts download with curl/wget and call `verify`. Gated Stable Diffusion
files need a Hugging Face token in `HF_TOKEN` after accepting the licence on the model page.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request
import zipfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MANIFEST = os.path.join(REPO_ROOT, "models", "checkpoints.json")
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download or verification failed; the message is one line saying what to do."""


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(path: str = DEFAULT_MANIFEST) -> dict[str, dict]:
    with open(path) as f:
        return {entry["name"]: entry for entry in json.load(f)["models"]}


def recorded_path(manifest_path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(manifest_path)), "checkpoints.recorded.json")


def _read_recorded(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _write_recorded(path: str, data: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def expected_hash(entry: dict, recorded_file: str) -> tuple[str | None, str]:
    """(hash to check against or None, where it comes from)."""
    if entry.get("sha256") and entry["sha256"] != "unknown":
        return entry["sha256"].lower(), "manifest"
    rec = _read_recorded(recorded_file).get(entry["name"])
    if rec:
        return rec["sha256"], f"recorded at the first download ({rec.get('recorded_at', '?')})"
    return None, "unknown"


def verify(entry: dict, path: str, recorded_file: str) -> str:
    """Check `path` against the manifest or recorded hash; record it when none is known.

    Returns "verified" or "recorded". Raises DownloadError on a size or hash mismatch (the
    bad file is kept as `<path>.bad` so that a rerun downloads afresh).
    """
    if not os.path.isfile(path):
        raise DownloadError(f"{entry['name']}: {path} does not exist")
    size = os.path.getsize(path)
    if entry.get("size") and size != int(entry["size"]):
        os.replace(path, path + ".bad")
        raise DownloadError(f"{entry['name']}: {path} has {size} bytes, expected {entry['size']} "
                            f"(incomplete or wrong file; moved to {path}.bad, download again)")
    actual = sha256_file(path)
    expected, source = expected_hash(entry, recorded_file)
    if expected is None:
        data = _read_recorded(recorded_file)
        data[entry["name"]] = {"sha256": actual, "size": size, "url": entry["url"],
                               "recorded_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
        _write_recorded(recorded_file, data)
        return "recorded"
    if actual != expected:
        os.replace(path, path + ".bad")
        raise DownloadError(f"{entry['name']}: sha256 {actual} does not match {expected} ({source}); "
                            f"the file was moved to {path}.bad: download it again")
    return "verified"


def offline_message(url: str, dest: str, name: str, reason: object) -> str:
    host = urllib.parse.urlparse(url).netloc or url
    return (f"{name}: cannot reach {host} ({reason}): this machine looks offline or the server is down. "
            f"Download {url} on a machine with internet, put it at {dest}, then run "
            f"'python scripts/download.py verify {name} {dest}'")


def fetch_url(url: str, part: str, token: str | None = None, timeout: float = 30.0) -> None:
    """Download `url` to `part`, resuming from its current size with a Range request."""
    start = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={"User-Agent": "ldm-download/1"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        status = getattr(response, "status", None)
        resumed = start > 0 and status == 206
        mode = "ab" if resumed else "wb"
        with open(part, mode) as out:
            shutil.copyfileobj(response, out, CHUNK)


def extract(entry: dict, archive: str) -> None:
    if entry.get("archive") != "zip":
        return
    folder = os.path.dirname(archive)
    with zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():
            target = os.path.abspath(os.path.join(folder, member))
            if not target.startswith(os.path.abspath(folder) + os.sep):
                raise DownloadError(f"{archive}: refusing to extract {member} outside {folder}")
        zf.extractall(folder)


def fetch(entry: dict, root: str = REPO_ROOT, manifest_path: str = DEFAULT_MANIFEST,
          timeout: float = 30.0, token: str | None = None) -> str:
    """Download (resumably), verify and unpack one manifest entry; returns the status."""
    dest = os.path.join(root, entry["dest"])
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    recorded = recorded_path(manifest_path)
    if os.path.isfile(dest):
        status = verify(entry, dest, recorded)
        extract(entry, dest)
        return f"already present ({status})"
    token = token or os.environ.get("HF_TOKEN")
    if entry.get("requires_login") and not token:
        raise DownloadError(f"{entry['name']}: needs a Hugging Face account: accept the licence ({entry.get('licence', entry['url'])}) "
                            "and set HF_TOKEN to an access token")
    part = dest + ".part"
    try:
        fetch_url(entry["url"], part, token=token, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            raise DownloadError(f"{entry['name']}: HTTP {err.code}: log in / accept the licence and set HF_TOKEN") from None
        if err.code == 416 and os.path.exists(part):  # the .part is already complete
            pass
        else:
            raise DownloadError(f"{entry['name']}: HTTP {err.code} for {entry['url']}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(offline_message(entry["url"], dest, entry["name"], reason)) from None
    os.replace(part, dest)
    status = verify(entry, dest, recorded)
    extract(entry, dest)
    return status


def _select(manifest: dict[str, dict], names: list[str], group: str | None, everything: bool) -> list[dict]:
    if everything:
        return [e for e in manifest.values() if e["group"] != "stable_diffusion"]
    chosen = [e for e in manifest.values() if group and e["group"] == group]
    for name in names:
        if name not in manifest:
            raise DownloadError(f"unknown model '{name}'; 'python scripts/download.py list' shows the names")
        chosen.append(manifest[name])
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", default=DEFAULT_MANIFEST)
    parser.add_argument("--root", default=REPO_ROOT, help="folder the manifest's paths are relative to")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list")
    p_fetch = sub.add_parser("fetch")
    p_fetch.add_argument("names", nargs="*")
    p_fetch.add_argument("--group", choices=["first_stages", "ldm", "stable_diffusion"])
    p_fetch.add_argument("--all", action="store_true", help="every first stage and LDM (not the gated SD files)")
    p_fetch.add_argument("--timeout", type=float, default=30.0)
    p_verify = sub.add_parser("verify")
    p_verify.add_argument("name")
    p_verify.add_argument("file")
    p_path = sub.add_parser("path")
    p_path.add_argument("name")
    args = parser.parse_args(argv)
    try:
        manifest = load_manifest(args.manifest)
        if args.command == "list":
            for e in manifest.values():
                login = "  [Hugging Face login + licence]" if e.get("requires_login") else ""
                print(f"{e['name']:28s} {e['group']:17s} {e['config']}{login}")
        elif args.command == "path":
            entry = _select(manifest, [args.name], None, False)[0]
            print(os.path.join(args.root, entry["dest"]))
        elif args.command == "verify":
            entry = _select(manifest, [args.name], None, False)[0]
            status = verify(entry, args.file, recorded_path(args.manifest))
            extract(entry, args.file)
            print(f"{args.name}: {status}")
        else:
            entries = _select(manifest, args.names, args.group, args.all)
            if not entries:
                parser.error("name models, or give --group or --all")
            for entry in entries:
                print(f"{entry['name']}: {fetch(entry, args.root, args.manifest, args.timeout)}")
    except DownloadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
