"""Publish an exported model folder on the Hugging Face hub (``jsqa upload``).

The folder is the one ``jsqa export`` writes (``hyperparams.yaml``, the ``*.ckpt``
checkpoints, ``README.md``). It is checked before anything goes to the network; then
the repository is created if needed and the folder uploaded as one commit with
``huggingface_hub``. The token comes from where ``huggingface_hub`` looks by default
(``HF_TOKEN``, or ``hf auth login``) unless one is given.

Authors
 * JSQA contributors 2026
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional

import huggingface_hub
from huggingface_hub import utils as hf_utils
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalTokenNotFoundError

from jsqa_sb.errors import JSQAError

logger = logging.getLogger(__name__)

#: Hub address of a model repository.
HUB_URL = "https://huggingface.co/{repo_id}"

#: Files that never go to the hub.
IGNORE_PATTERNS = ["__pycache__/*", "*/__pycache__/*", "*.pyc"]

_LOGIN_HINT = "run `hf auth login` (`huggingface-cli login`) or set HF_TOKEN"

# huggingface_hub >= 1.0 talks to the hub with httpx, older versions with requests (whose
# errors are OSErrors). Errors caught and wrapped, and those that mean "no connection":
_CAUGHT: tuple[type[BaseException], ...] = (HfHubHTTPError, LocalTokenNotFoundError, OSError)
_UNREACHABLE: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
try:
    import httpx

    _CAUGHT += (httpx.HTTPError,)
    _UNREACHABLE += (httpx.TransportError,)
except ImportError:  # pragma: no cover - depends on the huggingface_hub version
    pass
try:
    import requests

    _UNREACHABLE += (requests.ConnectionError, requests.Timeout)
except ImportError:  # pragma: no cover - depends on the huggingface_hub version
    pass


class HubUploadError(JSQAError, RuntimeError):
    """The folder cannot be published; the message names the folder or repo and why."""


def upload_model(
    hub_folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    token: Optional[str] = None,
    commit_message: Optional[str] = None,
    api: Any = None,
) -> str:
    """Upload an exported model folder to a hub model repository.

    Arguments
    ---------
    hub_folder : str or os.PathLike
        The folder ``jsqa export`` wrote: ``hyperparams.yaml`` and at least one
        ``*.ckpt`` file are required.
    repo_id : str
        ``owner/name`` of the model repository; created if it does not exist.
    private : bool
        Create the repository as private (an existing repository keeps its visibility).
    token : str, optional
        A hub token with write access (default: ``HF_TOKEN`` or the login cache, as
        ``huggingface_hub`` finds it). Not used when ``api`` is given.
    commit_message : str, optional
        The hub commit message (default: ``Upload JSQA model``).
    api : huggingface_hub.HfApi, optional
        The client to use (default: ``huggingface_hub.HfApi(token=token)``).

    Returns
    -------
    str
        The address of the repository.

    Raises
    ------
    HubUploadError
        If the folder is not an exported model or the repo id is malformed (before
        any network call), or if the hub refuses or cannot be reached.

    Example
    -------
    >>> upload_model("results/hub", "not a repo id")
    Traceback (most recent call last):
    ...
    jsqa_sb.hub_upload.HubUploadError: repo id 'not a repo id' must look like owner/name
    """
    _check_repo_id(repo_id)
    folder = _check_model_folder(hub_folder)
    api = api or huggingface_hub.HfApi(token=token)
    try:
        url = api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="model",
            commit_message=commit_message or "Upload JSQA model",
            ignore_patterns=list(IGNORE_PATTERNS),
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


def _check_repo_id(repo_id: str) -> None:
    """Refuse a repo id that is not ``owner/name`` as the hub spells it."""
    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise HubUploadError(f"repo id {repo_id!r} must look like owner/name")
    validate = getattr(hf_utils, "validate_repo_id", None)
    if validate is not None:
        try:
            validate(repo_id)
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
