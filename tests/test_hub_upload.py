"""Tests of ``jsqa upload`` (``jsqa_sb.serving.hub_upload.upload_model``).

The hub cannot be reached from the test machines, so the calls go to a stand-in API
object (``FakeApi``) that records them; what is tested is the call sequence, the
checks made before any call, and how hub errors are reported. The huggingface_hub
error classes raised are the real ones.
"""

import httpx
import huggingface_hub
import pytest
from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

from jsqa_sb.serving.hub_upload import STALE_PATTERNS, HubUploadError, upload_model

REPO_ID = "someone/jsqa-nisqa"


class FakeApi:
    """Records ``create_repo`` and ``upload_folder`` calls; can raise from create_repo."""

    instances = []

    def __init__(self, token=None, create_error=None):
        self.token = token
        self.create_error = create_error
        self.calls = []
        FakeApi.instances.append(self)

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))
        if self.create_error is not None:
            raise self.create_error
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{kwargs['repo_id']}")

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        return None


@pytest.fixture
def model_folder(tmp_path):
    """A folder shaped like ``jsqa export`` output."""
    folder = tmp_path / "hub"
    folder.mkdir()
    (folder / "hyperparams.yaml").write_text("encoder: !new:torch.nn.Identity\n")
    (folder / "encoder.ckpt").write_bytes(b"\0" * 8)
    (folder / "head.ckpt").write_bytes(b"\0" * 8)
    (folder / "README.md").write_text("# JSQA model\n")
    return folder


def http_error(status):
    request = httpx.Request("POST", "https://huggingface.co/api/repos/create")
    response = httpx.Response(status, request=request)
    return HfHubHTTPError(f"{status} error for url {request.url}", response=response)


def test_creates_the_repo_then_uploads_the_folder(model_folder):
    api = FakeApi()
    url = upload_model(model_folder, REPO_ID, api=api, commit_message="First model")
    assert url == f"https://huggingface.co/{REPO_ID}"
    assert api.calls == [
        (
            "create_repo",
            {"repo_id": REPO_ID, "repo_type": "model", "private": False, "exist_ok": True},
        ),
        (
            "upload_folder",
            {
                "folder_path": str(model_folder),
                "repo_id": REPO_ID,
                "repo_type": "model",
                "commit_message": "First model",
                "allow_patterns": ["README.md", "encoder.ckpt", "head.ckpt", "hyperparams.yaml"],
                "delete_patterns": STALE_PATTERNS,
            },
        ),
    ]


def sent(folder, api):
    """The files huggingface_hub's upload_folder would send, as it lists and filters them."""
    kwargs = api.calls[-1][1]
    paths = sorted(
        path.relative_to(folder).as_posix() for path in folder.glob("**/*") if path.is_file()
    )
    allowed = huggingface_hub.utils.filter_repo_objects(
        paths,
        allow_patterns=kwargs.get("allow_patterns"),
        ignore_patterns=kwargs.get("ignore_patterns"),
    )
    return sorted(allowed)


@pytest.fixture
def full_export(model_folder):
    """Everything jsqa export writes, and what living with the folder adds to it."""
    (model_folder / "custom_interface.py").write_text("# code\n")
    (model_folder / "training_results.json").write_text("{}")
    (model_folder / ".env").write_text("HF_TOKEN=hf_secret\n")
    (model_folder / ".git").mkdir()
    (model_folder / ".git" / "config").write_text("[core]\n")
    (model_folder / "__pycache__").mkdir()
    (model_folder / "__pycache__" / "custom_interface.cpython-311.pyc").write_bytes(b"\0")
    return model_folder


MODEL_FILES = [
    "README.md",
    "custom_interface.py",
    "encoder.ckpt",
    "head.ckpt",
    "hyperparams.yaml",
    "training_results.json",
]


def test_only_the_model_files_are_sent_and_listed_with_sizes_first(full_export):
    api, shown = FakeApi(), []
    upload_model(
        full_export,
        REPO_ID,
        api=api,
        show=lambda text: shown.append(len(api.calls)) or shown.append(text),
    )
    assert sent(full_export, api) == MODEL_FILES  # no .env, no .git, no cache
    calls_before, listing = shown
    assert calls_before == 0  # shown before any call to the hub
    lines = listing.splitlines()
    assert lines[0] == f"Publishing 6 files (70 B) from {full_export} to {REPO_ID}:"
    assert [line.split()[0] for line in lines[1:7]] == MODEL_FILES
    assert lines[3].split()[1:] == ["8", "B"]  # encoder.ckpt, 8 bytes
    assert lines[7] == "Left out: .env (dot-file), .git/ (dot-file), __pycache__/ (Python cache)"


def test_other_files_stop_the_upload_unless_included(full_export):
    (full_export / "notes.txt").write_text("private notes\n")
    (full_export / "plots").mkdir()
    (full_export / "plots" / "scatter.png").write_bytes(b"png")
    api = FakeApi()
    with pytest.raises(
        HubUploadError,
        match=r"not the model's own: notes.txt, plots/; publish one with --include NAME",
    ):
        upload_model(full_export, REPO_ID, api=api)
    assert api.calls == []
    upload_model(full_export, REPO_ID, api=api, include=["notes.txt", "plots/scatter.png"])
    assert sent(full_export, api) == sorted([*MODEL_FILES, "notes.txt", "plots/scatter.png"])


@pytest.mark.parametrize(
    "name, error",
    [
        (".env", "dot-files are never published"),
        ("sub/.secret", "dot-files are never published"),
        ("../outside.txt", "give a path inside"),
        ("/etc/passwd", "give a path inside"),
        ("missing.txt", "no such file to publish"),
        ("plots", "is a folder: name the files in it"),
    ],
)
def test_include_names_files_inside_the_folder_only(full_export, name, error):
    (full_export / "plots").mkdir()
    (full_export / "plots" / "a.png").write_bytes(b"png")
    api = FakeApi()
    with pytest.raises(HubUploadError, match=error):
        upload_model(full_export, REPO_ID, api=api, include=[name, "plots/a.png"])
    assert api.calls == []


def test_a_link_to_a_file_outside_the_folder_is_refused(model_folder, tmp_path):
    secret = tmp_path / "id_rsa"
    secret.write_text("PRIVATE KEY\n")
    (model_folder / "head.ckpt").unlink()
    (model_folder / "head.ckpt").symlink_to(secret)
    api = FakeApi()
    with pytest.raises(
        HubUploadError, match=r"head.ckpt is a link to .*id_rsa, outside the folder"
    ):
        upload_model(model_folder, REPO_ID, api=api)
    assert api.calls == []
    (model_folder / "head.ckpt").unlink()
    (model_folder / "head.ckpt").symlink_to(model_folder / "encoder.ckpt")  # inside: fine
    upload_model(model_folder, REPO_ID, api=api)
    assert "head.ckpt" in sent(model_folder, api)


def test_names_with_pattern_characters_match_only_themselves(model_folder):
    (model_folder / "head[1].ckpt").write_bytes(b"\0")
    (model_folder / "head1.ckpt").write_bytes(b"\0")
    api = FakeApi()
    upload_model(model_folder, REPO_ID, api=api)
    assert sent(model_folder, api) == [
        "README.md",
        "encoder.ckpt",
        "head.ckpt",
        "head1.ckpt",
        "head[1].ckpt",
        "hyperparams.yaml",
    ]


def test_jsqa_upload_prints_the_listing_before_uploading(full_export, monkeypatch, capsys):
    from jsqa_sb.cli import main

    seen = []

    class StandIn(FakeApi):
        def create_repo(self, **kwargs):
            seen.append(capsys.readouterr().out)  # what the user saw before the first call
            return super().create_repo(**kwargs)

    monkeypatch.setattr(huggingface_hub, "HfApi", StandIn)
    assert main(["upload", str(full_export), REPO_ID]) == 0
    assert seen[0].startswith(f"Publishing 6 files (70 B) from {full_export} to {REPO_ID}:")
    assert "training_results.json" in seen[0] and "Left out: .env (dot-file)" in seen[0]
    assert f"Uploaded {full_export} to https://huggingface.co/{REPO_ID}" in capsys.readouterr().out


def test_jsqa_upload_dry_run_lists_and_sends_nothing(full_export, monkeypatch, capsys):
    from jsqa_sb.cli import main

    FakeApi.instances.clear()
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    (full_export / "notes.txt").write_text("x")
    assert main(["upload", str(full_export), REPO_ID, "--dry-run", "--include", "notes.txt"]) == 0
    out = capsys.readouterr().out
    assert "Publishing 7 files" in out and "notes.txt" in out and "nothing was uploaded" in out
    assert FakeApi.instances == []
    assert main(["upload", str(full_export), REPO_ID, "--dry_run"]) == 2  # notes.txt not included
    assert "notes.txt" in capsys.readouterr().err


def test_private_is_passed_through(model_folder):
    api = FakeApi()
    upload_model(model_folder, REPO_ID, private=True, api=api)
    assert api.calls[0][1]["private"] is True
    assert api.calls[1][1]["commit_message"]  # a default message is always given


def test_without_api_an_hfapi_is_made_with_the_token(model_folder, monkeypatch):
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    FakeApi.instances.clear()
    upload_model(model_folder, REPO_ID, token="hf_secret")
    [api] = FakeApi.instances
    assert api.token == "hf_secret"
    assert [name for name, _ in api.calls] == ["create_repo", "upload_folder"]


@pytest.mark.parametrize(
    "remove, missing",
    [
        (["hyperparams.yaml"], "it has no hyperparams.yaml"),
        (["encoder.ckpt", "head.ckpt"], "it has no *.ckpt checkpoint"),
    ],
)
def test_incomplete_folder_fails_before_any_call(model_folder, remove, missing):
    for name in remove:
        (model_folder / name).unlink()
    api = FakeApi()
    with pytest.raises(HubUploadError, match="not an exported model folder") as info:
        upload_model(model_folder, REPO_ID, api=api)
    assert missing in str(info.value)
    assert api.calls == []


def test_missing_folder_fails_before_any_call(tmp_path):
    api = FakeApi()
    with pytest.raises(HubUploadError, match="no such folder"):
        upload_model(tmp_path / "nowhere", REPO_ID, api=api)
    assert api.calls == []


@pytest.mark.parametrize("repo_id", ["jsqa-nisqa", "a/b/c", "someone/bad name", "someone/-x-"])
def test_bad_repo_id_fails_before_any_call(model_folder, repo_id):
    api = FakeApi()
    with pytest.raises(HubUploadError, match="repo id"):
        upload_model(model_folder, repo_id, api=api)
    assert api.calls == []


@pytest.mark.parametrize(
    "error, cause",
    [
        (LocalTokenNotFoundError("Token is required"), "not logged in: run `hf auth login`"),
        (http_error(401), "HTTP 401"),
        (http_error(403), "HTTP 403"),
        (http_error(500), "the hub answered: 500 error for url"),
        (httpx.ConnectError("Name or service not known"), "cannot reach the hub (ConnectError"),
        (ConnectionError("refused"), "cannot reach the hub (ConnectionError: refused)"),
    ],
)
def test_hub_errors_are_wrapped_with_repo_and_cause(model_folder, error, cause):
    api = FakeApi(create_error=error)
    with pytest.raises(HubUploadError) as info:
        upload_model(model_folder, REPO_ID, api=api)
    message = str(info.value)
    assert REPO_ID in message and cause in message
    assert "\n" not in message
    assert info.value.__cause__ is error
    assert [name for name, _ in api.calls] == ["create_repo"]  # nothing uploaded


def test_a_reupload_deletes_the_earlier_models_files_it_no_longer_has(model_folder):
    """What huggingface_hub's upload_folder deletes: remote files matching delete_patterns."""
    (model_folder / "head.ckpt").unlink()  # now an encoder-only model
    api = FakeApi()
    upload_model(model_folder, REPO_ID, api=api)
    kwargs = api.calls[-1][1]
    remote = ["README.md", "custom_interface.py", "encoder.ckpt", "head.ckpt"]
    remote += ["hyperparams.yaml", "old_fold.ckpt", "notes/paper.pdf", "LICENSE"]
    matched = huggingface_hub.utils.filter_repo_objects(
        remote, allow_patterns=kwargs["delete_patterns"]
    )
    uploaded = set(sent(model_folder, api))
    deleted = sorted(set(matched) - uploaded)  # files being uploaded are replaced, not deleted
    assert deleted == ["custom_interface.py", "head.ckpt", "old_fold.ckpt"]
