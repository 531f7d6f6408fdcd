"""Training: the contrastive pretraining and MOS fine-tuning Brains and the checkpointer."""
