"""The zoo: manifest consistency, hashing, first-hash recording, resume, the offline message.

Downloads go to a server on 127.0.0.1 started by the test (bounded, stops by itself)."""
from __future__ import annotations

import hashlib
import http.server
import json
import re
import socket
import threading

import pytest

from tests.checkpoint.test_saving import load_script
from tests.conftest import REPO_ROOT

dl = load_script("download")


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves `self.server.payload` at any path, honouring `Range: bytes=N-`."""

    def do_GET(self):
        data = self.server.payload
        match = re.match(r"bytes=(\d+)-", self.headers.get("Range", ""))
        start = int(match.group(1)) if match else 0
        self.server.requests.append(start)  # before answering: the client may finish first
        self.send_response(206 if match else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.HTTPServer(("127.0.0.1", 0), RangeHandler)
    srv.payload, srv.requests = b"", []
    srv.timeout = 5
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def entry(url: str, sha="unknown", size=None, dest="models/x/model.ckpt") -> dict:
    return {"name": "x", "group": "ldm", "url": url, "archive": None, "dest": dest, "sha256": sha,
            "size": size, "requires_login": False}


def test_manifest_lists_the_urls_of_the_shell_scripts():
    manifest = dl.load_manifest()
    urls = {e["name"]: e["url"] for e in manifest.values()}
    for script in ("download_first_stages.sh", "download_models.sh"):
        text = (REPO_ROOT / "scripts" / script).read_text()
        pairs = re.findall(r'"([\w.-]+) (https://\S+)"', text)
        assert pairs, script
        for name, url in pairs:
            assert urls[name] == url, name
    for e in manifest.values():
        assert e["sha256"] == "unknown" or re.fullmatch(r"[0-9a-f]{64}", e["sha256"]), e["name"]
        assert e["config"].endswith(".yaml")
        if e["group"] == "stable_diffusion" and "CompVis" in e["url"]:
            assert e["requires_login"]
    assert urls["kl-f8"] == "https://ommer-lab.com/files/latent-diffusion/kl-f8.zip"


def test_verify_records_the_first_hash_then_checks_it(tmp_path):
    recorded = tmp_path / "checkpoints.recorded.json"
    f = tmp_path / "model.ckpt"
    f.write_bytes(b"first download")
    e = entry("file:///unused")
    assert dl.verify(e, str(f), str(recorded)) == "recorded"
    assert json.loads(recorded.read_text())["x"]["sha256"] == hashlib.sha256(b"first download").hexdigest()
    assert dl.verify(e, str(f), str(recorded)) == "verified"
    f.write_bytes(b"tampered")
    with pytest.raises(dl.DownloadError, match="does not match"):
        dl.verify(e, str(f), str(recorded))
    assert (tmp_path / "model.ckpt.bad").exists() and not f.exists()


def test_verify_against_a_published_hash_and_size(tmp_path):
    f = tmp_path / "m.ckpt"
    f.write_bytes(b"abc")
    good = hashlib.sha256(b"abc").hexdigest()
    assert dl.verify(entry("u", sha=good, size=3), str(f), str(tmp_path / "r.json")) == "verified"
    with pytest.raises(dl.DownloadError, match="expected 4"):
        dl.verify(entry("u", sha=good, size=4), str(f), str(tmp_path / "r.json"))


def test_fetch_resumes_a_partial_download(tmp_path, server):
    payload = bytes(range(256)) * 400
    server.payload = payload
    e = entry(f"http://127.0.0.1:{server.server_port}/model.ckpt", sha=hashlib.sha256(payload).hexdigest())
    dest = tmp_path / e["dest"]
    dest.parent.mkdir(parents=True)
    (tmp_path / (e["dest"] + ".part")).write_bytes(payload[:1000])
    manifest = tmp_path / "checkpoints.json"
    assert dl.fetch(e, root=str(tmp_path), manifest_path=str(manifest), timeout=5) == "verified"
    assert server.requests == [1000] and dest.read_bytes() == payload
    assert dl.fetch(e, root=str(tmp_path), manifest_path=str(manifest)).startswith("already present")


def test_fetch_unpacks_zip_archives(tmp_path, server):
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("model.ckpt", b"weights")
    server.payload = buf.getvalue()
    e = dict(entry(f"http://127.0.0.1:{server.server_port}/kl.zip", dest="models/kl/model.zip"), archive="zip")
    assert dl.fetch(e, root=str(tmp_path), manifest_path=str(tmp_path / "m.json"), timeout=5) == "recorded"
    assert (tmp_path / "models" / "kl" / "model.ckpt").read_bytes() == b"weights"


def test_offline_gives_a_clear_message(tmp_path):
    with socket.socket() as s:  # a port on this machine with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    e = entry(f"http://127.0.0.1:{port}/model.ckpt")
    with pytest.raises(dl.DownloadError) as info:
        dl.fetch(e, root=str(tmp_path), manifest_path=str(tmp_path / "m.json"), timeout=2)
    msg = str(info.value)
    assert "offline" in msg and "scripts/download.py verify x" in msg and "\n" not in msg


def test_gated_files_need_a_token(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert dl.main(["--root", str(tmp_path), "fetch", "sd-v1-4"]) == 1
    err = capsys.readouterr().err
    assert "Hugging Face account" in err and "HF_TOKEN" in err
