"""Tests of ``jsqa upload`` (``jsqa_sb.hub_upload.upload_model``).

The hub cannot be reached from the test machines, so the calls go to a stand-in API
object (``FakeApi``) that records them; what is tested is the call sequence, the
checks made before any call, and how hub errors are reported. The huggingface_hub
error classes raised are the real ones.
"""

import httpx
import huggingface_hub
import pytest
from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

from jsqa_sb.hub_upload import HubUploadError, upload_model

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
                "ignore_patterns": ["__pycache__/*", "*/__pycache__/*", "*.pyc"],
            },
        ),
    ]


def test_ignore_patterns_drop_python_caches_only(model_folder):
    api = FakeApi()
    upload_model(model_folder, REPO_ID, api=api)
    patterns = api.calls[1][1]["ignore_patterns"]
    paths = ["hyperparams.yaml", "encoder.ckpt", "__pycache__/x.pyc", "a/__pycache__/b", "c.pyc"]
    kept = list(huggingface_hub.utils.filter_repo_objects(paths, ignore_patterns=patterns))
    assert kept == ["hyperparams.yaml", "encoder.ckpt"]


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
