"""Loading a model runs nothing but the model: the checks made before a model loads.

A SpeechBrain ``hyperparams.yaml`` is code: HyperPyYAML imports and calls whatever its
tags name (``!new:``, ``!name:``, ``!apply:``, ``!applyref:``, ``!module:``), reads other
files (``!include:``), and finally loads the result with a loader that also understands
``!!python/...`` tags. A deny list of dangerous names cannot close that: ``torch`` and
``speechbrain`` hold many functions that run code, write files or unpickle them. So
:func:`check_hparams_yaml` reads the YAML *without loading it* and allows exactly what
``jsqa export`` writes, and plain data:

* ``!new:`` of the classes in :data:`ALLOWED_CLASSES` (the encoders, the head, the front
  end parts of the ECAPA encoder, and the ``Pretrainer`` that loads the checkpoints),
  named exactly as written there; the ``Pretrainer`` takes ``loadables`` only (where it
  collects and fetches files is the loader's choice, not the model's), and a loadable's
  name must be a plain file name;
* plain data: numbers, strings, booleans, null, lists, mappings, tuples written
  ``(a, b)`` of plain data, and ``!ref <key>`` / ``!ref <key[sub]>`` to another entry
  of the YAML (no attribute access, no string interpolation, no arithmetic:
  HyperPyYAML evaluates those, and ``<a> ** <b>`` alone can hang it).

Everything else is refused: ``!apply:``, ``!applyref:``, ``!name:``, ``!module:``,
``!include:``, ``!copy``, ``!PLACEHOLDER``, ``!!python/...``, unknown tags,
``!new:`` of any other class whichever package it lives in, and the SpeechBrain run
options (``compile``, ``jit``, ``device``, ...) as top-level keys: they set how the
user's machine runs a model. The arguments of an allowed class are checked like the
rest, so they can only be plain data or other allowed objects. Text that HyperPyYAML
parses again as YAML (a string like ``(a, b)`` becomes a tuple by parsing ``[a, b]``
with PyYAML's unsafe loader) must hold plain data only.

A YAML is also refused, with or without ``trust_remote_code``, when it cannot be
checked in bounded time: larger than :data:`MAX_YAML_BYTES`, more than
:data:`MAX_NODES` nodes once its aliases are expanded (a "billion laughs": HyperPyYAML
walks every expansion), nested deeper than :data:`MAX_DEPTH`, or not valid YAML.

``trust_remote_code=True`` (``--trust-remote-code``) lifts the allow-list, for a model
whose author you trust; the limits stay. Checkpoints are loaded with
``torch.load(weights_only=True)`` whatever the trust (:mod:`jsqa_sb.inference`).

The rest of this module keeps a save folder to one model: :func:`model_source` tells a
local folder from a hub id without a network look-up, :func:`prepare_save_folder` and
:func:`record_save_folder` keep a stamp of the source in the save folder so that a
folder used for model A is refilled, not reused, when model B is loaded into it, and
:func:`check_loadable_names` keeps the collected checkpoints inside the save folder.

Not covered: SpeechBrain's ``foreign_class`` imports the model's own
``custom_interface.py`` and loads its YAML with HyperPyYAML directly, so none of these
checks run on that path: loading a model that way means trusting its source.

Authors
 * JSQA contributors 2026
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import ruamel.yaml
import yaml
from ruamel.yaml.nodes import MappingNode as RuamelMappingNode
from ruamel.yaml.nodes import ScalarNode as RuamelScalarNode
from ruamel.yaml.nodes import SequenceNode as RuamelSequenceNode

from jsqa_sb.errors import JSQAError

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: The one list of what a model's YAML may create without ``trust_remote_code``: the
#: classes an inference YAML written by ``jsqa export`` names (``jsqa_sb.hub_export``
#: copies the run's ``encoder`` and ``head``, and adds the ``Pretrainer``), each with
#: the keyword arguments it may take (``None``: any, checked as plain data or other
#: allowed objects).
ALLOWED_CLASSES: dict[str, Optional[tuple[str, ...]]] = {
    # hparams/pretrain.yaml, finetune.yaml, scratch.yaml: the JSQA encoder and MOS head
    "jsqa_sb.models.JSQAEncoder": None,
    "jsqa_sb.models.MOSHead": None,
    # hparams/pretrain_ecapa.yaml: SpeechBrain's ECAPA-TDNN over filterbanks
    "jsqa_sb.models.FeatureLobeEncoder": None,
    "speechbrain.lobes.features.Fbank": None,
    "speechbrain.processing.features.InputNormalization": None,
    "speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN": None,
    # loads encoder.ckpt / head.ckpt; collect_in, paths and hooks are not the model's
    "speechbrain.utils.parameter_transfer.Pretrainer": ("loadables",),
}

#: Largest ``hyperparams.yaml`` read (an exported one is about 2 kB).
MAX_YAML_BYTES = 64 * 1024
#: Most nodes of the document with every alias expanded (an exported one has ~60).
MAX_NODES = 10_000
#: Deepest nesting of lists and mappings (an exported one has 4).
MAX_DEPTH = 64

#: Name of the stamp a save folder keeps of the model it holds.
SAVE_FOLDER_STAMP = ".jsqa_model_source.json"

_CORE = "tag:yaml.org,2002:"
#: Tags of plain data (what YAML gives numbers, strings, booleans, null, lists, mappings).
PLAIN_TAGS = frozenset(
    _CORE + name for name in ("str", "int", "float", "bool", "null", "seq", "map", "timestamp")
)
_SCALAR_TAGS = PLAIN_TAGS - {_CORE + "seq", _CORE + "map"}

# SpeechBrain run options a Pretrained model reads from its hparams when the caller
# does not set them (speechbrain.core.RunOptions), and the audio normaliser it takes.
_RUN_OPTIONS_FALLBACK = (
    "device",
    "data_parallel_backend",
    "data_parallel_count",
    "distributed_backend",
    "distributed_launch",
    "jit",
    "jit_module_keys",
    "compile",
    "compile_module_keys",
    "compile_mode",
    "compile_using_fullgraph",
    "compile_using_dynamic_shape_tracing",
    "precision",
    "eval_precision",
)

# HyperPyYAML's implicit tuple resolver, its reference syntax, and the references allowed.
_TUPLE_PATTERN = re.compile(r"^\(.*\)$")
_REFERENCE_PATTERN = re.compile(r"<[^>]*>")
_PLAIN_REFERENCE = re.compile(r"<([^<>.\[\]]+)((?:\[[^<>.\[\]]+\])*)>")
#: A loadable's name: its checkpoint is collected as ``<name>.ckpt`` in the save folder.
_LOADABLE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
#: ``hf://owner/name``: the hub model, even where ``owner/`` is a folder here.
HUB_PREFIX = "hf://"
# A hub id as the hub spells it: OWNER/NAME.
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")

_ONLY_EXPORT = "a model may create only the objects jsqa export writes"


@dataclass(frozen=True)
class Finding:
    """One refused item: its 1-based line (0: not known), the tag as written, why."""

    line: int
    tag: str
    reason: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.tag} ({self.reason})"


class UntrustedCodeError(JSQAError, ValueError):
    """A model's YAML would create or run something ``jsqa export`` does not write.

    The message is one line: the file, the first refused tags with their lines and
    why, and ``--trust-remote-code``.

    Arguments
    ---------
    source : str
        The file (or a name for the text) that was checked.
    findings : sequence of Finding
        What was refused, where and why.
    """

    #: How the message ends: what the user can do.
    hint = (
        f"{_ONLY_EXPORT}, and plain data; pass --trust-remote-code (trust_remote_code=True "
        "in Python) only if you trust its author"
    )

    def __init__(self, source: str, findings: Sequence[Finding]):
        self.source = source
        self.findings = list(findings)
        shown = "; ".join(str(finding) for finding in self.findings[:3])
        if len(self.findings) > 3:
            shown += f"; and {len(self.findings) - 3} more"
        super().__init__(f"{source}: refusing to load it: {shown}; {self.hint}")


class UnsafeModelError(UntrustedCodeError):
    """A model refused whatever the trust.

    Its YAML cannot be checked in bounded time (too large, aliases expanding too far,
    nested too deeply, not valid YAML), or it would write outside its save folder.
    """

    hint = "--trust-remote-code does not lift this limit"


class ModelSourceError(JSQAError, FileNotFoundError):
    """A model source that is neither an existing folder nor a hub id."""


# ------------------------------------------------------------------------ the YAML check
def read_hparams_text(path: PathLike, name: Optional[str] = None) -> str:
    """The text of a ``hyperparams.yaml``, refused (unread) above :data:`MAX_YAML_BYTES`.

    Arguments
    ---------
    path : str or os.PathLike
        The file.
    name : str, optional
        How the message names it (default: the path).

    Returns
    -------
    str

    Raises
    ------
    UnsafeModelError
        If the file is larger than :data:`MAX_YAML_BYTES`.
    OSError, UnicodeDecodeError
        If it cannot be read as UTF-8 text.
    """
    with open(path, "rb") as fin:
        data = fin.read(MAX_YAML_BYTES + 1)
    _check_size(len(data), name or str(path))
    return data.decode("utf-8")


def _check_size(size: int, label: str) -> None:
    if size > MAX_YAML_BYTES:
        reason = f"larger than {MAX_YAML_BYTES // 1024} kB; an exported model's is about 2 kB"
        raise UnsafeModelError(label, [Finding(0, "the whole file", reason)])


def check_hparams_yaml(
    source: PathLike,
    *,
    trust_remote_code: bool = False,
    name: Optional[str] = None,
) -> list[str]:
    r"""Check that a HyperPyYAML text creates only what ``jsqa export`` writes.

    The YAML is parsed, never loaded: nothing it names is imported, instantiated or
    called, and the work is bounded (:data:`MAX_YAML_BYTES`, :data:`MAX_NODES`,
    :data:`MAX_DEPTH`).

    Arguments
    ---------
    source : str or os.PathLike
        A path to the YAML file or, when it is a ``str`` containing a newline, the YAML
        text itself.
    trust_remote_code : bool
        If True, log a warning listing what the allow-list refuses instead of raising
        (the limits still hold).
    name : str, optional
        How messages name the YAML (default: the path, or ``<hyperparams text>``).

    Returns
    -------
    list of str
        The tags of objects and code found (``!new:...`` and every refused tag), each
        once, in document order.

    Raises
    ------
    UntrustedCodeError
        If the YAML creates or runs anything else and ``trust_remote_code`` is False;
        one line naming the tags, their lines and ``--trust-remote-code``.
    UnsafeModelError
        If the YAML is too large, expands too far, nests too deeply or is not valid
        YAML, whatever ``trust_remote_code``.
    OSError
        If the file cannot be read.

    Example
    -------
    >>> check_hparams_yaml("encoder: !new:jsqa_sb.models.JSQAEncoder\n    emb_dim: 8\n")
    ['!new:jsqa_sb.models.JSQAEncoder']
    >>> try:
    ...     check_hparams_yaml("x: !apply:os.system [echo hi]\n")
    ... except UntrustedCodeError as err:
    ...     print(err.findings[0].line, err.findings[0].tag)
    1 !apply:os.system
    """
    if isinstance(source, str) and "\n" in source:
        text, label = source, name or "<hyperparams text>"
        _check_size(len(text.encode("utf-8")), label)
    else:
        label = name or str(source)
        text = read_hparams_text(source, label)
    checker = _Checker(label)
    checker.check_document(text)
    if checker.findings:
        findings = sorted(checker.findings, key=lambda finding: finding.line)
        if not trust_remote_code:
            raise UntrustedCodeError(label, findings)
        logger.warning(
            "%s: loading what the allow-list refuses because trust_remote_code=True: %s",
            label,
            "; ".join(str(finding) for finding in findings),
        )
    return list(dict.fromkeys(checker.tags))


def _tag_of(node: Any) -> str:
    """The resolved tag of a ruamel.yaml or PyYAML node (a ``Tag`` object or a str)."""
    tag = node.tag
    if tag is not None and not isinstance(tag, str):
        tag = getattr(tag, "value", None)
    return tag or ""


def _display(tag: str) -> str:
    """Write core tags the short way (``!!python/name:os.system``)."""
    return "!!" + tag[len(_CORE) :] if tag.startswith(_CORE) else tag


def _is_mapping(node: Any) -> bool:
    return isinstance(node, (RuamelMappingNode, yaml.MappingNode))


def _is_sequence(node: Any) -> bool:
    return isinstance(node, (RuamelSequenceNode, yaml.SequenceNode))


def _is_scalar(node: Any) -> bool:
    return isinstance(node, (RuamelScalarNode, yaml.ScalarNode))


def _children(node: Any) -> list:
    if _is_mapping(node):
        return [part for pair in node.value for part in pair]
    if _is_sequence(node):
        return list(node.value)
    return []


def _line(node: Any) -> int:
    return node.start_mark.line + 1


def _text_line(text: str, line: int) -> str:
    lines = text.splitlines()
    return lines[line - 1] if 0 < line <= len(lines) else ""


def _expansion_problem(root: Any, text: str) -> Optional[Finding]:
    """Why the node graph is too large once aliases are expanded, or None.

    The graph shares a node wherever an alias points to it; HyperPyYAML's reference
    walk visits it once per alias. Sizes and depths are counted once per node
    (memoised), so the count takes time linear in the text, however far it expands.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            children = _children(node)
            size[key] = 1 + sum(size[id(child)] for child in children)
            depth[key] = 1 + max((depth[id(child)] for child in children), default=0)
            if size[key] > MAX_NODES or depth[key] > MAX_DEPTH:
                alias = re.search(r"\*[^\s,\]\}]+", _text_line(text, _line(node)))
                shown = alias.group(0) if alias else "the document"
                if depth[key] > MAX_DEPTH:
                    return Finding(_line(node), shown, f"nested deeper than {MAX_DEPTH} levels")
                return Finding(
                    _line(node),
                    shown,
                    f"with its aliases expanded it has more than {MAX_NODES:,} nodes",
                )
            continue
        if key in size:
            continue
        if key in depth:  # entered and not finished: an alias to one of its own parents
            return Finding(_line(node), "the document", "an alias refers to its own parent")
        depth[key] = -1
        stack.append((node, True))
        stack += [(child, False) for child in _children(node) if id(child) not in size]
    return None


class _Checker:
    """Walk the node graph of one YAML text and collect tags and findings."""

    def __init__(self, label: str):
        self.label = label
        self.tags: list[str] = []
        self.findings: list[Finding] = []
        self.root: Any = None

    def refuse(self, line: int, tag: str, reason: str) -> None:
        self.findings.append(Finding(line, tag, reason))

    def check_document(self, text: str) -> None:
        """Check the single document of a HyperPyYAML text, as ruamel.yaml composes it.

        The size of the document with its aliases expanded is counted first, on the
        graph PyYAML's C composer builds (fast; nothing is expanded): ruamel.yaml's
        pure-Python composer, which HyperPyYAML uses, takes a second per 10,000 nodes.
        """
        self.count(text)
        try:
            documents = list(ruamel.yaml.YAML().compose_all(text))
        except RecursionError:
            raise self.unsafe(0, f"nested deeper than {MAX_DEPTH} levels") from None
        except ruamel.yaml.YAMLError as err:
            raise self.not_yaml(err) from err
        documents = [document for document in documents if document is not None]
        if len(documents) > 1:
            raise self.unsafe(
                _line(documents[1]), "a second YAML document; HyperPyYAML reads one", "---"
            )
        if not documents:
            return
        self.root = documents[0]
        problem = _expansion_problem(self.root, text)  # the same count, on ruamel's graph
        if problem is not None:
            raise UnsafeModelError(self.label, [problem])
        self.walk(self.root)

    def count(self, text: str, parse_errors: bool = True) -> None:
        """Refuse a text whose expanded size or depth is over the limits (PyYAML's view).

        ``parse_errors``: refuse a text PyYAML cannot parse (else let it pass).
        """
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        try:
            documents = list(yaml.compose_all(text, Loader=loader))
        except RecursionError:
            raise self.unsafe(0, f"nested deeper than {MAX_DEPTH} levels") from None
        except yaml.YAMLError as err:
            if not parse_errors:
                return
            raise self.not_yaml(err) from err
        for document in documents:
            problem = _expansion_problem(document, text) if document is not None else None
            if problem is not None:
                raise UnsafeModelError(self.label, [problem])

    def unsafe(self, line: int, reason: str, tag: str = "the document") -> UnsafeModelError:
        return UnsafeModelError(self.label, [Finding(line, tag, reason)])

    def not_yaml(self, err: Exception) -> UnsafeModelError:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or " ".join(str(err).split())
        return self.unsafe(mark.line + 1 if mark else 0, f"not valid YAML: {problem}")

    def walk(self, root: Any) -> None:
        """Check every node under ``root`` once (aliases share nodes)."""
        if _is_mapping(root):
            run_options = _run_options()
            for key, _ in root.value:
                if _is_scalar(key) and key.value in run_options:
                    self.refuse(
                        _line(key),
                        str(key.value),
                        "a SpeechBrain run option: how this machine runs the model is the "
                        "user's choice, not the model's",
                    )
        stack, seen = [root], set()
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            self.check_node(node)
            if _is_mapping(node):
                for key, value in reversed(node.value):
                    self.check_key(key)
                    stack += [value, key]
            elif _is_sequence(node):
                stack += reversed(node.value)

    def check_key(self, key: Any) -> None:
        """A mapping key must be a plain scalar (a name or a number)."""
        if not _is_scalar(key) and _tag_of(key) in PLAIN_TAGS:
            self.refuse(_line(key), "(a list or mapping as a key)", "keys must be plain names")

    def check_node(self, node: Any) -> None:
        """Check one node's tag and, for scalars, text that is parsed again."""
        tag, line = _tag_of(node), _line(node)
        if tag.startswith("!new:"):
            self.tags.append(tag)
            self.check_new(node, tag, line)
        elif tag == "!ref":
            self.check_reference(node, line)
        elif tag in PLAIN_TAGS or tag == "!tuple" and _is_scalar(node):
            # HyperPyYAML's _make_tuple: "(a, b)" -> yaml.load("[a, b]", yaml.Loader).
            # Once HyperPyYAML has loaded a file, ruamel.yaml too resolves "(a, b)" as !tuple.
            value = node.value if _is_scalar(node) else None
            if isinstance(value, str) and (tag == "!tuple" or _TUPLE_PATTERN.match(value)):
                self.check_reparsed("[" + value[1:-1] + "]", line, value)
        else:
            shown = _display(tag) or "(no tag)"
            self.tags.append(shown)
            self.refuse(line, shown, _refusal_reason(tag))

    def check_new(self, node: Any, tag: str, line: int) -> None:
        """``!new:X``: X in :data:`ALLOWED_CLASSES`, with the keywords it may take."""
        target = tag[len("!new:") :]
        if target not in ALLOWED_CLASSES:
            self.refuse(line, tag, "not one of the objects jsqa export writes")
            return
        keywords = ALLOWED_CLASSES[target]
        if keywords is None:
            return
        if _is_sequence(node) and node.value or _is_scalar(node) and node.value:
            self.refuse(line, tag, f"takes keyword arguments only ({', '.join(keywords)})")
            return
        for key, value in node.value if _is_mapping(node) else []:
            if not _is_scalar(key) or key.value not in keywords:
                shown = key.value if _is_scalar(key) else "(a list or mapping)"
                self.refuse(_line(key), f"{tag} {shown}", f"takes {', '.join(keywords)} only")
            elif key.value == "loadables":
                self.check_loadables(value, tag)

    def check_loadables(self, node: Any, tag: str) -> None:
        """The Pretrainer's loadables: a mapping whose names are plain file names."""
        if not _is_mapping(node) or _tag_of(node) != _CORE + "map":
            self.refuse(_line(node), f"{tag} loadables", "must be a mapping of names")
            return
        for key, _ in node.value:
            name = key.value if _is_scalar(key) else None
            if not isinstance(name, str) or not _LOADABLE_NAME.fullmatch(name):
                self.refuse(
                    _line(key),
                    f"loadable {name!r}",
                    "its checkpoint would be collected as a file outside the save folder"
                    if isinstance(name, str) and (".." in name or "/" in name or "\\" in name)
                    else "a loadable's name must be letters, digits, '_' or '-'",
                )

    def check_reference(self, node: Any, line: int) -> None:
        """``!ref <key>`` or ``!ref <key[sub]>``, to an entry that is not interpolated."""
        value = node.value if _is_scalar(node) and isinstance(node.value, str) else None
        written = f"!ref {value}" if value is not None else "!ref"
        if value is None or not _PLAIN_REFERENCE.fullmatch(value):
            if value is not None and "." in "".join(_REFERENCE_PATTERN.findall(value)):
                reason = "reads an attribute of an object"
            else:
                reason = "only <key> or <key[sub]>: no interpolation or arithmetic"
            self.refuse(line, written, reason)
            return
        target = self.follow(node)
        if target is None:
            self.refuse(line, written, "refers to no entry of this YAML (or to itself)")
        elif (
            _is_scalar(target)
            and isinstance(target.value, str)
            and _tag_of(target) != "!ref"
            and _REFERENCE_PATTERN.search(target.value)
        ):
            self.refuse(line, written, "refers to text that HyperPyYAML would interpolate")

    def check_reparsed(self, text: str, line: int, what: str) -> None:
        """Text that HyperPyYAML hands to PyYAML's unsafe loader: plain data only."""
        try:
            documents = [doc for doc in yaml.compose_all(text, Loader=yaml.SafeLoader) if doc]
        except (yaml.YAMLError, RecursionError):
            return  # PyYAML cannot parse it either: loading fails, nothing is built
        for document in documents:
            problem = _expansion_problem(document, text)
            if problem is not None:
                self.refuse(line, what, f"parsed again as a tuple: {problem.reason}")
                return
            stack, seen = [document], set()
            while stack:
                node = stack.pop()
                if id(node) in seen:
                    continue
                seen.add(id(node))
                tag = _tag_of(node)
                if tag not in PLAIN_TAGS:
                    self.tags.append(_display(tag))
                    self.refuse(
                        line,
                        _display(tag),
                        f"inside {what!r}, which HyperPyYAML parses again as YAML: "
                        + _refusal_reason(tag),
                    )
                stack += _children(node)

    # -------------------------------------------------------------------- references
    def lookup(self, path: str) -> Any:
        """The node at ``a[b][c]`` as HyperPyYAML's ``deref`` finds it, or None."""
        node = self.root
        for part in path.split("["):
            node = _mapping_get(node, part.strip("]"))
            if node is None:
                return None
        return node

    def follow(self, node: Any) -> Any:
        """The node a ``!ref`` chain ends on (None: missing, or a cycle)."""
        for _ in range(MAX_DEPTH):
            if _tag_of(node) != "!ref" or not _is_scalar(node):
                return node
            match = _PLAIN_REFERENCE.fullmatch(node.value) if isinstance(node.value, str) else None
            if match is None:
                return node  # refused where it stands
            node = self.lookup(node.value[1:-1])
            if node is None:
                return None
        return None


def _refusal_reason(tag: str) -> str:
    """Why a tag other than ``!new:``/``!ref``/plain data is refused."""
    if tag.startswith("!apply:") or tag.startswith("!applyref:"):
        return "calls a function"
    if tag.startswith("!name:"):
        return "hands over a function or class"
    if tag.startswith("!module:"):
        return "hands over a module"
    if tag.startswith("!include:"):
        return "reads another YAML file, which is not checked"
    if tag.startswith(_CORE + "python/"):
        return "a !!python tag builds any Python object"
    if tag in ("!copy", "!tuple", "!PLACEHOLDER") or tag.startswith(_CORE):  # !tuple: not text
        return "not plain data, and jsqa export does not write it"
    return "unknown tag"


def _mapping_get(node: Any, key: str) -> Any:
    """The value node of ``key`` in a mapping node, or None."""
    if node is None or not _is_mapping(node):
        return None
    for key_node, value_node in node.value:
        if _is_scalar(key_node) and key_node.value == key:
            return value_node
    return None


def _run_options() -> frozenset:
    """SpeechBrain's run options, which a model's YAML may not set.

    Read from ``speechbrain.core.RunOptions`` when SpeechBrain is loaded (it is, when a
    model loads), so that options of later versions are covered too.
    """
    names = list(_RUN_OPTIONS_FALLBACK)
    core = sys.modules.get("speechbrain.core")
    try:
        names += [name for name in core.RunOptions().as_dict() if name != "overridden_args"]
    except Exception:  # not loaded, or another speechbrain version
        pass
    return frozenset([*names, "audio_normalizer"])


# ------------------------------------------------------------------- the save folder
def model_source(source: Any) -> Any:
    """Where to load a model from: an existing folder, a URL or a hub id ``owner/name``.

    Anything else is a mistyped folder and is refused at once, without a hub look-up:
    a path that starts with ``.``, ``/`` or ``~``, has more or fewer than one ``/``, or
    whose first part is a folder here (``models/jsqaa`` next to ``models/``).
    ``hf://owner/name`` always names the hub model.

    Arguments
    ---------
    source : str, os.PathLike or speechbrain.utils.fetching.FetchSource
        What the user gave (a ``FetchSource`` is used as is).

    Returns
    -------
    str or FetchSource
        The folder (``~`` expanded), the URL or the hub id.

    Raises
    ------
    ModelSourceError
        If ``source`` is a file, or neither an existing folder nor a hub id.
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


def _stamp(savedir: PathLike) -> Path:
    return Path(savedir) / SAVE_FOLDER_STAMP


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

    Arguments
    ---------
    savedir : str or os.PathLike, optional
        The save folder (None: the files are used where they are, nothing to do).
    source : str or FetchSource
        The model being loaded (as :func:`model_source` returns it).
    hparams_file : str
        Its YAML's file name.

    Returns
    -------
    bool
    """
    if savedir is None or _is_source_folder(savedir, source):
        return False
    stamp = _stamp(savedir)
    wanted = {"source": _source_key(source), "hparams_file": hparams_file}
    try:
        recorded = json.loads(stamp.read_text(encoding="utf-8"))
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
    partial = _stamp(savedir).with_suffix(".partial")
    partial.write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, _stamp(savedir))


def check_loadable_names(names: Iterable[Any], label: str) -> None:
    """Refuse loadable names whose checkpoint would be collected outside the save folder.

    The Pretrainer collects loadable ``name`` as ``<save folder>/<name>.ckpt``; a name
    with ``..`` or a path separator would put (or link) that file elsewhere.

    Arguments
    ---------
    names : iterable
        The Pretrainer's loadable names.
    label : str
        How the message names the model.

    Raises
    ------
    UnsafeModelError
        If a name is not a plain file name, whatever the trust.
    """
    bad = [
        name
        for name in names
        if not isinstance(name, str)
        or not name
        or ".." in name
        or "/" in name
        or "\\" in name
        or os.sep in name
        or "\0" in name
    ]
    if bad:
        reason = "its checkpoint would be collected as a file outside the save folder"
        raise UnsafeModelError(label, [Finding(0, f"loadable {name!r}", reason) for name in bad])


def check_hparams_size(path: PathLike, name: Optional[str] = None) -> None:
    """Refuse a ``hyperparams.yaml`` too large to check, before anything parses it slowly.

    Too large: more than :data:`MAX_YAML_BYTES` (refused unread), or more than
    :data:`MAX_NODES` nodes once its aliases are expanded, or nested deeper than
    :data:`MAX_DEPTH` (counted with PyYAML's C composer, in milliseconds: ruamel.yaml's
    pure-Python composer takes about a second per 10,000 nodes). A file that cannot be
    read or parsed passes: reading and checking it say why.

    Arguments
    ---------
    path : str or os.PathLike
        The file.
    name : str, optional
        How the message names it (default: the path).

    Raises
    ------
    UnsafeModelError
        If the file is too large, whatever the trust.
    """
    label = name or str(path)
    try:
        text = read_hparams_text(path, label)
    except (OSError, UnicodeDecodeError):
        return
    _Checker(label).count(text, parse_errors=False)
