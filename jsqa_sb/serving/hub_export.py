"""``jsqa export``: a training run -> a SpeechBrain-hub model folder.

A fine-tuning run (``results.json`` + ``save/CKPT+*``) gives a scoring model, a
pretraining run (``encoder.ckpt`` + ``pretrain_summary.json``) an encoder-only one. The
folder holds an inference-only ``hyperparams.yaml``, the checkpoints, a
``custom_interface.py`` for SpeechBrain's ``foreign_class`` (with the package code it
needs), the model card ``README.md`` (:mod:`jsqa_sb.serving.model_card`) and the run's figures.
It is written beside its destination and renamed into place once complete and
verified: a failed export leaves nothing half-written, and ``overwrite`` replaces an
earlier export whole.
"""

from __future__ import annotations

import importlib
import inspect
import io
import json
import logging
import os
import re
import secrets
import shutil
import string
import tempfile
from pathlib import Path

import ruamel.yaml
from hyperpyyaml import resolve_references

import jsqa_sb
from jsqa_sb.common import PathLike
from jsqa_sb.errors import JSQAError
from jsqa_sb.evaluation.compare import (
    SUMMARY_FILE,
    ReportError,
    load_pretrain_summary,
    load_results,
)
from jsqa_sb.serving.model_card import CITATION, finetune_card, input_section, pretrain_card  # noqa: F401

logger = logging.getLogger(__name__)


#: Modules that ``custom_interface.py`` carries, in import order (not the YAML check:
#: ``foreign_class`` loads the YAML with SpeechBrain's own code).
_CARRIED = (
    "common errors audio networks.frontend networks.encoder networks.heads networks "
    "serving.windows serving.model_loading serving.inference"
)
VENDORED_MODULES = tuple(f"jsqa_sb.{name}" for name in _CARRIED.split())

#: Every file ``jsqa export`` may write into a model folder (``jsqa upload`` publishes
#: these, and any other top-level ``*.ckpt``).
EXPORTED_FILES = tuple(
    "hyperparams.yaml encoder.ckpt head.ckpt custom_interface.py README.md "
    "training_results.json pretrain_summary.json".split()
)


class ExportError(JSQAError, ValueError):
    """A run folder that cannot be exported; the message says what is missing."""


def export_model(
    run_folder: PathLike,
    hub_folder: PathLike,
    *,
    overwrite: bool = False,
    window_seconds: float = 10.0,
    license: str = "apache-2.0",
    verify: bool = True,
) -> Path:
    """Export a fine-tuning or pretraining run as a SpeechBrain-hub model folder.

    ``hub_folder`` is created, and must be empty unless ``overwrite`` (which refuses a
    folder holding files ``jsqa export`` does not write); never the run folder, a
    folder inside it, or one holding it (:class:`ExportError`, as is a run folder that
    is not a finished run). ``window_seconds``: the window for scoring long
    recordings, written into the YAML. ``verify``: load the written folder with
    :class:`jsqa_sb.JSQA` and run it once.
    """
    run, hub = Path(run_folder), Path(hub_folder)
    if not (run / "hyperparams.yaml").is_file():
        raise ExportError(f"{run} is not a train.py output folder (no hyperparams.yaml)")
    if (run / "results.json").is_file():
        kind = "finetune"
    elif (run / "encoder.ckpt").is_file():
        kind = "pretrain"
    else:
        raise ExportError(
            f"{run} holds neither a finished fine-tuning run (results.json) nor a "
            "finished pretraining run (encoder.ckpt)"
        )
    _check_destination(run, hub, overwrite)
    hub.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(hub)
    partial = _aside(hub, "export")
    partial.mkdir()
    try:
        _write_model(run, partial, kind, window_seconds, license)
        if verify:
            _verify(partial, with_head=kind == "finetune")
        _move_into_place(partial, hub)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    logger.info("Exported %s (%s run) to %s", run, kind, hub)
    return hub


def _exported(entry: Path) -> bool:
    """True for what an earlier export (or loading it) leaves in a model folder."""
    if entry.name in EXPORTED_FILES or entry.name.endswith(".ckpt"):
        return not entry.is_dir() or entry.is_symlink()
    return entry.name == "__pycache__" and entry.is_dir()  # foreign_class imported it


def _check_destination(run: Path, hub: Path, overwrite: bool) -> None:
    """Refuse a model folder that is the run's, holds files of its own, or is a link."""
    run_real, hub_real = run.resolve(), hub.resolve()
    if hub_real == run_real or run_real in hub_real.parents or hub_real in run_real.parents:
        where = "holds" if hub_real in run_real.parents else "is inside"
        raise ExportError(
            f"{hub} {where} the run folder {run}: export into a folder of its own "
            "(e.g. models/NAME)"
        )
    if hub.is_symlink():
        raise ExportError(f"{hub} is a symbolic link: export into a folder")
    if hub.exists() and not hub.is_dir():
        raise ExportError(f"{hub} is a file, not a folder")
    entries = sorted(hub.iterdir()) if hub.is_dir() else []
    if entries and not overwrite:
        raise ExportError(f"{hub} exists and is not empty (use --overwrite to replace it)")
    foreign = [e.name + ("/" if e.is_dir() else "") for e in entries if not _exported(e)]
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise ExportError(
            f"{hub} holds files jsqa export does not write ({shown}): refusing to replace "
            "it; move them out, or export into another folder"
        )


def _remove_leftovers(hub: Path) -> None:
    """Remove the folders (:func:`_aside`) a killed export of ``hub`` left beside it.

    A ``replaced`` one (the earlier export) is kept, and named, while ``hub`` is missing.
    """
    pattern = re.compile(rf"\.{re.escape(hub.name)}\.(export|replaced)-(\d+)-[0-9a-f]{{8}}")
    for entry in hub.parent.iterdir():
        match = pattern.fullmatch(entry.name)
        if not match or not entry.is_dir() or entry.is_symlink() or _alive(int(match[2])):
            continue
        if match[1] == "replaced" and not hub.is_dir():
            logger.warning("%s holds the export that %s replaced; it is kept", entry, hub)
            continue
        logger.info("Removing %s, left by an export that was killed", entry)
        shutil.rmtree(entry, ignore_errors=True)


def _aside(hub: Path, kind: str) -> Path:
    """``.NAME.<kind>-PID-<8 hex>`` beside ``hub`` (as :func:`_remove_leftovers` expects)."""
    return hub.parent / f".{hub.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def _alive(pid: int) -> bool:
    """Whether a process with this id runs (one that cannot be signalled counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _move_into_place(partial: Path, hub: Path) -> None:
    """Rename the complete export to ``hub``, replacing an earlier export (or empty folder)."""
    if not hub.is_dir():
        os.rename(partial, hub)
        return
    old = _aside(hub, "replaced")
    os.rename(hub, old)
    try:
        os.rename(partial, hub)
    except OSError:
        os.rename(old, hub)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _write_model(run: Path, hub: Path, kind: str, window_seconds: float, license: str) -> None:
    """Write the model folder's files into ``hub`` (an empty folder)."""
    run_yaml = _resolved_run_yaml(run / "hyperparams.yaml")
    # The card describes the input the exported YAML sets, not the defaults.
    inputs = input_section(int(run_yaml.get("sample_rate", 16000)), window_seconds)
    try:  # figures that are numbers, or ExportError
        results = (load_results if kind == "finetune" else load_pretrain_summary)(run)
    except ReportError as err:
        raise ExportError(str(err)) from err
    if kind == "finetune":
        ckpt = _selected_checkpoint(run, results)
        outputs = _trained_outputs(results, run_yaml["head"].get("outputs"))
        for name in ("encoder", "head"):
            shutil.copyfile(ckpt / f"{name}.ckpt", hub / f"{name}.ckpt")
        shutil.copyfile(run / "results.json", hub / "training_results.json")
        card = finetune_card(run, results, outputs, ckpt, inputs, license)
    else:
        outputs = []
        shutil.copyfile(run / "encoder.ckpt", hub / "encoder.ckpt")
        shutil.copyfile(run / SUMMARY_FILE, hub / SUMMARY_FILE)
        card = pretrain_card(run, results, inputs, license)

    (hub / "hyperparams.yaml").write_text(
        _inference_yaml(run, run_yaml, outputs, window_seconds, with_head=kind == "finetune")
    )
    (hub / "custom_interface.py").write_text(build_custom_interface())
    (hub / "README.md").write_text(card)


def _resolved_run_yaml(path: Path) -> dict:
    """The run's YAML with every ``!ref`` resolved, tags kept, nothing instantiated."""
    try:
        with open(path, encoding="utf-8") as fin:
            resolved = resolve_references(fin)
        run_yaml = ruamel.yaml.YAML().load(resolved.getvalue())
    except (ValueError, ruamel.yaml.YAMLError, AttributeError, TypeError) as err:
        # hyperpyyaml raises AttributeError/TypeError on an empty or non-mapping file
        raise ExportError(f"{path} is not a readable run YAML: {str(err).splitlines()[0]}") from err
    if not isinstance(run_yaml, dict):
        raise ExportError(f"{path} is not a run YAML (a mapping of settings)")
    return run_yaml


def _selected_checkpoint(run: Path, results: dict) -> Path:
    """The checkpoint the run's test figures come from (results.json names it)."""
    named = results.get("checkpoint")
    named = named if isinstance(named, str) else None
    candidates = [Path(named), run / "save" / Path(named).name] if named else []
    for ckpt in candidates:
        if (ckpt / "encoder.ckpt").is_file() and (ckpt / "head.ckpt").is_file():
            return ckpt
    raise ExportError(
        f"{run}: the evaluated checkpoint {named or '(none recorded)'} with encoder.ckpt "
        "and head.ckpt was not found"
    )


def _trained_outputs(results: dict, head_outputs) -> list[str]:
    """The head outputs that had test labels: the ones the model reports."""
    head_outputs = [str(x) for x in (head_outputs or ["mos"])]
    seen = {dim for db in results.get("databases", {}).values() for dim in db}
    outputs = [dim for dim in head_outputs if dim in seen]
    if not outputs:
        raise ExportError("results.json has no metrics for any of the head's outputs")
    return outputs


def _inference_yaml(
    run: Path, run_yaml: dict, outputs: list, window_seconds: float, with_head: bool
) -> str:
    """The exported ``hyperparams.yaml``: the run's encoder (and head), the Pretrainer."""
    source = "/".join(run.resolve().parts[-2:])
    header = f"""# ############################################################################
# JSQA inference model, exported by `jsqa export` (jsqa_sb {jsqa_sb.__version__})
# from the run {source}.
#
#   from jsqa_sb import JSQA
#   model = JSQA.from_hparams(source="<this folder or hub id>", savedir="pretrained/jsqa")
#
# or, with SpeechBrain alone:
#   foreign_class(source=..., pymodule_file="custom_interface.py", classname="JSQA")
# ############################################################################

sample_rate: {int(run_yaml.get("sample_rate", 16000))}
outputs: {json.dumps(list(outputs))}  # the scores this model reports
window_seconds: {float(window_seconds)}  # longer: equal windows, duration-weighted mean
window_batch: 8  # windows per forward pass

"""
    names = ["encoder", "head"] if with_head else ["encoder"]
    buf = io.StringIO()
    yaml = ruamel.yaml.YAML()
    yaml.indent(mapping=4, sequence=4, offset=0)
    yaml.dump({name: run_yaml[name] for name in names}, buf)
    # ruamel keeps the blank line that followed a tag in the run's YAML: drop it.
    body = re.sub(r"^(\w+: ![^\n]+)\n\n", r"\1\n", buf.getvalue(), flags=re.M)
    refs = "".join(f"    {n}: !ref <{n}>\n" for n in names)
    footer = (
        f"\nmodules:\n{refs}\n"
        "pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer\n"
        f"    loadables:\n{refs.replace('    ', '        ')}"
    )
    return header + body + footer


#: ``custom_interface.py``, with ``$version``, ``$modules`` and ``$sources`` to fill in.
_INTERFACE = string.Template('''"""JSQA inference interface for SpeechBrain's ``foreign_class``.

Generated by ``jsqa export`` (jsqa_sb $version). Usage::

    from speechbrain.inference.interfaces import foreign_class
    model = foreign_class(source=FOLDER_OR_HUB_ID, pymodule_file='custom_interface.py',
                          classname='JSQA')
    model.score_file('speech.wav')

Needs only SpeechBrain: if the ``jsqa_sb`` package is not installed, the modules
it needs ($modules) are defined from the sources carried
below, so that the YAML's ``jsqa_sb.*`` names resolve.

``foreign_class`` runs this file, and SpeechBrain loads ``hyperparams.yaml`` with
HyperPyYAML without JSQA's check: loading a model that way means trusting its
source. ``JSQA.from_hparams`` and ``jsqa score`` check the YAML first.
"""

import sys
import types

_JSQA_SB_VERSION = '$version'
_SOURCES = {
$sources
}


def _define_carried_modules():
    for name in [m for m in sys.modules if m == 'jsqa_sb' or m.startswith('jsqa_sb.')]:
        del sys.modules[name]
    package = types.ModuleType('jsqa_sb')
    package.__path__ = []
    package.__version__ = _JSQA_SB_VERSION
    sys.modules['jsqa_sb'] = package
    for name, source in _SOURCES.items():
        parent, _, last = name.rpartition('.')
        if parent not in sys.modules:  # a sub-package that carries no code of its own
            # No __path__: a name it does not hold is then no module (pydoc's test)
            sys.modules[parent] = types.ModuleType(parent)
            setattr(package, parent.rpartition('.')[2], sys.modules[parent])
        module = sys.modules.get(name) or types.ModuleType(name)
        module.__file__ = __file__
        sys.modules[name] = module
        setattr(sys.modules[parent], last, module)
        exec(compile(source, f'{__file__} [{name}]', 'exec'), module.__dict__)
    sys.modules['jsqa_sb.models'] = package.models = package.networks  # 0.1 name


try:
    import jsqa_sb.serving.inference  # noqa: F401  (an installed jsqa_sb is used as is)
except ImportError:
    _define_carried_modules()

from jsqa_sb.serving.inference import (  # noqa: E402
    JSQA, RecordingError, RecordingTooShortError,
)

__all__ = ['JSQA', 'RecordingError', 'RecordingTooShortError']
''')


def build_custom_interface() -> str:
    """Source of ``custom_interface.py``: the ``JSQA`` class for ``foreign_class``.

    It carries the sources of :data:`VENDORED_MODULES`. When ``jsqa_sb`` is installed,
    the installed package is used; when it is not, the carried modules are defined
    under their ``jsqa_sb.*`` names, so the YAML's ``!new:jsqa_sb.networks...`` resolve.
    """
    sources = {name: inspect.getsource(importlib.import_module(name)) for name in VENDORED_MODULES}
    return _INTERFACE.substitute(
        version=jsqa_sb.__version__,
        modules=", ".join(VENDORED_MODULES),
        sources="\n".join(f"    {name!r}: {source!r}," for name, source in sources.items()),
    )


def _verify(hub: Path, with_head: bool) -> None:
    """Load the written folder and run it once on a second of noise.

    A model outside :data:`jsqa_sb.serving.yaml_security.ALLOWED_CLASSES` is exported with a
    warning: loading it will need ``--trust-remote-code``.
    """
    import torch

    from jsqa_sb.serving.inference import JSQA
    from jsqa_sb.serving.yaml_security import (
        UnsafeModelError,
        UntrustedCodeError,
        check_hparams_yaml,
    )

    trust = False
    try:
        check_hparams_yaml(hub / "hyperparams.yaml")
    except UnsafeModelError:
        raise
    except UntrustedCodeError as err:
        logger.warning(
            "The exported hyperparams.yaml names objects outside what loads without "
            "--trust-remote-code (%s): loading this model will need it",
            "; ".join(str(finding) for finding in err.findings),
        )
        trust = True
    with tempfile.TemporaryDirectory() as savedir:
        model = JSQA.from_hparams(source=str(hub), savedir=savedir, trust_remote_code=trust)
        wav = 0.05 * torch.randn(1, model.sample_rate)
        out = model.score_batch(wav) if with_head else model.encode_batch(wav)
        if not torch.isfinite(out).all():
            raise ExportError(f"{hub}: the exported model gives non-finite outputs")
