"""The check of a model's ``hyperparams.yaml``: parsed, never loaded, in bounded time.

See :mod:`jsqa_sb.serving.yaml_security` for what is allowed and why; that module re-exports
these names.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import ruamel.yaml
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
    MAX_YAML_BYTES,
    PLAIN_TAGS,
    Finding,
    UnsafeModelError,
    UntrustedCodeError,
    _children,
    _display,
    _expansion_problem,
    _is_mapping,
    _is_scalar,
    _is_sequence,
    _line,
    _mapping_get,
    _refusal_reason,
    _run_options,
    _tag_of,
)

# The messages name the module users know (and tests listen to).
logger = logging.getLogger("jsqa_sb.serving.yaml_security")


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
    source: PathLike,
    *,
    trust_remote_code: bool = False,
    name: Optional[str] = None,
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
        """Check the one document of the text, as ruamel.yaml (HyperPyYAML) composes it.

        Counted first on PyYAML's C composer's graph: ruamel.yaml's pure-Python composer
        takes a second per 10,000 nodes.
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
    _Checker(label).count(text, parse_errors=False)
