"""Loading a model runs nothing but the model: the checks made before a model loads.

A SpeechBrain ``hyperparams.yaml`` is code: HyperPyYAML imports and calls what its tags
name (``!new:``, ``!name:``, ``!apply:``, ``!applyref:``, ``!module:``), reads other
files (``!include:``) and understands ``!!python/...`` tags; ``torch`` and
``speechbrain`` alone hold many functions that run code or unpickle files, so no deny
list can close that. :func:`check_hparams_yaml` (:mod:`jsqa_sb.serving.yaml_check`) reads the
YAML without loading it and allows exactly what ``jsqa export`` writes, and plain data:

* ``!new:`` of the classes in :data:`ALLOWED_CLASSES`, named exactly as there; the
  ``Pretrainer`` takes ``loadables`` only, each named as a plain file name;
* numbers, strings, booleans, null, lists, mappings, tuples ``(a, b)`` of plain data
  (HyperPyYAML parses them again as YAML), and ``!ref <key>`` / ``!ref <key[sub]>``
  (no attribute access, interpolation or arithmetic: ``<a> ** <b>`` alone can hang it).

Everything else is refused, and so are SpeechBrain's run options (``compile``, ``jit``,
``device``, ...) as top-level keys: how the user's machine runs a model is not the
model's choice. ``trust_remote_code=True`` (``--trust-remote-code``) lifts the
allow-list for a model whose author you trust. Whatever the trust, a YAML is refused
when it cannot be checked in bounded time (over :data:`MAX_YAML_BYTES`, :data:`MAX_NODES`
nodes with its aliases expanded, :data:`MAX_DEPTH` levels, or not valid YAML), and
checkpoints load with ``torch.load(weights_only=True)``.

This module also tells a folder from a hub id (:func:`model_source`) and keeps a save
folder to one model: refilled, not reused, for another (:func:`prepare_save_folder`),
its checkpoints collected inside it (:func:`check_loadable_names`).

Not covered: SpeechBrain's ``foreign_class`` runs the model's ``custom_interface.py`` and
loads its YAML with HyperPyYAML directly: loading a model that way means trusting it.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Optional

from jsqa_sb.common import PathLike
from jsqa_sb.data.prepare_utils import read_json, write_json
from jsqa_sb.errors import JSQAError

# The check and its rules, re-exported: this module is where users import them from.
from jsqa_sb.serving.yaml_check import check_hparams_size, check_hparams_yaml, read_hparams_text  # noqa: F401
from jsqa_sb.serving.yaml_rules import (  # noqa: F401
    ALLOWED_CLASSES,
    MAX_DEPTH,
    MAX_NODES,
    MAX_YAML_BYTES,
    PLAIN_TAGS,
    Finding,
    UnsafeModelError,
    UntrustedCodeError,
)

logger = logging.getLogger(__name__)

#: Name of the stamp a save folder keeps of the model it holds.
SAVE_FOLDER_STAMP = ".jsqa_model_source.json"
#: ``hf://owner/name``: the hub model, even where ``owner/`` is a folder here.
HUB_PREFIX = "hf://"
# A hub id as the hub spells it: OWNER/NAME.
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


class ModelSourceError(JSQAError, FileNotFoundError):
    """A model source that is neither an existing folder nor a hub id."""


def model_source(source: Any) -> Any:
    """Where to load a model from: an existing folder, a URL or a hub id ``owner/name``.

    Anything else is a mistyped folder, refused at once (:class:`ModelSourceError`)
    without a hub look-up: a path that starts with ``.``, ``/`` or ``~``, has more or
    fewer than one ``/``, or whose first part is a folder here (``models/jsqaa`` next
    to ``models/``), and a file. ``hf://owner/name`` always names the hub model, and a
    ``FetchSource`` is used as is. A folder comes back with ``~`` expanded.
    """
    if isinstance(source, tuple):  # a FetchSource: the caller said where it is
        return source
    text = os.fspath(source)
    if isinstance(text, str) and text.startswith(HUB_PREFIX):  # the hub, whatever is here
        from speechbrain.utils.fetching import FetchFrom, FetchSource

        hub_id = text[len(HUB_PREFIX) :]
        if _is_hub_id(hub_id):
            return FetchSource(FetchFrom.HUGGING_FACE, hub_id)
        raise ModelSourceError(f"{text}: not a hub id (hf://owner/name)")
    path = Path(text).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists():
        raise ModelSourceError(
            f"{text} is a file, not a model folder: give the folder that holds hyperparams.yaml"
        )
    if text.startswith(("http://", "https://")):
        return text
    if _is_hub_id(text):
        owner = Path(text.split("/", 1)[0])
        if not owner.is_dir():
            return text
        raise ModelSourceError(
            f"{text}: no such folder ({owner}/ is a folder here, so this names a folder in "
            f"it, not a hub model; for the hub model, give {HUB_PREFIX}{text})"
        )
    raise ModelSourceError(
        f"{text}: no such folder (and not a hub id, which looks like owner/name)"
    )


def _is_hub_id(text: str) -> bool:
    """Whether ``text`` is spelt like a hub id, ``owner/name``."""
    return bool(_HUB_ID.fullmatch(text)) and ".." not in text


def _source_key(source: Any) -> str:
    """A text that names a source the same way on every load."""
    if isinstance(source, tuple):
        from speechbrain.utils.fetching import FetchFrom

        if source[0] == FetchFrom.HUGGING_FACE:  # hf://owner/name and owner/name alike
            return f"hub:{source[1]}"
        return f"{source[0]}:{source[1]}"
    path = Path(os.fspath(source)).expanduser()
    return str(path.resolve()) if path.is_dir() else f"hub:{source}"


def _is_source_folder(savedir: PathLike, source: Any) -> bool:
    """True if the save folder is the model folder itself (nothing to stamp or refill)."""
    if isinstance(source, tuple):
        return False
    folder = Path(os.fspath(source)).expanduser()
    return folder.is_dir() and Path(savedir).expanduser().resolve() == folder.resolve()


def prepare_save_folder(savedir: Optional[PathLike], source: Any, hparams_file: str) -> bool:
    """Make ``savedir`` ready for ``source``: True if its files must be fetched afresh.

    A save folder keeps a stamp (:data:`SAVE_FOLDER_STAMP`) of the model whose files it
    holds. When it holds another model's files (or files of unknown origin), the links
    the earlier load made are removed, and the caller must fetch with
    ``FetchConfig(overwrite=True)``, so that no file of the earlier model is used.
    ``savedir`` None: the files are used where they are, nothing to do.
    """
    if savedir is None or _is_source_folder(savedir, source):
        return False
    stamp = Path(savedir) / SAVE_FOLDER_STAMP
    wanted = {"source": _source_key(source), "hparams_file": hparams_file}
    try:
        recorded = read_json(stamp)
    except (OSError, ValueError):
        recorded = None
    if isinstance(recorded, dict) and all(recorded.get(k) == v for k, v in wanted.items()):
        return False
    if isinstance(recorded, dict):
        folder = Path(savedir).resolve()
        for name in recorded.get("files", []):
            path = Path(savedir) / str(name)
            # only the links an earlier load made, and only inside the save folder
            if path.is_symlink() and path.parent.resolve() == folder:
                path.unlink()
        logger.info("%s held the model %s: fetching %s", savedir, recorded.get("source"), source)
    stamp.unlink(missing_ok=True)
    return True


def record_save_folder(
    savedir: Optional[PathLike], source: Any, hparams_file: str, files: Iterable[str]
) -> None:
    """Write the stamp of the model whose ``files`` the save folder now holds."""
    if savedir is None or _is_source_folder(savedir, source):
        return
    stamp = {"source": _source_key(source), "hparams_file": hparams_file, "files": list(files)}
    write_json(Path(savedir) / SAVE_FOLDER_STAMP, stamp)


def check_loadable_names(names: Iterable[Any], label: str) -> None:
    """Refuse loadable names whose checkpoint would be collected outside the save folder.

    The Pretrainer collects loadable ``name`` as ``<save folder>/<name>.ckpt``; a name
    with ``..`` or a path separator would put (or link) that file elsewhere:
    :class:`UnsafeModelError`, whatever the trust. ``label`` names the model.
    """
    unsafe = ("..", "/", "\\", os.sep, "\0")
    bad = [n for n in names if not isinstance(n, str) or not n or any(u in n for u in unsafe)]
    if bad:
        reason = "its checkpoint would be collected as a file outside the save folder"
        raise UnsafeModelError(label, [Finding(0, f"loadable {name!r}", reason) for name in bad])
