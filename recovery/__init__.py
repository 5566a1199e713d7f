"""The model side of paser: loading models, pruning, recovery training (LoRA SFT, DPO, distillation) and evaluation."""
