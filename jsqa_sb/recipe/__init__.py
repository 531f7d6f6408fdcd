"""The training recipe, shipped with the package: ``train.py`` and its ``hparams/`` YAMLs.

In a clone, ``recipes/JSQA/train.py`` and the top-level ``hparams/`` link here.
"""
