"""Plumbing that every stage shares and that knows nothing of the method: progress bars,
worker processes, torchrun helpers, the files shipped beside the modules, and what a run ran on."""
