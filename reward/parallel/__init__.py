"""More than one process: torchrun data parallel (one gradient sum per optimizer step) and FSDP2
sharding, behind the few functions the training loop calls.
"""
