"""The model side of paser: loading models, pruning, (later) recovery training and evaluation."""
