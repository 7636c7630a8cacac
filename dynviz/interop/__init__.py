"""Interoperation with the official DynamicRouting code (its checkpoints and module names)."""
