"""The check of a model's ``hyperparams.yaml``: parsed, never loaded, in bounded time.

See :mod:`jsqa_sb.serving.yaml_security` for what is allowed and why; that module re-exports
these names.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterator
from typing import Any, Callable, Optional

import ruamel.yaml
import ruamel.yaml.nodes
import yaml

from jsqa_sb.common import PathLike
from jsqa_sb.serving.yaml_rules import (
    _CORE,
    _LOADABLE_NAME,
    _PLAIN_REFERENCE,
    _REFERENCE_PATTERN,
    _TUPLE_PATTERN,
    ALLOWED_CLASSES,
    MAX_DEPTH,
    MAX_NODES,
    MAX_YAML_BYTES,
    PLAIN_TAGS,
    Finding,
    UnsafeModelError,
    UntrustedCodeError,
    _refusal_reason,
    _run_options,
)

# The messages name the module users know (and tests listen to).
logger = logging.getLogger("jsqa_sb.serving.yaml_security")

# Node classes of ruamel.yaml (HyperPyYAML's parser) and of PyYAML (the fast count).
_MAPPING = (ruamel.yaml.nodes.MappingNode, yaml.MappingNode)
_SEQUENCE = (ruamel.yaml.nodes.SequenceNode, yaml.SequenceNode)
_SCALAR = (ruamel.yaml.nodes.ScalarNode, yaml.ScalarNode)
#: PyYAML's C composer: counts a text in milliseconds, before ruamel.yaml's pure-Python
#: composer (a second per 10,000 nodes) parses it.
_FAST_COMPOSE = functools.partial(
    yaml.compose_all, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)
)


def _tag_of(node: Any) -> str:
    """The resolved tag of a ruamel.yaml or PyYAML node (a ``Tag`` object or a str)."""
    tag = node.tag
    if tag is not None and not isinstance(tag, str):
        tag = getattr(tag, "value", None)
    return tag or ""


def _display(tag: str) -> str:
    """Write core tags the short way (``!!python/name:os.system``)."""
    return "!!" + tag[len(_CORE) :] if tag.startswith(_CORE) else tag


def _line(node: Any) -> int:
    return node.start_mark.line + 1


def _children(node: Any) -> list:
    if isinstance(node, _MAPPING):
        return [part for pair in node.value for part in pair]
    return list(node.value) if isinstance(node, _SEQUENCE) else []


def _nodes(root: Any) -> Iterator[Any]:
    """Every node under ``root`` once (aliases share nodes), in document order."""
    stack, seen = [root], set()
    while stack:
        node = stack.pop()
        if id(node) not in seen:
            seen.add(id(node))
            yield node
            stack += reversed(_children(node))


def _mapping_get(node: Any, key: str) -> Any:
    """The value node of ``key`` in a mapping node, or None."""
    if isinstance(node, _MAPPING):
        for key_node, value_node in node.value:
            if isinstance(key_node, _SCALAR) and key_node.value == key:
                return value_node
    return None


def _expansion_problem(root: Any, text: str) -> Optional[Finding]:
    """Why the node graph is too large once aliases are expanded, or None.

    Counted once per node (memoised), so in time linear in the text, however far the
    aliases expand (HyperPyYAML's reference walk visits a node once per alias).
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
                line = _line(node)
                written = text.splitlines()[line - 1 : line]
                alias = re.search(r"\*[^\s,\]\}]+", written[0]) if written else None
                reason = (
                    f"nested deeper than {MAX_DEPTH} levels"
                    if depth[key] > MAX_DEPTH
                    else f"with its aliases expanded it has more than {MAX_NODES:,} nodes"
                )
                return Finding(line, alias.group(0) if alias else "the document", reason)
            continue
        if key in size:
            continue
        if key in depth:  # entered and not finished: an alias to one of its own parents
            return Finding(_line(node), "the document", "an alias refers to its own parent")
        depth[key] = -1
        stack.append((node, True))
        stack += [(child, False) for child in _children(node) if id(child) not in size]
    return None


def read_hparams_text(path: PathLike, name: Optional[str] = None) -> str:
    """The UTF-8 text of a ``hyperparams.yaml``; UnsafeModelError (unread) if too large.

    ``name``: how the message names the file (default: the path).
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
    source: PathLike, *, trust_remote_code: bool = False, name: Optional[str] = None
) -> list[str]:
    r"""Check that a HyperPyYAML text creates only what ``jsqa export`` writes.

    ``source`` is a path, or the YAML text itself when it is a ``str`` with a newline;
    ``name`` says how messages name it. Returns the tags of objects and code found
    (``!new:...`` and every refused tag), each once, in document order.

    Raises :class:`UntrustedCodeError` if the YAML creates or runs anything else,
    unless ``trust_remote_code`` (then a warning lists it), and
    :class:`UnsafeModelError`, whatever the trust, if it is too large, expands too far,
    nests too deeply or is not valid YAML.

    Example
    -------
    >>> check_hparams_yaml("encoder: !new:jsqa_sb.networks.JSQAEncoder\n    emb_dim: 8\n")
    ['!new:jsqa_sb.networks.JSQAEncoder']
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
        """Check the one document of the text, as ruamel.yaml (HyperPyYAML) composes it."""
        self.compose(_FAST_COMPOSE, text)
        documents = self.compose(ruamel.yaml.YAML().compose_all, text)  # counted again
        if len(documents) > 1:
            raise self.unsafe(
                _line(documents[1]), "a second YAML document; HyperPyYAML reads one", "---"
            )
        if documents:
            self.root = documents[0]
            self.walk(self.root)

    def compose(self, compose_all: Callable, text: str, parse_errors: bool = True) -> list:
        """The documents of ``text``; UnsafeModelError if one is over the limits.

        ``parse_errors``: refuse a text ``compose_all`` cannot parse (else: no documents).
        """
        try:
            documents = [document for document in compose_all(text) if document is not None]
        except RecursionError:
            raise self.unsafe(0, f"nested deeper than {MAX_DEPTH} levels") from None
        except (yaml.YAMLError, ruamel.yaml.YAMLError) as err:
            if not parse_errors:
                return []
            raise self.not_yaml(err) from err
        for document in documents:
            problem = _expansion_problem(document, text)
            if problem is not None:
                raise UnsafeModelError(self.label, [problem])
        return documents

    def unsafe(self, line: int, reason: str, tag: str = "the document") -> UnsafeModelError:
        return UnsafeModelError(self.label, [Finding(line, tag, reason)])

    def not_yaml(self, err: Exception) -> UnsafeModelError:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or " ".join(str(err).split())
        return self.unsafe(mark.line + 1 if mark else 0, f"not valid YAML: {problem}")

    def walk(self, root: Any) -> None:
        """Check every node under ``root`` once (aliases share nodes)."""
        run_options = _run_options()
        for key, _ in root.value if isinstance(root, _MAPPING) else []:
            if isinstance(key, _SCALAR) and key.value in run_options:
                self.refuse(
                    _line(key),
                    str(key.value),
                    "a SpeechBrain run option: how this machine runs the model is the "
                    "user's choice, not the model's",
                )
        for node in _nodes(root):
            self.check_node(node)
            for key, _ in node.value if isinstance(node, _MAPPING) else []:
                # A mapping key must be a plain scalar (a name or a number).
                if not isinstance(key, _SCALAR) and _tag_of(key) in PLAIN_TAGS:
                    self.refuse(
                        _line(key), "(a list or mapping as a key)", "keys must be plain names"
                    )

    def check_node(self, node: Any) -> None:
        """Check one node's tag and, for scalars, text that is parsed again."""
        tag, line = _tag_of(node), _line(node)
        if tag.startswith("!new:"):
            self.tags.append(tag)
            self.check_new(node, tag, line)
        elif tag == "!ref":
            self.check_reference(node, line)
        elif tag in PLAIN_TAGS or tag == "!tuple" and isinstance(node, _SCALAR):
            # HyperPyYAML's _make_tuple: "(a, b)" -> yaml.load("[a, b]", yaml.Loader).
            # Once HyperPyYAML has loaded a file, ruamel.yaml too resolves "(a, b)" as !tuple.
            value = node.value if isinstance(node, _SCALAR) else None
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
        if isinstance(node, _SEQUENCE + _SCALAR) and node.value:
            self.refuse(line, tag, f"takes keyword arguments only ({', '.join(keywords)})")
            return
        for key, value in node.value if isinstance(node, _MAPPING) else []:
            if not isinstance(key, _SCALAR) or key.value not in keywords:
                shown = key.value if isinstance(key, _SCALAR) else "(a list or mapping)"
                self.refuse(_line(key), f"{tag} {shown}", f"takes {', '.join(keywords)} only")
            elif key.value == "loadables":
                self.check_loadables(value, tag)

    def check_loadables(self, node: Any, tag: str) -> None:
        """The Pretrainer's loadables: a mapping whose names are plain file names."""
        if not isinstance(node, _MAPPING) or _tag_of(node) != _CORE + "map":
            self.refuse(_line(node), f"{tag} loadables", "must be a mapping of names")
            return
        for key, _ in node.value:
            name = key.value if isinstance(key, _SCALAR) else None
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
        value = node.value if isinstance(node, _SCALAR) and isinstance(node.value, str) else None
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
            isinstance(target, _SCALAR)
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
            for tag in (_tag_of(node) for node in _nodes(document)):
                if tag not in PLAIN_TAGS:
                    self.tags.append(_display(tag))
                    self.refuse(
                        line,
                        _display(tag),
                        f"inside {what!r}, which HyperPyYAML parses again as YAML: "
                        + _refusal_reason(tag),
                    )

    def lookup(self, path: str) -> Any:
        """The node at ``a[b][c]`` as HyperPyYAML's ``deref`` finds it, or None."""
        node = self.root
        for part in path.split("["):
            node = _mapping_get(node, part.strip("]"))  # None stays None
        return node

    def follow(self, node: Any) -> Any:
        """The node a ``!ref`` chain ends on (None: missing, or a cycle)."""
        for _ in range(MAX_DEPTH):
            if node is None or _tag_of(node) != "!ref" or not isinstance(node, _SCALAR):
                return node
            if not isinstance(node.value, str) or not _PLAIN_REFERENCE.fullmatch(node.value):
                return node  # refused where it stands
            node = self.lookup(node.value[1:-1])
        return None


def check_hparams_size(path: PathLike, name: Optional[str] = None) -> None:
    """Refuse a ``hyperparams.yaml`` too large to check, before anything parses it slowly.

    Too large: over :data:`MAX_YAML_BYTES` (refused unread), :data:`MAX_NODES` nodes
    with its aliases expanded, or :data:`MAX_DEPTH` levels (counted with PyYAML's C
    composer, in milliseconds). :class:`UnsafeModelError` whatever the trust; a file that
    cannot be read or parsed passes: reading and checking it say why.
    """
    label = name or str(path)
    try:
        text = read_hparams_text(path, label)
    except (OSError, UnicodeDecodeError):
        return
    _Checker(label).compose(_FAST_COMPOSE, text, parse_errors=False)
