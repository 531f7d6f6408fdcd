"""JSQA for SpeechBrain: speech quality assessment with JND contrastive pretraining.

Fan & Williamson, "JSQA: Speech Quality Assessment with Perceptually-Inspired
Contrastive Pretraining Based on JND Audio Pairs", WASPAA 2025 (arXiv 2507.11636).

The sub-packages follow the pipeline: :mod:`jsqa_sb.data`, :mod:`jsqa_sb.networks`,
:mod:`jsqa_sb.evaluation`, :mod:`jsqa_sb.training`, :mod:`jsqa_sb.serving`, the
:mod:`jsqa_sb.demo` and the :mod:`jsqa_sb.cli`. The flat module names of version 0.1
(``jsqa_sb.models``, ``jsqa_sb.inference``, ...) still import, as the same modules.
"""

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

__all__ = ["JSQA"]

_JOBS = {
    "data": "prepare_jnd prepare_nisqa prepare_utils pairs jnd_mixing jnd_data jnd_batch "
    "mos_data minicorpus minicorpus_signals",
    "networks": "frontend encoder heads losses",
    "evaluation": "jnd_metrics mos_metrics reports compare",
    "training": "brains brain_utils checkpoints",
    "serving": "inference model_loading windows batch_scoring scoring_inputs scoring_output "
    "timeline collection_report hub_export model_card hub_upload yaml_security yaml_rules "
    "yaml_check",
}
#: Old flat module name -> its module now (the same module object is imported).
MOVED = {
    **{f"jsqa_sb.{m}": f"jsqa_sb.{job}.{m}" for job, ms in _JOBS.items() for m in ms.split()},
    "jsqa_sb.models": "jsqa_sb.networks",
    "jsqa_sb.demo_processes": "jsqa_sb.demo.processes",
    "jsqa_sb.demo_summary": "jsqa_sb.demo.summary",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module name as the module that now holds its code."""

    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec):
        module = importlib.import_module(MOVED[spec.name])
        spec.loader_state = module.__spec__
        return module

    def exec_module(self, module):
        module.__spec__ = module.__spec__.loader_state  # the import set the old name's spec


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())


def __getattr__(name):
    # Lazy: ``import jsqa_sb`` stays light (the CLI and the data loaders import it).
    if name == "JSQA":
        from jsqa_sb.serving.inference import JSQA

        return JSQA
    raise AttributeError(f"module 'jsqa_sb' has no attribute {name!r}")
