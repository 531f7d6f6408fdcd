"""Tests of the hub YAML check (``jsqa_sb.yaml_security``).

The YAML texts are checked, never loaded, except where a test loads one with the real
``hyperpyyaml.load_hyperpyyaml`` to show that it is the YAML a hub model would ship
(or that the trick it uses does run code in HyperPyYAML).
"""

import logging
import os

import pytest
import torch
from hyperpyyaml import load_hyperpyyaml

from jsqa_sb.models import JSQAEncoder
from jsqa_sb.yaml_security import UntrustedCodeError, check_hparams_yaml

TYPICAL_HUB_YAML = """\
# A JSQA model folder as `jsqa export` writes it.
pretrained_path: speechbrain/jsqa-demo
emb_dim: 16

encoder: !new:jsqa_sb.models.JSQAEncoder
    emb_dim: !ref <emb_dim>
    d_model: 16
    att_layers: 1

modules: !new:torch.nn.ModuleDict
    modules:
        encoder: !ref <encoder>

opt_class: !name:torch.optim.Adam
    lr: 0.001

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        encoder: !ref <encoder>
    paths:
        encoder: !ref <pretrained_path>/encoder.ckpt

input_shape: (1, 16000)
"""

TYPICAL_TAGS = [
    "!new:jsqa_sb.models.JSQAEncoder",
    "!new:torch.nn.ModuleDict",
    "!name:torch.optim.Adam",
    "!new:speechbrain.utils.parameter_transfer.Pretrainer",
]


def refused(text, **kwargs):
    """Check ``text``, expecting a refusal; return the error message."""
    with pytest.raises(UntrustedCodeError) as info:
        check_hparams_yaml(text, **kwargs)
    return str(info.value)


# ------------------------------------------------------------------------- what passes
def test_typical_hub_yaml_passes_and_lists_its_code_tags():
    assert check_hparams_yaml(TYPICAL_HUB_YAML) == TYPICAL_TAGS


def test_typical_hub_yaml_is_real_hyperpyyaml():
    hparams = load_hyperpyyaml(TYPICAL_HUB_YAML)
    assert isinstance(hparams["encoder"], JSQAEncoder)
    assert hparams["modules"]["encoder"] is hparams["encoder"]
    assert hparams["opt_class"].func is torch.optim.Adam
    assert hparams["pretrainer"].paths["encoder"] == "speechbrain/jsqa-demo/encoder.ckpt"
    assert hparams["input_shape"] == (1, 16000)


def test_file_path_source_works_like_text(tmp_path):
    path = tmp_path / "hyperparams.yaml"
    path.write_text(TYPICAL_HUB_YAML)
    assert check_hparams_yaml(path) == TYPICAL_TAGS
    assert check_hparams_yaml(str(path)) == TYPICAL_TAGS


def test_other_allowed_packages_can_be_given():
    text = "counts: !new:collections.Counter\n    a: 1\n"
    assert "'collections' is not a trusted package" in refused(text)
    allowed = ("collections",)
    assert check_hparams_yaml(text, allowed=allowed) == ["!new:collections.Counter"]


# ---------------------------------------------------------------------- what is refused
def test_os_system_is_refused_with_tag_line_and_how_to_override():
    message = refused('# hub model\nn_mels: 40\ncmd: !apply:os.system ["echo hi"]\n')
    assert "line 3: !apply:os.system" in message
    assert "trust_remote_code=True" in message
    assert "--trust-remote-code" in message


def test_message_names_the_file(tmp_path):
    path = tmp_path / "hyperparams.yaml"
    path.write_text("ok: !new:torch.nn.Identity\nbad: !apply:os.system [ls]\n")
    with pytest.raises(UntrustedCodeError) as info:
        check_hparams_yaml(path)
    assert str(path) in str(info.value)
    assert [(f.line, f.tag) for f in info.value.findings] == [(2, "!apply:os.system")]
    with pytest.raises(UntrustedCodeError, match="^someone/model hyperparams.yaml: "):
        check_hparams_yaml(path, name="someone/model hyperparams.yaml")


def test_a_trusted_prefix_cannot_reach_an_imported_module():
    # jsqa_sb.models imports os: a prefix check alone would let this through
    message = refused("x: !new:jsqa_sb.models.os.system\n")
    assert "!new:jsqa_sb.models.os.system" in message
    assert "module 'os'" in message


@pytest.mark.parametrize(
    "text, shown",
    [
        ("x: !<!new:os.system> [ls]\n", "!new:os.system"),  # verbatim tag
        ("%TAG !e! !new:os.\n---\nx: !e!system [ls]\n", "!new:os.system"),  # %TAG shorthand
        ("? !apply:os.system [ls]\n: 1\n", "!apply:os.system"),  # mapping key
        ("x: !!python/object/apply:os.system [ls]\n", "!!python/object/apply:os.system"),
        ("x: !!python/name:os.system\n", "!!python/name:os.system"),
        ("x: !foo bar\n", "!foo"),  # unknown tag
    ],
)
def test_tags_cannot_be_hidden(text, shown):
    assert shown in refused(text)


def test_include_is_refused_even_for_a_harmless_file(tmp_path):
    (tmp_path / "other.yaml").write_text("a: 1\n")
    path = tmp_path / "hyperparams.yaml"
    path.write_text("extra: !include:other.yaml\n")
    assert "line 1: !include:other.yaml" in refused(path)


@pytest.mark.parametrize(
    "target, denied",
    [
        ("torch.hub.load", "torch.hub"),
        ("torch.load", "torch.load"),
        ("jsqa_sb.models.torch.load", "torch.serialization"),  # alias through an import
        ("torch.jit.load", "torch.jit.load"),
        ("torch.ops.load_library", "torch.ops.load_library"),
        ("torch.compile", "torch.compile"),
        ("speechbrain.utils.fetching.fetch", "speechbrain.utils.fetching"),
    ],
)
def test_deny_list_inside_trusted_packages(target, denied):
    message = refused(f"x: !apply:{target} [model]\n")
    assert f"!apply:{target}" in message
    assert f"{denied} is on the deny list" in message


def test_name_that_only_starts_like_torch_is_refused():
    message = refused("x: !new:torchevil.Thing\n")
    assert "line 1: !new:torchevil.Thing ('torchevil' is not a trusted package)" in message


def test_private_and_dunder_names_are_refused():
    assert "'__init__'" in refused("x: !apply:torch.nn.Module.__init__ [a]\n")
    text = "m: !new:torch.nn.Identity\nx: !ref <m.__class__>\n"
    assert "line 2: !ref <m.__class__>" in refused(text)


def test_attribute_reference_is_checked_like_a_target():
    text = "m: !module:torch\nalias: !ref <m>\nx: !ref <alias.hub>\n"
    assert "line 3: !ref <alias.hub> (torch.hub is on the deny list" in refused(text)


def test_unresolvable_name_in_a_trusted_package_is_refused():
    assert "cannot be resolved" in refused("x: !new:jsqa_sb.models.NoSuchModel\n")


def test_tuple_text_is_checked_because_hyperpyyaml_parses_it_again():
    text = "x: (1, !!python/name:os.getcwd )\n"
    assert load_hyperpyyaml(text)["x"][1] is os.getcwd  # the string really becomes code
    assert "!!python/name:os.getcwd" in refused(text)
    assert "!new:os.getcwd" in refused("x: !tuple (1, !new:os.getcwd [])\n")


def test_interpolated_reference_is_checked_as_the_text_it_builds():
    text = "s: os\nx: !ref (1, !!python/name:<s>.getcwd )\n"
    assert "line 2: !!python/name:os.getcwd" in refused(text)
    assert check_hparams_yaml("s: results\nx: !ref (<s>, 2)\ny: !ref <s>/save\n") == []


def test_applyref_is_refused_because_its_result_is_parsed_again():
    assert "!applyref:torch.nn.Identity" in refused("x: !applyref:torch.nn.Identity\n")


# ------------------------------------------------------------------------ the override
def test_trust_remote_code_returns_tags_and_warns(caplog):
    text = "encoder: !new:torch.nn.Identity\ncmd: !apply:os.system [ls]\n"
    with caplog.at_level(logging.WARNING, logger="jsqa_sb.yaml_security"):
        tags = check_hparams_yaml(text, trust_remote_code=True)
    assert tags == ["!new:torch.nn.Identity", "!apply:os.system"]
    assert "line 2: !apply:os.system" in caplog.text
