"""Starting work: the kinds of run, their worker processes, the queue, the warm worker. The top of the engine: it may import training, tuning and adaptation."""
