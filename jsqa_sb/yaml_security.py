"""Refuse a hub model's ``hyperparams.yaml`` that would run code from untrusted packages.

A SpeechBrain ``hyperparams.yaml`` is code: HyperPyYAML imports and calls whatever its
tags name (``!new:``, ``!name:``, ``!apply:``, ``!applyref:``, ``!module:``), pulls in
other files (``!include:``), and finally loads the result with PyYAML's full loader,
which also understands ``!!python/...`` tags. :func:`check_hparams_yaml` reads the YAML
*without loading it* and refuses one that names anything outside the trusted packages
(:data:`ALLOWED_PACKAGES`: ``jsqa_sb``, ``speechbrain``, ``torch``, ``torchaudio``),
unless the user passes ``trust_remote_code=True`` (``--trust-remote-code`` on the
command line).

What is checked
---------------
* Every node of the node graph that ruamel.yaml's composer builds (the parser
  HyperPyYAML uses), mapping keys included, so verbatim tags (``!<!new:os.system>``)
  and ``%TAG`` directives cannot hide a tag: the composer hands over the resolved tag.
* Tags without code are allowed: ``!ref``, ``!copy``, ``!tuple``, ``!PLACEHOLDER`` and
  the YAML core tags (``!!str``, ``!!int``, ``!!map``, ...). ``!!python/...`` tags,
  ``!include:`` and any unknown tag are refused.
* The target ``X`` of ``!new:X``, ``!name:X``, ``!apply:X``, ``!applyref:X`` and
  ``!module:X`` must be written inside a trusted package (``torchvision`` is not
  ``torch``), must not use a name starting with ``_``, and is then resolved the way
  HyperPyYAML does (:func:`pydoc.locate`: import the longest importable module
  prefix, then ``getattr`` the rest). Every object met on the way, and the object it
  lands on, must be defined in a trusted package: ``jsqa_sb.models.os.system`` is
  refused because it walks through ``os``. A target that cannot be resolved is
  refused too. Resolving imports modules of the trusted packages only.
* Text that HyperPyYAML parses again as YAML: a string such as ``(a, b)`` becomes a
  tuple by parsing ``[a, b]`` with PyYAML's full loader, so a tag inside the
  parentheses would run. Such strings, ``!tuple`` scalars, and ``!ref`` strings
  built by interpolation (worked out statically) are checked like the document.
* ``!ref <a.b>`` reads attribute ``b`` of ``a`` (HyperPyYAML calls ``getattr``): a
  name starting with ``_`` is refused, and on a ``!name:`` or ``!module:`` node the
  attribute is checked as the target ``X.b``.
* ``!applyref:X`` is refused even for a trusted ``X``: it runs while references are
  resolved, and what it returns is written back into the YAML text and parsed again
  (a returned ``"(!!python/...)"`` string becomes code), which no static check sees.

Deny list
---------
Some entry points of the trusted packages run arbitrary code, download it, or unpickle
files; :data:`DENIED_NAMES` refuses them (and anything under a denied module). A name
is matched as written, as the qualified name of the object it resolves to, and
against the qualified names of the denied objects themselves, so an alias
(``jsqa_sb.models.torch.load``, ``torch.jit.load`` defined in
``torch.jit._serialization``) cannot dodge it. The Pretrainer
(``speechbrain.utils.parameter_transfer.Pretrainer``) stays allowed: every hub YAML
uses it.

The allow-list is a guard, not a sandbox. Trusted packages hold many functions, and a
YAML can combine them (and read attributes of objects it created) in ways this check
cannot foresee; checkpoints are still unpickled by ``torch.load`` inside the
Pretrainer. It stops the obvious ways in (``!apply:os.system``, ``!!python/object``,
``torch.hub.load``), no more. Check and load the *same text* (read the file once), and
note that overrides passed by the caller are not checked: they come from the user.

Authors
 * JSQA contributors 2026
"""

from __future__ import annotations

import inspect
import logging
import os
import pydoc
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import ruamel.yaml
import yaml
from ruamel.yaml.nodes import MappingNode as RuamelMappingNode
from ruamel.yaml.nodes import ScalarNode as RuamelScalarNode
from ruamel.yaml.nodes import SequenceNode as RuamelSequenceNode

from jsqa_sb.errors import JSQAError

logger = logging.getLogger(__name__)

#: Packages whose classes and functions a YAML may name without ``trust_remote_code``.
ALLOWED_PACKAGES = ("jsqa_sb", "speechbrain", "torch", "torchaudio")

#: Deny list: names inside the trusted packages that are refused all the same, with why.
#: A module name denies everything under it.
DENIED_NAMES = {
    "torch.hub": "downloads and runs code",
    "torch.load": "unpickles a file",
    "torch.serialization": "unpickles files",
    "torch.jit.load": "loads compiled code",
    "torch.package": "imports pickled code packages",
    "torch.export.load": "unpickles a file",
    "torch.utils.cpp_extension": "compiles and loads native code",
    "torch.ops.load_library": "loads a native library",
    "torch.classes.load_library": "loads a native library",
    "torch.compile": "generates and runs code",
    "torch.utils.benchmark": "runs code given as text",
    "torch.utils.collect_env": "runs shell commands",
    "torch.utils.bottleneck": "runs scripts",
    "torch.distributed.run": "starts arbitrary processes",
    "torch.distributed.launch": "starts arbitrary processes",
    "torch.distributed.elastic": "starts arbitrary processes",
    "speechbrain.inference.interfaces.foreign_class": "imports a class from a hub file",
    "speechbrain.inference.interfaces.pretrained_from_hparams": "loads another YAML",
    "speechbrain.inference.interfaces.Pretrained.from_hparams": "loads another YAML",
    "speechbrain.utils.importutils": "imports modules by name",
    "speechbrain.utils.fetching": "downloads files",
    "speechbrain.utils.superpowers": "runs shell commands and imports files",
}

CODE_TAG_PREFIXES = ("!new:", "!name:", "!apply:", "!applyref:", "!module:")
INCLUDE_TAG_PREFIX = "!include:"
DATA_TAGS = ("!ref", "!copy", "!tuple", "!PLACEHOLDER")
CORE_TAG_PREFIX = "tag:yaml.org,2002:"
CORE_TAGS = (
    "str",
    "int",
    "float",
    "bool",
    "null",
    "map",
    "seq",
    "timestamp",
    "binary",
    "merge",
    "omap",
    "set",
    "pairs",
    "value",  # what the resolvers give a plain ``=``
)

# HyperPyYAML's implicit tuple resolver and its reference syntax (hyperpyyaml.core).
_TUPLE_PATTERN = re.compile(r"^\(.*\)$")
_REFERENCE_PATTERN = re.compile(r"<[^>]*>")
_UNKNOWN = "\0"  # stands for the text of an object only known at load time
_MAX_DEPTH = 20


@dataclass(frozen=True)
class Finding:
    """One refused tag: its 1-based line, the tag as written, and the reason."""

    line: int
    tag: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.tag} ({self.reason})"


class UntrustedCodeError(JSQAError, ValueError):
    """A YAML would run code from outside the trusted packages.

    Arguments
    ---------
    source : str
        The file (or a name for the text) that was checked.
    findings : sequence of Finding
        What was refused, where and why.
    allowed : sequence of str
        The trusted packages.
    """

    def __init__(self, source: str, findings: Sequence[Finding], allowed: Sequence[str]):
        self.source = source
        self.findings = list(findings)
        lines = [
            f"{source}: refusing to load it: it would run code from outside the trusted "
            f"packages ({', '.join(allowed)}):"
        ]
        lines += [f"  {finding}" for finding in self.findings]
        lines.append(
            "If you trust the author of this model, pass trust_remote_code=True (Python) "
            "or --trust-remote-code (command line)."
        )
        super().__init__("\n".join(lines))


def check_hparams_yaml(
    source: str | os.PathLike,
    *,
    trust_remote_code: bool = False,
    allowed: Sequence[str] = ALLOWED_PACKAGES,
    name: Optional[str] = None,
) -> list[str]:
    r"""Check that a HyperPyYAML file runs code from trusted packages only.

    The YAML is parsed, never loaded: nothing it names is instantiated or called.
    Modules of the trusted packages are imported to resolve the names.

    Arguments
    ---------
    source : str or os.PathLike
        A path to the YAML file or, when it is a ``str`` containing a newline, the YAML
        text itself.
    trust_remote_code : bool
        If True, log a warning listing the untrusted tags instead of raising.
    allowed : sequence of str
        The trusted packages (a name also covers its submodules).
    name : str, optional
        How messages name the YAML (default: the path, or ``<hyperparams text>``).

    Returns
    -------
    list of str
        The code tags found (``!new:``, ``!name:``, ``!apply:``, ``!applyref:``,
        ``!module:``, ``!include:`` and any refused tag), each once, in document order.

    Raises
    ------
    UntrustedCodeError
        If a tag runs code from outside ``allowed`` and ``trust_remote_code`` is False;
        the message names each tag, its line, the file and how to override.
    OSError
        If the file cannot be read.
    ruamel.yaml.YAMLError
        If the text is not valid YAML (HyperPyYAML could not load it either).

    Example
    -------
    >>> check_hparams_yaml("model: !new:torch.nn.Linear [2, 3]\nlr: 0.1\n")
    ['!new:torch.nn.Linear']
    >>> try:
    ...     check_hparams_yaml("x: !apply:os.system [echo hi]\n")
    ... except UntrustedCodeError as err:
    ...     print(err.findings[0])
    line 1: !apply:os.system ('os' is not a trusted package)
    """
    if isinstance(source, str) and "\n" in source:
        text, label = source, name or "<hyperparams text>"
    else:
        text, label = Path(source).read_text(encoding="utf-8"), name or str(source)
    checker = _Checker(tuple(allowed))
    checker.check_document(text)
    if checker.findings:
        findings = sorted(checker.findings, key=lambda finding: finding.line)
        if not trust_remote_code:
            raise UntrustedCodeError(label, findings, checker.allowed)
        logger.warning(
            "%s: loading code from outside the trusted packages because trust_remote_code=True: %s",
            label,
            "; ".join(str(finding) for finding in findings),
        )
    return list(dict.fromkeys(checker.tags))


# ------------------------------------------------------------------------ the node walk
def _tag_of(node: Any) -> str:
    """The resolved tag of a ruamel.yaml or PyYAML node (a ``Tag`` object or a str)."""
    tag = node.tag
    if tag is not None and not isinstance(tag, str):
        tag = getattr(tag, "value", None)
    return tag or ""


def _display(tag: str) -> str:
    """Write core tags the short way (``!!python/name:os.system``)."""
    if tag.startswith(CORE_TAG_PREFIX):
        return "!!" + tag[len(CORE_TAG_PREFIX) :]
    return tag


def _is_mapping(node: Any) -> bool:
    return isinstance(node, (RuamelMappingNode, yaml.MappingNode))


def _is_sequence(node: Any) -> bool:
    return isinstance(node, (RuamelSequenceNode, yaml.SequenceNode))


def _is_scalar(node: Any) -> bool:
    return isinstance(node, (RuamelScalarNode, yaml.ScalarNode))


def _in_packages(name: str, packages: Sequence[str]) -> bool:
    return any(name == pkg or name.startswith(pkg + ".") for pkg in packages)


class _Checker:
    """Walk the node graph of one YAML text and collect code tags and findings."""

    def __init__(self, allowed: tuple[str, ...]):
        if not allowed or not all(isinstance(pkg, str) and pkg for pkg in allowed):
            raise ValueError(f"allowed must list package names, got {allowed!r}")
        self.allowed = allowed
        self.tags: list[str] = []
        self.findings: list[Finding] = []
        self.root: Any = None

    def refuse(self, line: int, tag: str, reason: str) -> None:
        self.findings.append(Finding(line, tag, reason))

    def check_document(self, text: str) -> None:
        """Check every document of a HyperPyYAML text, as ruamel.yaml composes it."""
        for document in ruamel.yaml.YAML().compose_all(text):
            if self.root is None:
                self.root = document  # HyperPyYAML reads a single document
            self.walk(document, line=None, depth=0)

    def walk(self, root: Any, line: Optional[int], depth: int) -> None:
        """Check every node under ``root`` (``line``: report this line for all)."""
        stack, seen = [root], set()
        while stack:
            node = stack.pop()
            if node is None or id(node) in seen:  # aliases share nodes
                continue
            seen.add(id(node))
            self.check_node(node, line or node.start_mark.line + 1, depth)
            if _is_mapping(node):
                for key, value in reversed(node.value):
                    stack += [value, key]
            elif _is_sequence(node):
                stack += reversed(node.value)

    def check_node(self, node: Any, line: int, depth: int) -> None:
        """Check one node's tag and, for scalars, text that is parsed again."""
        tag = _tag_of(node)
        value = node.value if _is_scalar(node) and isinstance(node.value, str) else None
        if tag.startswith(CODE_TAG_PREFIXES):
            self.tags.append(tag)
            for reason in self.target_problems(tag.split(":", 1)[1]):
                self.refuse(line, tag, reason)
            if tag.startswith("!applyref:"):
                self.refuse(line, tag, "its result is parsed again as YAML, unchecked")
        elif tag.startswith(INCLUDE_TAG_PREFIX):
            self.tags.append(tag)
            self.refuse(line, tag, "includes another YAML file, which is not checked")
        elif tag.startswith(CORE_TAG_PREFIX):
            suffix = tag[len(CORE_TAG_PREFIX) :]
            if suffix not in CORE_TAGS:
                self.tags.append(_display(tag))
                python = suffix.startswith("python/")
                reason = "a !!python tag builds any Python object" if python else "unknown tag"
                self.refuse(line, _display(tag), reason)
        elif tag not in DATA_TAGS:
            self.tags.append(tag)
            self.refuse(line, tag or "(no tag)", "unknown tag")
        if value is None:
            return
        if tag in ("!ref", "!copy"):
            self.check_reference(tag, value, line, depth)
        elif tag == "!tuple" or _TUPLE_PATTERN.match(value):
            # HyperPyYAML's _make_tuple: "(a, b)" -> yaml.load("[a, b]", yaml.Loader)
            self.check_reparsed("[" + value[1:-1] + "]", line, depth, f"{tag} {value}")

    def check_reparsed(self, text: str, line: int, depth: int, what: str) -> None:
        """Check text that HyperPyYAML hands to PyYAML's full loader."""
        if "!" not in text:  # every YAML tag starts with "!": nothing can be built
            return
        if depth >= _MAX_DEPTH:
            self.refuse(line, _display(what), "text parsed as YAML is nested too deeply")
            return
        try:
            documents = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
        except yaml.YAMLError:
            self.refuse(line, _display(what), "text parsed as YAML cannot be checked")
            return
        for document in documents:
            self.walk(document, line=line, depth=depth + 1)

    # -------------------------------------------------------------------- references
    def check_reference(self, tag: str, value: str, line: int, depth: int) -> None:
        """Check ``!ref``/``!copy``: attribute access and the string it resolves to."""
        for match in _REFERENCE_PATTERN.finditer(value):
            path = match.group(0)[1:-1]
            if "." not in path:
                continue
            base, attribute = path.split(".", 1)
            written = f"{tag} {match.group(0)}"
            if any(part.startswith("_") for part in attribute.split(".")):
                self.refuse(line, written, f"reads the private or special name {attribute!r}")
                continue
            node = self.follow(self.lookup(base))
            base_tag = _tag_of(node) if node is not None else ""
            if base_tag.startswith(("!name:", "!module:")):
                for reason in self.target_problems(f"{base_tag.split(':', 1)[1]}.{attribute}"):
                    self.refuse(line, written, reason)
        text = self.resolved_text(value)
        if text is None:
            return
        if _UNKNOWN not in text:
            if _TUPLE_PATTERN.match(text):
                self.check_reparsed("[" + text[1:-1] + "]", line, depth, f"{tag} {value}")
        elif text[:1] in ("(", _UNKNOWN) and text[-1:] in (")", _UNKNOWN):
            self.refuse(
                line, f"{tag} {value}", "may build a tuple from text that cannot be checked"
            )

    def resolved_text(self, value: str) -> Optional[str]:
        """The new string a ``!ref`` value resolves to (None: an object, or nothing new).

        HyperPyYAML dumps the string and loads it again, so a result like ``(a, b)``
        is parsed as YAML. ``<x>`` alone stands for the value of ``x``, which is only
        new text if that value is itself interpolated.
        """
        if not _REFERENCE_PATTERN.fullmatch(value):
            return self.interpolate(value, 0)
        path = value[1:-1]
        node = None if "." in path else self.lookup(path)  # <a.b>: getattr at load time
        if node is None or not _is_scalar(node) or not isinstance(node.value, str):
            return None
        if _tag_of(node) not in ("!ref", "!copy", CORE_TAG_PREFIX + "str"):
            return None
        text = self.interpolate(node.value, 1)
        return None if text == node.value else text

    def lookup(self, path: str) -> Any:
        """The node at ``a[b][c]`` as HyperPyYAML's ``deref`` finds it, or None."""
        node = self.root
        for part in path.split("["):
            node = _mapping_get(self.follow(node), part.strip("]"))
            if node is None:
                return None
        return node

    def follow(self, node: Any) -> Any:
        """Follow ``!ref <x>`` / ``!copy <x>`` chains to the node they stand for."""
        for _ in range(_MAX_DEPTH):
            if node is None or _tag_of(node) not in ("!ref", "!copy") or not _is_scalar(node):
                return node
            value = node.value if isinstance(node.value, str) else ""
            if not _REFERENCE_PATTERN.fullmatch(value) or "." in value:
                return node
            node = self.lookup(value[1:-1])
        return None

    def interpolate(self, value: str, depth: int) -> str:
        """Work out HyperPyYAML's string interpolation; unknown parts become ``_UNKNOWN``."""
        if depth >= _MAX_DEPTH:
            return _UNKNOWN
        if not _REFERENCE_PATTERN.search(value):
            return value
        if _REFERENCE_PATTERN.fullmatch(value):
            return self.reference_text(value[1:-1], depth)
        text = _REFERENCE_PATTERN.sub(
            lambda match: self.reference_text(match.group(0)[1:-1], depth), value
        )
        return self.interpolate(text, depth + 1)  # HyperPyYAML resolves the result again

    def reference_text(self, path: str, depth: int) -> str:
        """The text that ``<path>`` contributes to an interpolated string."""
        node = None if "." in path else self.lookup(path)
        if node is None or not _is_scalar(node) or not isinstance(node.value, str):
            return _UNKNOWN
        tag = _tag_of(node)
        if tag in ("!ref", "!copy") or tag == CORE_TAG_PREFIX + "str":
            return self.interpolate(node.value, depth + 1)
        if tag.startswith(CORE_TAG_PREFIX) and tag[len(CORE_TAG_PREFIX) :] in CORE_TAGS:
            return node.value  # numbers, booleans, null: no parentheses, no tags
        return _UNKNOWN

    # ------------------------------------------------------------------------ targets
    def target_problems(self, target: str) -> list[str]:
        """Why the target of a code tag is refused (empty: it is allowed)."""
        parts = [part for part in target.split(".") if part]  # as pydoc.locate splits
        written = ".".join(parts)
        private = [part for part in parts if part.startswith("_")]
        if private:
            return [f"uses the private or special name {private[0]!r}"]
        if not _in_packages(written, self.allowed):
            return [f"{(parts or [target])[0]!r} is not a trusted package"]
        denied = _DenyList(resolve=False).match([written])
        if denied:
            return [denied]
        try:
            chain = _resolve(parts)
        except LookupError as err:
            return [f"cannot be resolved: {err}"]
        deny_list = _DenyList(resolve=True)  # now that the modules it may alias are loaded
        problems = []
        origin = ""
        for obj in chain:
            origin = _origin(obj, origin)
            if not _in_packages(origin, self.allowed) and not _is_plain_data(obj, chain):
                what = "module" if inspect.ismodule(obj) else "code defined in"
                problems.append(f"reaches {what} {origin!r}, outside the trusted packages")
                break
            denied = deny_list.match(_qualified_names(obj), obj)
            if denied:
                problems.append(denied)
                break
        return problems


def _mapping_get(node: Any, key: str) -> Any:
    """The value node of ``key`` in a mapping node (merge keys included), or None."""
    if node is None or not _is_mapping(node):
        return None
    merged = []
    for key_node, value_node in node.value:
        if _tag_of(key_node) == CORE_TAG_PREFIX + "merge":
            merged += value_node.value if _is_sequence(value_node) else [value_node]
        elif _is_scalar(key_node) and key_node.value == key:
            return value_node
    for other in merged:
        found = _mapping_get(other, key)
        if found is not None:
            return found
    return None


# --------------------------------------------------------------------- name resolution
def _resolve(parts: Sequence[str]) -> list[Any]:
    """Resolve a dotted name like :func:`pydoc.locate`, returning every object on the way.

    Raises ``LookupError`` (saying which part failed) where ``pydoc.locate`` would give
    None, fall back to builtins, or fail to import a module.
    """
    chain: list[Any] = []
    found = 0
    while found < len(parts):
        dotted = ".".join(parts[: found + 1])
        try:
            module = pydoc.safeimport(dotted)
        except pydoc.ErrorDuringImport as err:
            raise LookupError(f"importing {dotted} fails ({err.exc.__name__})") from err
        if module is None:
            break
        chain.append(module)
        found += 1
    if not chain:
        raise LookupError(f"no module named {parts[0]!r}")
    obj = chain[-1]
    for part in parts[found:]:
        try:
            obj = getattr(obj, part)
        except Exception as err:  # a lazy module may raise anything
            raise LookupError(f"{'.'.join(parts)} has no attribute {part!r}") from err
        chain.append(obj)
    return chain


def _origin(obj: Any, owner: str) -> str:
    """The module that defines ``obj`` (``owner``: where it was found, as a fallback)."""
    if inspect.ismodule(obj):
        return obj.__name__
    if inspect.isclass(obj) or inspect.isroutine(obj):
        module = getattr(obj.__func__ if inspect.ismethod(obj) else obj, "__module__", None)
        return module if isinstance(module, str) else owner
    return type(obj).__module__


def _is_plain_data(obj: Any, chain: Sequence[Any]) -> bool:
    """A number, string or None at the end of the chain: nothing to call."""
    return obj is chain[-1] and (obj is None or type(obj) in (bool, int, float, complex, str))


def _qualified_names(obj: Any) -> list[str]:
    """``module.qualname`` of a module, class or routine (methods: of their function)."""
    if inspect.ismodule(obj):
        return [obj.__name__]
    if inspect.isclass(obj) or inspect.isroutine(obj):
        target = obj.__func__ if inspect.ismethod(obj) else obj
        module = getattr(target, "__module__", None)
        qualname = getattr(target, "__qualname__", None)
        if isinstance(module, str) and isinstance(qualname, str):
            return [f"{module}.{qualname}"]
    return []


def _loaded_object(name: str) -> Any:
    """The object a dotted name denotes among the modules already imported, or None."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        obj = sys.modules.get(".".join(parts[:cut]))
        if obj is None:
            continue
        try:
            for part in parts[cut:]:
                if inspect.ismodule(obj) and part not in vars(obj) and not hasattr(type(obj), part):
                    return None  # a lazy submodule: not loaded, so nothing resolved to it
                obj = getattr(obj, part)
        except Exception:  # not there: a name cannot resolve to it either
            return None
        return obj
    return None


class _DenyList:
    """:data:`DENIED_NAMES`, with (``resolve``) the qualified names of the denied objects.

    Only modules already imported are searched: an object that is not loaded cannot
    be what a resolved name landed on.
    """

    def __init__(self, resolve: bool) -> None:
        self.names = dict(DENIED_NAMES)
        self.objects = [_loaded_object(name) if resolve else None for name in DENIED_NAMES]
        for reason, obj in zip(DENIED_NAMES.values(), self.objects):
            for qualified in _qualified_names(obj) if obj is not None else []:
                self.names.setdefault(qualified, reason)

    def match(self, names: Sequence[str], obj: Any = None) -> str:
        """The refusal reason if a name or ``obj`` is denied, else ``''``."""
        for name in names:
            for denied, reason in self.names.items():
                if name == denied or name.startswith(denied + "."):
                    return f"{denied} is on the deny list: it {reason}"
        if obj is not None:
            for denied, denied_obj in zip(DENIED_NAMES, self.objects):
                if denied_obj is not None and denied_obj is obj:
                    return f"{denied} is on the deny list: it {DENIED_NAMES[denied]}"
        return ""
