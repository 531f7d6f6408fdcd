"""JSQA for SpeechBrain: speech quality assessment with JND contrastive pretraining.

Fan & Williamson, "JSQA: Speech Quality Assessment with Perceptually-Inspired
Contrastive Pretraining Based on JND Audio Pairs", WASPAA 2025 (arXiv 2507.11636).
"""

__version__ = "0.1.0"
