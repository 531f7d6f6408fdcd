"""Loading a model by hub id: the real download code, against a local stand-in server.

The Hugging Face hub cannot be reached from the test machine, so a small HTTP server
answers the two requests ``huggingface_hub.hf_hub_download`` makes for each file
(``HEAD`` then ``GET`` on ``/<repo_id>/resolve/<revision>/<filename>``) from an exported
model folder, and ``HF_ENDPOINT`` points the real code at it. ``jsqa score`` then runs
with a hub id, in a fresh process, exactly as it would against huggingface.co.
"""

import hashlib
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest
import soundfile as sf

from jsqa_sb import JSQA

REPO_ID = "jsqa-tests/tiny-model"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _server(folder, requests):
    class Handler(BaseHTTPRequestHandler):
        def _file(self):
            prefix = f"/{REPO_ID}/resolve/"
            if not self.path.startswith(prefix):
                return None
            name = self.path[len(prefix) :].split("/", 1)[1]
            path = folder / name
            return path if path.is_file() else None

        def _headers(self, path):
            data = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("X-Repo-Commit", COMMIT)
            self.end_headers()
            return data

        def do_HEAD(self):  # noqa: N802 (http.server's naming)
            requests.append(("HEAD", self.path))
            path = self._file()
            if path is None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.end_headers()
                return
            self._headers(path)

        def do_GET(self):  # noqa: N802
            requests.append(("GET", self.path))
            path = self._file()
            if path is None:
                self.send_response(404)
                self.end_headers()
                return
            self.wfile.write(self._headers(path))

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def hub(model_folder):
    requests = []
    server = _server(model_folder, requests)
    yield f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()


def test_score_by_hub_id_downloads_through_huggingface_hub(hub, model_folder, speech, tmp_path):
    endpoint, requests = hub
    audio, sr = speech
    wav = tmp_path / "a.wav"
    sf.write(wav, audio, sr)
    env = {
        **os.environ,
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("HF_HUB_OFFLINE", None)
    out = tmp_path / "scores.csv"
    cmd = [sys.executable, "-m", "jsqa_sb.cli", "score", REPO_ID, str(wav), "--out", str(out)]
    result = subprocess.run(
        cmd + ["--savedir", str(tmp_path / "sd"), "--no_progress"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    fetched = {path.rsplit("/", 1)[1] for method, path in requests if method == "GET"}
    assert {"hyperparams.yaml", "encoder.ckpt", "head.ckpt"} <= fetched
    local = JSQA.from_hparams(source=str(model_folder), savedir=tmp_path / "local")
    score = pd.read_csv(out)["mos"].iloc[0]
    assert score == pytest.approx(local.score_file(wav)["mos"], abs=1e-6)
