"""What a model needs and where it fits: the memory estimate, the GPUs, the load plan."""
