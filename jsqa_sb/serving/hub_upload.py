"""Publish an exported model folder on the Hugging Face hub (``jsqa upload``).

:func:`plan_upload` decides, before any network call, what is sent: the model's own
files (:data:`jsqa_sb.serving.hub_export.EXPORTED_FILES`, any top-level ``*.ckpt``) and files
named with ``include``; any other file fails the upload, dot-files and caches are left
out, links to outside the folder refused. :func:`upload_model` shows that list, then
uploads exactly it as one commit, deleting the model files of an earlier upload that
the folder no longer has (other files of the repository are kept).
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Optional

import huggingface_hub
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalTokenNotFoundError
from huggingface_hub.utils import validate_repo_id

from jsqa_sb.errors import JSQAError
from jsqa_sb.serving.hub_export import EXPORTED_FILES

logger = logging.getLogger(__name__)

#: Remote files that a re-upload replaces: the model's own, deleted if not sent again.
STALE_PATTERNS = [*(glob.escape(name) for name in EXPORTED_FILES), "*.ckpt"]

#: Hub address of a model repository.
HUB_URL = "https://huggingface.co/{repo_id}"

#: Folders left out without complaint (loading a model folder with ``foreign_class``
#: writes a ``__pycache__`` into it).
CACHE_FOLDERS = ("__pycache__",)

_LOGIN_HINT = "run `hf auth login` (`huggingface-cli login`) or set HF_TOKEN"

# huggingface_hub >= 1.0 talks to the hub with httpx, older versions with requests (whose
# errors are OSErrors). Errors caught and wrapped, and those that mean "no connection":
_CAUGHT: tuple[type[BaseException], ...] = (HfHubHTTPError, LocalTokenNotFoundError, OSError)
_UNREACHABLE: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
with contextlib.suppress(ImportError):  # huggingface_hub >= 1.0
    import httpx

    _CAUGHT += (httpx.HTTPError,)
    _UNREACHABLE += (httpx.TransportError,)
with contextlib.suppress(ImportError):  # huggingface_hub < 1.0
    import requests

    _UNREACHABLE += (requests.ConnectionError, requests.Timeout)


class HubUploadError(JSQAError, RuntimeError):
    """The folder cannot be published; the message names the folder or repo and why."""


@dataclass(frozen=True)
class PublishedFile:
    """A file to publish: its path in the folder (``/``-separated) and size in bytes."""

    path: str
    size: int


@dataclass
class UploadPlan:
    """What :func:`upload_model` sends from a folder, and what it leaves out."""

    folder: Path
    files: list[PublishedFile] = field(default_factory=list)
    left_out: list[tuple[str, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Bytes to send."""
        return sum(file.size for file in self.files)

    def format(self, repo_id: str) -> str:
        """The listing shown before uploading: every file with its size."""
        width = max(len(file.path) for file in self.files)
        lines = [
            f"Publishing {len(self.files)} files ({_size(self.total)}) from {self.folder} "
            f"to {repo_id}:"
        ]
        lines += [f"  {file.path:<{width}}  {_size(file.size):>9}" for file in self.files]
        if self.left_out:
            shown = ", ".join(f"{name} ({why})" for name, why in self.left_out)
            lines.append(f"Left out: {shown}")
        return "\n".join(lines)


def plan_upload(hub_folder: str | os.PathLike, include: Iterable[str] = ()) -> UploadPlan:
    """Decide what publishing ``hub_folder`` sends, without any network call.

    ``include``: other files to publish, as paths inside the folder (``notes.txt``,
    ``plots/a.png``). :class:`HubUploadError` if the folder is not an exported model,
    holds files that are neither the model's own nor included, or a file to send is a
    link to outside the folder, a dot-file, missing, or a folder.
    """
    folder = _check_model_folder(hub_folder)
    root = folder.resolve()
    included = [_included_path(name, folder) for name in include]
    plan, others = UploadPlan(folder), []
    for entry in sorted(folder.iterdir()):
        name = entry.name + ("/" if entry.is_dir() else "")
        if entry.name.startswith("."):
            plan.left_out.append((name, "dot-file"))
        elif entry.name in CACHE_FOLDERS and entry.is_dir():
            plan.left_out.append((name, "Python cache"))
        elif entry.name in (*EXPORTED_FILES, *included) or entry.name.endswith(".ckpt"):
            plan.files.append(_published(entry, entry.name, root))
        elif not any(path.startswith(entry.name + "/") for path in included):
            others.append(name)
    if others:
        raise HubUploadError(
            f"{folder} holds files that are not the model's own: {', '.join(others)}; "
            "publish one with --include NAME, or move it out of the folder"
        )
    for path in included:  # in subfolders, or missing
        if path not in {file.path for file in plan.files}:
            plan.files.append(_published(folder / path, path, root))
    plan.files.sort(key=lambda file: file.path)
    return plan


def _included_path(name: str, folder: Path) -> str:
    """An ``--include`` name as a ``/``-separated path inside the folder."""
    path = PurePosixPath(str(name).replace(os.sep, "/"))
    if path.is_absolute() or not path.parts or ".." in path.parts:
        raise HubUploadError(f"--include {name}: give a path inside {folder}")
    if any(part.startswith(".") for part in path.parts):
        raise HubUploadError(f"--include {name}: dot-files are never published")
    return str(path)


def _published(entry: Path, path: str, root: Path) -> PublishedFile:
    """A file to publish; refused if it is missing, a folder, or a link to outside."""
    target = entry.resolve()
    if root not in target.parents:
        raise HubUploadError(
            f"{entry} is a link to {target}, outside the folder: refusing to publish it "
            "(copy the file into the folder instead)"
        )
    if entry.is_dir():
        raise HubUploadError(f"{entry} is a folder: name the files in it to publish them")
    if not entry.is_file():
        raise HubUploadError(f"{entry}: no such file to publish")
    return PublishedFile(path, entry.stat().st_size)


def _size(size: float) -> str:
    """A size in bytes the way people read it (SI units)."""
    if size < 1000:
        return f"{int(size)} B"
    for unit in ("kB", "MB", "GB"):
        size /= 1000
        if size < 1000 or unit == "GB":
            return f"{size:.1f} {unit}"


def upload_model(
    hub_folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    token: Optional[str] = None,
    commit_message: Optional[str] = None,
    api: Any = None,
    include: Iterable[str] = (),
    show: Optional[Callable[[str], Any]] = None,
) -> str:
    """Upload the files :func:`plan_upload` lists to ``repo_id``; return its address.

    The repository is created if needed (``private`` applies only then). ``token``
    defaults to where ``huggingface_hub`` looks (``HF_TOKEN``, the login cache) and is
    not used with ``api`` (default ``huggingface_hub.HfApi(token=token)``). ``show`` is
    called with the listing before any network call (default: logged).
    :class:`HubUploadError` if the folder or repo id is wrong (before any network
    call), or if the hub refuses or cannot be reached.

    Example
    -------
    >>> upload_model("results/hub", "not a repo id")
    Traceback (most recent call last):
    ...
    jsqa_sb.serving.hub_upload.HubUploadError: repo id 'not a repo id' must look like owner/name
    """
    check_repo_id(repo_id)
    plan = plan_upload(hub_folder, include)
    folder = plan.folder
    (show or logger.info)(plan.format(repo_id))
    api = api or huggingface_hub.HfApi(token=token)
    try:
        url = api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="model",
            commit_message=commit_message or "Upload JSQA model",
            allow_patterns=[glob.escape(file.path) for file in plan.files],  # exactly these
            delete_patterns=STALE_PATTERNS,
        )
    except _CAUGHT as err:
        raise HubUploadError(f"cannot upload {folder} to {repo_id}: {_cause(err)}") from err
    url = str(url) if url else HUB_URL.format(repo_id=repo_id)
    logger.info("Uploaded %s to %s", folder, url)
    return url


def _check_model_folder(hub_folder: str | os.PathLike) -> Path:
    """The folder, if it holds an exported model; otherwise say what is missing."""
    folder = Path(hub_folder)
    if not folder.is_dir():
        raise HubUploadError(f"{folder}: no such folder (export a model with `jsqa export`)")
    missing = []
    if not (folder / "hyperparams.yaml").is_file():
        missing.append("hyperparams.yaml")
    if not any(path.is_file() for path in folder.glob("*.ckpt")):
        missing.append("*.ckpt checkpoint")
    if missing:
        raise HubUploadError(
            f"{folder} is not an exported model folder: it has no {' and no '.join(missing)} "
            "(export one with `jsqa export`)"
        )
    if not (folder / "README.md").is_file():
        logger.warning("%s has no README.md: the hub page will have no model card", folder)
    return folder


def check_repo_id(repo_id: str) -> None:
    """:class:`HubUploadError` if ``repo_id`` is not ``owner/name`` as the hub spells it."""
    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise HubUploadError(f"repo id {repo_id!r} must look like owner/name")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise HubUploadError(f"repo id {repo_id!r} is not valid: {_first_line(err)}") from err


def _cause(err: BaseException) -> str:
    """A one-line reason for a hub or network error."""
    if isinstance(err, LocalTokenNotFoundError):
        return f"not logged in: {_LOGIN_HINT}"
    status = getattr(getattr(err, "response", None), "status_code", None)
    if status == 401:
        return f"the hub did not accept the token (HTTP 401): {_LOGIN_HINT}"
    if status == 403:
        return "the token may not write to this repository (HTTP 403): use a write token"
    if isinstance(err, HfHubHTTPError):
        return f"the hub answered: {_first_line(err)}"
    if isinstance(err, _UNREACHABLE):
        return f"cannot reach the hub ({type(err).__name__}: {_first_line(err)})"
    return f"{type(err).__name__}: {_first_line(err)}"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
