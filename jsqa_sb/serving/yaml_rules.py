"""What a model's ``hyperparams.yaml`` may name without ``trust_remote_code``, and its limits.

The allow-list, the size limits, the errors, and why a tag is refused: the rules that
:mod:`jsqa_sb.serving.yaml_check` applies. The policy is described in
:mod:`jsqa_sb.serving.yaml_security`, which re-exports the public names.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from jsqa_sb.errors import JSQAError

#: The one list of what a model's YAML may create without ``trust_remote_code``: the
#: classes an inference YAML written by ``jsqa export`` names (``jsqa_sb.serving.hub_export``
#: copies the run's ``encoder`` and ``head``, and adds the ``Pretrainer``), each with
#: the keyword arguments it may take (``None``: any, checked as plain data or other
#: allowed objects).
ALLOWED_CLASSES: dict[str, Optional[tuple[str, ...]]] = {
    # hparams/pretrain.yaml, finetune.yaml, scratch.yaml: the JSQA encoder and MOS head
    "jsqa_sb.networks.JSQAEncoder": None,
    "jsqa_sb.networks.MOSHead": None,
    # hparams/pretrain_ecapa.yaml: SpeechBrain's ECAPA-TDNN over filterbanks
    "jsqa_sb.networks.FeatureLobeEncoder": None,
    # the same classes under their names in models exported by version 0.1
    "jsqa_sb.models.JSQAEncoder": None,
    "jsqa_sb.models.MOSHead": None,
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

_CORE = "tag:yaml.org,2002:"
#: Tags of plain data (what YAML gives numbers, strings, booleans, null, lists, mappings).
PLAIN_TAGS = frozenset(
    _CORE + name for name in ("str", "int", "float", "bool", "null", "seq", "map", "timestamp")
)

# SpeechBrain run options a Pretrained model reads from its hparams when the caller
# does not set them (speechbrain.core.RunOptions), and the audio normaliser it takes.
_RUN_OPTIONS_FALLBACK = tuple(
    "device data_parallel_backend data_parallel_count distributed_backend distributed_launch "
    "jit jit_module_keys compile compile_module_keys compile_mode compile_using_fullgraph "
    "compile_using_dynamic_shape_tracing precision eval_precision".split()
)

# HyperPyYAML's implicit tuple resolver, its reference syntax, and the references allowed.
_TUPLE_PATTERN = re.compile(r"^\(.*\)$")
_REFERENCE_PATTERN = re.compile(r"<[^>]*>")
_PLAIN_REFERENCE = re.compile(r"<([^<>.\[\]]+)((?:\[[^<>.\[\]]+\])*)>")
#: A loadable's name: its checkpoint is collected as ``<name>.ckpt`` in the save folder.
_LOADABLE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")


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

    ``source`` names the file; the one-line message gives the first three
    ``findings`` (line, tag, why) and ``--trust-remote-code``.
    """

    #: How the message ends: what the user can do.
    hint = (
        "a model may create only the objects jsqa export writes, and plain data; pass "
        "--trust-remote-code (trust_remote_code=True in Python) only if you trust its author"
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


def _run_options() -> frozenset:
    """SpeechBrain's run options, which a model's YAML may not set.

    Read from ``speechbrain.core.RunOptions`` when SpeechBrain is loaded (it is, when a
    model loads), so that options of later versions are covered too.
    """
    names = list(_RUN_OPTIONS_FALLBACK)
    core = sys.modules.get("speechbrain.core")
    with contextlib.suppress(Exception):  # not loaded, or another speechbrain version
        names += [name for name in core.RunOptions().as_dict() if name != "overridden_args"]
    return frozenset([*names, "audio_normalizer"])
