"""Evaluation: JND and MOS metrics, test reports and model comparisons."""
