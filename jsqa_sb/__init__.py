"""JSQA for SpeechBrain: speech quality assessment with JND contrastive pretraining.

Fan & Williamson, "JSQA: Speech Quality Assessment with Perceptually-Inspired
Contrastive Pretraining Based on JND Audio Pairs", WASPAA 2025 (arXiv 2507.11636).
"""

__version__ = "0.1.0"

__all__ = ["JSQA"]


def __getattr__(name):
    # Lazy: ``import jsqa_sb`` stays light (the CLI and the data loaders import it).
    if name == "JSQA":
        from jsqa_sb.inference import JSQA

        return JSQA
    raise AttributeError(f"module 'jsqa_sb' has no attribute {name!r}")
