"""Where a model comes from: hub ids, local folders, and the save folder it is put in.

The Hugging Face hub cannot be reached from the test machine, so a small HTTP server
answers the two requests ``huggingface_hub.hf_hub_download`` makes for each file
(``HEAD`` then ``GET`` on ``/<repo_id>/resolve/<revision>/<filename>``) from an exported
model folder, and ``HF_ENDPOINT`` points the real code at it. ``jsqa score`` then runs
with a hub id, in a fresh process, exactly as it would against huggingface.co.

A save folder holds one model: loading model B into a folder that held model A's
files gives model B. A mistyped local folder is refused at once, not looked up on the
hub.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest
import soundfile as sf
import torch
from speechbrain.utils.fetching import FetchFrom

from jsqa_sb import JSQA
from jsqa_sb.serving.yaml_security import (
    SAVE_FOLDER_STAMP,
    ModelSourceError,
    UnsafeModelError,
    model_source,
)

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
    # The save folder now records the hub model; loading a local model into it refills it.
    stamp = json.loads((tmp_path / "sd" / SAVE_FOLDER_STAMP).read_text())
    assert stamp["source"] == f"hub:{REPO_ID}"
    assert (tmp_path / "sd" / "hyperparams.yaml").resolve().is_relative_to(tmp_path / "hf_home")
    JSQA.from_hparams(source=str(model_folder), savedir=tmp_path / "sd")
    assert (tmp_path / "sd" / "hyperparams.yaml").resolve() == model_folder / "hyperparams.yaml"


def test_hf_prefix_loads_the_hub_model_where_owner_is_a_folder(hub, speech, tmp_path):
    endpoint, requests = hub
    audio, sr = speech
    sf.write(tmp_path / "a.wav", audio, sr)
    (tmp_path / REPO_ID.split("/")[0]).mkdir()  # owner/ here: REPO_ID alone names a folder
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path / "hf_home")}
    env.pop("HF_HUB_OFFLINE", None)
    cmd = [sys.executable, "-m", "jsqa_sb.cli", "score", f"hf://{REPO_ID}", "a.wav"]
    cmd += ["--out", "scores.csv", "--savedir", "sd", "--no_progress"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert pd.read_csv(tmp_path / "scores.csv")["mos"].notna().all()
    assert any(method == "GET" and path.endswith("head.ckpt") for method, path in requests)
    stamp = json.loads((tmp_path / "sd" / SAVE_FOLDER_STAMP).read_text())
    assert stamp["source"] == f"hub:{REPO_ID}"  # the same model as REPO_ID from elsewhere


# --------------------------------------------------------------- one model per save folder
@pytest.fixture(scope="module")
def other_models(model_folder, pretrain_run, tmp_path_factory):
    """Model B: the same network with other head weights; C: an encoder-only export."""
    from jsqa_sb.serving.hub_export import export_model

    root = tmp_path_factory.mktemp("others")
    other = root / "other"
    shutil.copytree(model_folder, other)
    torch.manual_seed(7)
    head = torch.load(other / "head.ckpt", weights_only=True)
    torch.save({k: torch.randn_like(v) for k, v in head.items()}, other / "head.ckpt")
    return other, export_model(pretrain_run, root / "encoder_only")


def scores(model, wav):
    return model.score_batch(wav)


def test_a_save_folder_used_for_another_model_is_refilled(model_folder, other_models, tmp_path):
    other, encoder_only = other_models
    wav = 0.1 * torch.randn(2, 16000)
    saved = tmp_path / "pretrained_models" / "jsqa"  # the README's fixed savedir
    expected_a = scores(JSQA.from_hparams(source=str(model_folder), savedir=tmp_path / "a"), wav)
    expected_b = scores(JSQA.from_hparams(source=str(other), savedir=tmp_path / "b"), wav)
    assert not torch.allclose(expected_a, expected_b)

    torch.testing.assert_close(
        scores(JSQA.from_hparams(model_folder, savedir=saved), wav), expected_a
    )
    torch.testing.assert_close(
        scores(JSQA.from_hparams(str(other), savedir=saved), wav), expected_b
    )
    assert (saved / "head.ckpt").resolve() == other / "head.ckpt"
    # an encoder-only model leaves no head.ckpt of the earlier one behind
    model = JSQA.from_hparams(source=str(encoder_only), savedir=saved)
    assert model.output_names == () and not (saved / "head.ckpt").exists()
    assert sorted(p.name for p in saved.iterdir() if p.is_symlink()) == [
        "encoder.ckpt",
        "hyperparams.yaml",
    ]
    # and back: the first model again, not what the folder held last
    torch.testing.assert_close(
        scores(JSQA.from_hparams(model_folder, savedir=saved), wav), expected_a
    )


def test_a_save_folder_of_unknown_origin_is_refilled(model_folder, other_models, tmp_path):
    other, _ = other_models
    saved = tmp_path / "sd"
    JSQA.from_hparams(source=str(model_folder), savedir=saved)
    (saved / SAVE_FOLDER_STAMP).unlink()  # as an earlier version of jsqa_sb left it
    model = JSQA.from_hparams(source=str(other), savedir=saved)
    assert (saved / "hyperparams.yaml").resolve() == other / "hyperparams.yaml"
    assert (saved / "head.ckpt").resolve() == other / "head.ckpt"
    wav = 0.1 * torch.randn(1, 16000)
    fresh = JSQA.from_hparams(source=str(other), savedir=tmp_path / "fresh")
    torch.testing.assert_close(scores(model, wav), scores(fresh, wav))


def test_the_model_folder_itself_as_save_folder_is_left_alone(other_models, tmp_path):
    other, _ = other_models
    folder = tmp_path / "m"
    shutil.copytree(other, folder)
    before = sorted(p.name for p in folder.iterdir())
    JSQA.from_hparams(source=str(folder), savedir=folder)
    assert sorted(p.name for p in folder.iterdir()) == before  # no stamp, nothing relinked


def test_traversal_loadable_names_are_refused_even_when_trusted(model_folder, tmp_path):
    folder = tmp_path / "models" / "evil"
    shutil.copytree(model_folder, folder)
    yaml = folder / "hyperparams.yaml"
    yaml.write_text(
        yaml.read_text().replace("        head: !ref <head>", "        ../../escape: !ref <head>")
    )
    saved = tmp_path / "sd" / "inner"
    with pytest.raises(UnsafeModelError, match=r"loadable '\.\./\.\./escape'"):
        JSQA.from_hparams(source=str(folder), savedir=saved, trust_remote_code=True)
    assert not list(tmp_path.rglob("escape*"))  # no link outside (or inside) the save folder


# ------------------------------------------------------------ a folder or a hub id
@pytest.mark.parametrize(
    "source",
    [
        "models/jsqaa",
        "./models/jsqa",
        "models/jsqa/extra",
        "/nonexistent/jsqa",
        "~/no-such-jsqa-model",
        "jsqaa",
    ],
)
def test_a_mistyped_folder_says_no_such_folder_without_a_hub_look_up(source, tmp_path, monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()  # where the user exported their model: models/jsqa
    start = time.perf_counter()
    with pytest.raises(ModelSourceError, match=r"no such folder"):
        JSQA.from_hparams(source=source, savedir=tmp_path / "sd")
    assert time.perf_counter() - start < 1.0
    assert not (tmp_path / "sd").exists()


def test_the_cli_says_no_such_folder_at_once(speech, tmp_path, monkeypatch, capsys):
    from jsqa_sb.cli import main

    audio, sr = speech
    sf.write(tmp_path / "a.wav", audio, sr)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    assert main(["score", "models/jsqaa", "a.wav", "--no_progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jsqa: error: models/jsqaa: no such folder") and "\n" not in err


def test_a_file_is_not_a_model_folder(model_folder):
    with pytest.raises(ModelSourceError, match="is a file, not a model folder"):
        JSQA.from_hparams(source=str(model_folder / "hyperparams.yaml"))


def test_hub_ids_and_folders_are_told_apart_without_the_network(
    model_folder, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    assert model_source(REPO_ID) == REPO_ID  # owner/name, and no folder jsqa-tests/ here
    (tmp_path / "jsqa-tests").mkdir()  # now owner/ is a folder here: owner/name is a path
    with pytest.raises(ModelSourceError, match=f"give hf://{REPO_ID}"):
        model_source(REPO_ID)
    assert tuple(model_source(f"hf://{REPO_ID}")) == (FetchFrom.HUGGING_FACE, REPO_ID)
    for bad in ("hf://jsqa-tests", "hf://../x", "hf://a/b/c"):
        with pytest.raises(ModelSourceError, match="not a hub id"):
            model_source(bad)
    assert model_source(str(model_folder)) == str(model_folder)
    (tmp_path / "demo_out" / "model").mkdir(parents=True)
    assert model_source("demo_out/model") == "demo_out/model"  # an existing folder wins
