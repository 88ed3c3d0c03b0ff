"""g-SAE pipeline library: configs, LM access, text, SAE variants, training and evaluation."""
