"""Loading a JSQA model folder or hub id: the body of :meth:`JSQA.from_hparams`.

The YAML is checked (:mod:`jsqa_sb.serving.yaml_security`) before anything in it is created,
and the same text is then loaded; checkpoints hold plain tensors only. Every failure
is a one-line :class:`ModelError` (or one of :mod:`jsqa_sb.serving.yaml_security`'s errors).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Optional

from jsqa_sb.common import PathLike
from jsqa_sb.errors import JSQAError, one_line


class ModelError(JSQAError, RuntimeError):
    """A model that cannot be loaded, or cannot do what is asked; the message says why."""


def load_model_hparams(
    source: PathLike,
    hparams_file: str,
    savedir: Optional[PathLike],
    trust_remote_code: bool,
    overrides: Optional[dict],
    needed: Sequence[str],
    modules_needed: Sequence[str],
) -> dict:
    """Check, load and fill the hparams of a model (its checkpoints loaded into them)."""
    from hyperpyyaml import load_hyperpyyaml
    from speechbrain.utils.fetching import FetchConfig, fetch

    from jsqa_sb.networks import load_checkpoint
    from jsqa_sb.serving import yaml_security as security

    source = security.model_source(source)  # a mistyped folder fails here, not on the hub
    # Files of another model in savedir are fetched afresh, never reused.
    refetch = security.prepare_save_folder(savedir, source, hparams_file)
    fetch_config = FetchConfig(overwrite=refetch)
    with _fetch_errors(source, hparams_file):
        hparams_path = fetch(
            filename=hparams_file, source=source, savedir=savedir, fetch_config=fetch_config
        )
    # Check and load the same text (no window for the file to change in between).
    security.check_hparams_size(hparams_path)
    text = _read_hparams(hparams_path) + "\n"
    security.check_hparams_yaml(text, name=str(hparams_path), trust_remote_code=trust_remote_code)
    # HyperPyYAML's own errors about the file: bad references, arguments, names.
    try:
        if trust_remote_code:  # the file itself, so that !include: paths resolve
            with open(hparams_path, encoding="utf-8") as fin:
                hparams = load_hyperpyyaml(fin, overrides or {})
        else:
            hparams = load_hyperpyyaml(text, overrides or {})
    except (ValueError, TypeError, KeyError, ImportError) as err:
        raise ModelError(f"cannot load {hparams_path}: {one_line(err)}") from err
    _check_hparams(hparams, hparams_path, needed, modules_needed)
    hparams["savedir"] = savedir
    pretrainer = hparams["pretrainer"]
    if savedir is not None:
        pretrainer.set_collect_in(savedir)
    security.check_loadable_names(pretrainer.loadables, str(hparams_path))
    with _fetch_errors(source, "checkpoints"):
        paths = pretrainer.collect_files(default_source=source, fetch_config=fetch_config)
    for name, module in pretrainer.loadables.items():
        load_checkpoint(module, paths[name], ModelError)
    collected = [hparams_file, *(f"{name}.ckpt" for name in pretrainer.loadables)]
    security.record_save_folder(savedir, source, hparams_file, collected)
    return hparams


@contextlib.contextmanager
def _fetch_errors(source: PathLike, what: str) -> Iterator[None]:
    """Turn the errors of fetching a model's ``what`` (local or hub) into ModelError."""
    try:
        yield
    except JSQAError:
        raise
    except (OSError, ValueError) as err:
        where = "" if os.path.isdir(str(source)) else " from the Hugging Face hub"
        raise ModelError(
            f"cannot fetch the {what} of the model {source}{where}: {one_line(err)}"
        ) from err


def _read_hparams(path: PathLike) -> str:
    """The text of a model's ``hyperparams.yaml``; ModelError unless it is a YAML mapping."""
    import ruamel.yaml

    from jsqa_sb.serving.yaml_security import read_hparams_text

    try:
        text = read_hparams_text(path)
    except UnicodeDecodeError as err:
        raise ModelError(f"{path} is not UTF-8 text: {err}") from err
    except OSError as err:  # a folder without the file, or one named like it
        raise ModelError(f"cannot read the model's {path}: {err.strerror or err}") from err
    try:
        root = ruamel.yaml.YAML().compose(text)
    except ruamel.yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or one_line(err)
        raise ModelError(f"{path} is not valid YAML: {problem}{where}") from err
    if root is None:
        raise ModelError(f"{path} is empty: a model's hyperparams.yaml defines its network")
    if not isinstance(root, ruamel.yaml.nodes.MappingNode):
        raise ModelError(f"{path} is not a YAML mapping of names to values: not a model's YAML")
    return text


def model_setting(hparams, name: str, default, kind: type, low, high):
    """A plain number of a model's YAML, checked against its sane range (ModelError)."""
    value = getattr(hparams, name, default)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (kind is not int or float(value).is_integer())
    if not ok or not math.isfinite(value) or not low <= value <= high:
        raise ModelError(
            f"the model's {name} must be a{'n integer' if kind is int else ' number'} "
            f"from {low} to {high}, got {value!r}"
        )
    return kind(value)


def _check_hparams(
    hparams: dict, path: PathLike, needed: Sequence[str], modules_needed: Sequence[str]
) -> None:
    """ModelError unless ``hparams`` has what :class:`JSQA` loads (named in the message)."""
    from speechbrain.utils.parameter_transfer import Pretrainer

    missing = [key for key in ("modules", "pretrainer", *needed) if key not in hparams]
    modules = hparams.get("modules")
    if isinstance(modules, Mapping):
        missing += [f"modules: {key}" for key in modules_needed if key not in modules]
    elif "modules" not in missing:
        missing.append("modules (a mapping)")
    if "pretrainer" in hparams and not isinstance(hparams["pretrainer"], Pretrainer):
        missing.append("pretrainer (a speechbrain Pretrainer)")
    if missing:
        raise ModelError(
            f"{path} is not a JSQA model's hyperparams.yaml: it lacks {', '.join(missing)}"
        )
