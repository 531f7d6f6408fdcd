"""Tests of the model YAML check (``jsqa_sb.serving.yaml_security``): an exact allow-list.

The YAML texts are checked, never loaded, except where a test loads one with the real
``hyperpyyaml.load_hyperpyyaml`` to show that it is what a model would ship, or that
the trick it uses really runs code in HyperPyYAML (so that refusing it means
something). Loading refused models through ``jsqa score`` is in
``test_hostile_models.py``.
"""

import json
import logging
import os
import time

import pytest
from hyperpyyaml import load_hyperpyyaml

from jsqa_sb.networks import JSQAEncoder, MOSHead
from jsqa_sb.serving.yaml_security import (
    ALLOWED_CLASSES,
    MAX_NODES,
    MAX_YAML_BYTES,
    UnsafeModelError,
    UntrustedCodeError,
    check_hparams_yaml,
)

# What `jsqa export` writes (tests/test_hub_export.py checks real exports).
EXPORTED_STYLE_YAML = """\
# JSQA inference model, exported by `jsqa export`
sample_rate: 16000
outputs: ["mos"]  # the scores this model reports
window_seconds: 10.0
window_batch: 8
input_shape: (1, 16000)

encoder: !new:jsqa_sb.networks.JSQAEncoder
    sample_rate: 16000
    cnn_channels: 4
    d_model: 16
    att_layers: 1
    att_heads: 2
    emb_dim: 16
head: !new:jsqa_sb.networks.MOSHead
    input_size: 16
    hidden_size: 8
    outputs: &dims [mos, noi]
dims: *dims

modules:
    encoder: !ref <encoder>
    head: !ref <head>

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        encoder: !ref <encoder>
        head: !ref <head>
"""

EXPORTED_TAGS = [
    "!new:jsqa_sb.networks.JSQAEncoder",
    "!new:jsqa_sb.networks.MOSHead",
    "!new:speechbrain.utils.parameter_transfer.Pretrainer",
]


def refused(text, error=UntrustedCodeError, **kwargs):
    """Check ``text``, expecting a refusal; return the error message."""
    with pytest.raises(error) as info:
        check_hparams_yaml(text, **kwargs)
    message = str(info.value)
    assert "\n" not in message  # one line
    return message


# ------------------------------------------------------------------------- what passes
def test_exported_style_yaml_passes_and_lists_its_objects():
    assert check_hparams_yaml(EXPORTED_STYLE_YAML) == EXPORTED_TAGS


def test_exported_style_yaml_is_real_hyperpyyaml():
    hparams = load_hyperpyyaml(EXPORTED_STYLE_YAML)
    assert isinstance(hparams["encoder"], JSQAEncoder)
    assert isinstance(hparams["head"], MOSHead)
    assert hparams["modules"]["encoder"] is hparams["encoder"]
    assert hparams["pretrainer"].loadables["head"] is hparams["head"]
    assert hparams["input_shape"] == (1, 16000)  # a plain-data tuple stays allowed
    assert hparams["dims"] == ["mos", "noi"]  # and so do anchors and aliases


def test_file_path_source_works_like_text(tmp_path):
    path = tmp_path / "hyperparams.yaml"
    path.write_text(EXPORTED_STYLE_YAML)
    assert check_hparams_yaml(path) == EXPORTED_TAGS
    assert check_hparams_yaml(str(path)) == EXPORTED_TAGS


def test_every_allowed_class_is_real_and_named_once():
    from pydoc import locate

    for name in ALLOWED_CLASSES:
        assert isinstance(locate(name), type), name
    assert len(set(ALLOWED_CLASSES)) == len(ALLOWED_CLASSES)


def test_the_ecapa_encoder_parts_are_allowed():
    text = """\
encoder: !new:jsqa_sb.networks.FeatureLobeEncoder
    features: !new:speechbrain.lobes.features.Fbank
        sample_rate: 16000
        n_mels: 80
    normalize: !new:speechbrain.processing.features.InputNormalization
        norm_type: sentence
    model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
        input_size: 80
        channels: [16, 16, 16, 16, 48]
        lin_neurons: 8
    embedding_dim: 8
"""
    assert len(check_hparams_yaml(text)) == 4


# ---------------------------------------------------------------------- what is refused
def test_apply_is_refused_with_tag_line_and_how_to_override():
    message = refused('# a model\nn_mels: 40\ncmd: !apply:os.system ["echo hi"]\n')
    assert "line 3: !apply:os.system (calls a function)" in message
    assert "--trust-remote-code" in message and "trust_remote_code=True" in message
    assert "only the objects jsqa export writes" in message


def test_message_names_the_file(tmp_path):
    path = tmp_path / "hyperparams.yaml"
    path.write_text("ok: !new:jsqa_sb.networks.MOSHead\nbad: !apply:os.system [ls]\n")
    with pytest.raises(UntrustedCodeError) as info:
        check_hparams_yaml(path)
    assert str(info.value).startswith(f"{path}: refusing to load it: ")
    assert [(f.line, f.tag) for f in info.value.findings] == [(2, "!apply:os.system")]
    with pytest.raises(UntrustedCodeError, match="^someone/model hyperparams.yaml: "):
        check_hparams_yaml(path, name="someone/model hyperparams.yaml")


@pytest.mark.parametrize(
    "text, shown",
    [
        # the three examples: code runners and file writers of trusted packages
        (
            "x: !apply:torch.fx.graph_module.reduce_graph_module [{code: ''}, 'import os']\n",
            "!apply:torch.fx.graph_module.reduce_graph_module",
        ),
        (
            "x: !apply:speechbrain.dataio.dataio.write_txt_file [data, /tmp/x.pth]\n",
            "!apply:speechbrain.dataio.dataio.write_txt_file",
        ),
        ("x: !apply:speechbrain.dataio.dataio.load_pkl [x.pkl]\n", "!apply:speechbrain.dataio"),
        # any other class, whichever package
        ("x: !new:torch.nn.Linear [2, 3]\n", "!new:torch.nn.Linear"),
        ("x: !new:collections.OrderedDict\n", "!new:collections.OrderedDict"),
        ("x: !new:torch.nn.ModuleDict\n", "!new:torch.nn.ModuleDict"),
        ("x: !new:jsqa_sb.networks.os.system [ls]\n", "!new:jsqa_sb.networks.os.system"),
        ("x: !new:jsqa_sb.networks.ProjectionHead\n", "!new:jsqa_sb.networks.ProjectionHead"),
        # the other tags of HyperPyYAML that run or hand over code
        ("x: !name:torch.optim.Adam\n", "!name:torch.optim.Adam"),
        ("x: !name:builtins.exec\n", "!name:builtins.exec"),
        ("x: !module:torch\n", "!module:torch"),
        ("x: !applyref:torch.nn.Identity\n", "!applyref:torch.nn.Identity"),
        ("x: !include:other.yaml\n", "!include:other.yaml"),
        ("a: 1\nx: !copy <a>\n", "!copy"),
        ("x: !tuple [1, 2]\n", "!tuple"),  # a tuple is text, not a list
        ("x: !PLACEHOLDER\n", "!PLACEHOLDER"),
        # PyYAML's python tags, and tags hidden from a simple text search
        ("x: !!python/object/apply:os.system [ls]\n", "!!python/object/apply:os.system"),
        ("x: !!python/name:os.system\n", "!!python/name:os.system"),
        ("x: !<!new:os.system> [ls]\n", "!new:os.system"),  # verbatim tag
        ("%TAG !e! !new:os.\n---\nx: !e!system [ls]\n", "!new:os.system"),  # %TAG shorthand
        ("? !apply:os.system [ls]\n: 1\n", "!apply:os.system"),  # mapping key
        ("x: !foo bar\n", "!foo"),  # unknown tag
        ("x: !!set {a, b}\n", "!!set"),
    ],
)
def test_anything_but_the_allowed_objects_is_refused(text, shown):
    assert shown in refused(text)


def test_a_name_that_only_starts_like_an_allowed_one_is_refused():
    assert "!new:jsqa_sb.networks.JSQAEncoderX" in refused(
        "x: !new:jsqa_sb.networks.JSQAEncoderX\n"
    )
    assert "!new:jsqa_sb.networks.JSQAEncoder.mro" in refused(
        "x: !new:jsqa_sb.networks.JSQAEncoder.mro\n"
    )


def test_arguments_of_allowed_classes_are_checked_like_the_rest():
    text = "head: !new:jsqa_sb.networks.MOSHead\n    outputs: !apply:os.getcwd []\n"
    assert "line 2: !apply:os.getcwd" in refused(text)


def test_the_pretrainer_takes_loadables_only():
    base = (
        "enc: !new:jsqa_sb.networks.JSQAEncoder\n"
        "p: !new:speechbrain.utils.parameter_transfer.Pretrainer\n"
    )
    message = refused(base + "    collect_in: /home\n    loadables:\n        enc: !ref <enc>\n")
    assert "line 3: !new:speechbrain.utils.parameter_transfer.Pretrainer collect_in" in message
    assert "loadables only" in message
    assert "paths" in refused(base + "    paths:\n        enc: other/model/enc.ckpt\n")
    assert "keyword arguments only" in refused(base.replace("Pretrainer", "Pretrainer [/tmp]"))


@pytest.mark.parametrize("name", ["../../escape", "a/b", "..", "x\\\\y", ".hidden"])
def test_loadable_names_must_be_plain_file_names(name):
    text = (
        "enc: !new:jsqa_sb.networks.JSQAEncoder\n"
        "p: !new:speechbrain.utils.parameter_transfer.Pretrainer\n"
        f"    loadables:\n        {json.dumps(name)}: !ref <enc>\n"
    )
    assert f"line 4: loadable {name!r}" in refused(text)


@pytest.mark.parametrize(
    "text, reason",
    [
        ("m: !new:jsqa_sb.networks.MOSHead\nx: !ref <m.forward>\n", "reads an attribute"),
        ("m: !new:jsqa_sb.networks.MOSHead\nx: !ref <m.__class__>\n", "reads an attribute"),
        ("a: 9\nx: !ref <a> ** <a> ** <a>\n", "no interpolation or arithmetic"),
        ("s: results\ny: !ref <s>/save\n", "no interpolation or arithmetic"),
        ("a: '<b> ** <b>'\nb: 9\nx: !ref <a>\n", "text that HyperPyYAML would interpolate"),
        ("x: !ref <nowhere>\n", "refers to no entry"),
        ("a: !ref <b>\nb: !ref <a>\n", "refers to no entry of this YAML (or to itself)"),
    ],
)
def test_references_are_plain_references_only(text, reason):
    assert reason in refused(text)


def test_a_plain_reference_into_a_mapping_is_allowed():
    text = "dims: {a: [mos]}\nh: !new:jsqa_sb.networks.MOSHead\n    outputs: !ref <dims[a]>\n"
    assert check_hparams_yaml(text) == ["!new:jsqa_sb.networks.MOSHead"]


def test_tuple_text_is_checked_because_hyperpyyaml_parses_it_again():
    text = "x: (1, !!python/name:os.getcwd )\n"
    assert load_hyperpyyaml(text)["x"][1] is os.getcwd  # the string really becomes code
    assert "line 1: !!python/name:os.getcwd" in refused(text)
    quoted = "x: '(1, !!python/object/apply:os.getcwd [])'\n"  # quoting does not help
    assert "!!python/object/apply:os.getcwd" in refused(quoted)
    assert "!!python/name:os.getcwd" in refused("? (1, !!python/name:os.getcwd )\n: 1\n")
    assert "!new:os.getcwd" in refused("x: !tuple (1, !new:os.getcwd [])\n")
    assert check_hparams_yaml("x: (1, 2.5, a)\ny: !tuple (3, 4)\n") == []


def test_tuple_text_is_checked_after_hyperpyyaml_changed_ruamel():
    # Loading any YAML with HyperPyYAML makes ruamel.yaml itself resolve "(a, b)" as a
    # !tuple tag, in the whole process: the check must see the same text either way.
    load_hyperpyyaml("x: (1, 2)\n")
    assert check_hparams_yaml("x: (1, 16000)\n") == []
    assert "!!python/name:os.getcwd" in refused("x: (1, !!python/name:os.getcwd )\n")


@pytest.mark.parametrize("option", ["compile", "jit", "device", "distributed_launch"])
def test_speechbrain_run_options_are_refused_as_top_level_keys(option):
    assert f"line 1: {option} (a SpeechBrain run option" in refused(f"{option}: True\n")


# --------------------------------------------------------------------------- the limits
def billion_laughs(levels=9, width=10):
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def test_billion_laughs_is_refused_at_once_even_when_trusted():
    text = billion_laughs()  # 10^10 nodes once expanded; HyperPyYAML would hang on it
    for trust in (False, True):
        start = time.perf_counter()
        message = refused(text, error=UnsafeModelError, trust_remote_code=trust)
        assert time.perf_counter() - start < 0.5
    assert f"more than {MAX_NODES:,} nodes" in message and "*a" in message
    assert "--trust-remote-code does not lift this limit" in message


def test_a_small_alias_expansion_is_allowed():
    text = billion_laughs(levels=2, width=10)  # 1,000 leaves
    assert check_hparams_yaml(text) == []


def test_recursive_alias_and_deep_nesting_are_refused():
    assert "refers to its own parent" in refused("x: &a [*a]\n", error=UnsafeModelError)
    deep = "x: " + "[" * 200 + "]" * 200 + "\n"
    assert "nested deeper" in refused(deep, error=UnsafeModelError)


def test_a_file_larger_than_the_limit_is_refused_unread(tmp_path):
    path = tmp_path / "hyperparams.yaml"
    path.write_text("# padding\n" * (MAX_YAML_BYTES // 10 + 1) + "x: 1\n")
    start = time.perf_counter()
    message = refused(path, error=UnsafeModelError, trust_remote_code=True)
    assert time.perf_counter() - start < 0.5
    assert f"larger than {MAX_YAML_BYTES // 1024} kB" in message


def test_a_dense_file_under_the_size_limit_is_refused_quickly():
    text = "x: [" + ", ".join(["1"] * (MAX_YAML_BYTES // 4)) + "]\n"  # 16,000 nodes
    start = time.perf_counter()
    assert "nodes" in refused(text, error=UnsafeModelError)
    assert time.perf_counter() - start < 3.0


def test_invalid_yaml_and_several_documents_are_refused():
    assert "not valid YAML" in refused("x: [1, 2\n", error=UnsafeModelError)
    assert "a second YAML document" in refused("a: 1\n---\nb: 2\n", error=UnsafeModelError)


# ------------------------------------------------------------------------ the override
def test_trust_remote_code_returns_tags_and_warns(caplog):
    text = "encoder: !new:torch.nn.Identity\ncmd: !apply:os.system [ls]\n"
    with caplog.at_level(logging.WARNING, logger="jsqa_sb.serving.yaml_security"):
        tags = check_hparams_yaml(text, trust_remote_code=True)
    assert tags == ["!new:torch.nn.Identity", "!apply:os.system"]
    assert "line 2: !apply:os.system" in caplog.text


def test_check_hparams_size_refuses_before_anything_slow_parses_the_file(tmp_path):
    from jsqa_sb.serving.yaml_security import check_hparams_size

    path = tmp_path / "hyperparams.yaml"
    path.write_text("x: [" + ", ".join(["1"] * 15_000) + "]\n")
    start = time.perf_counter()
    with pytest.raises(UnsafeModelError, match="more than 10,000 nodes"):
        check_hparams_size(path)
    assert time.perf_counter() - start < 1.0
    path.write_text(billion_laughs())
    with pytest.raises(UnsafeModelError, match=r"\*a"):
        check_hparams_size(path)
    path.write_text("x: [1, 2\n")  # not YAML: left to the loader, which says so
    check_hparams_size(path)
    check_hparams_size(tmp_path / "missing.yaml")
    path.write_text(EXPORTED_STYLE_YAML)
    check_hparams_size(path)
