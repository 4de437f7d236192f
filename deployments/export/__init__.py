"""Offline tools that turn servable checkpoints into other runtimes' formats (torch needed)."""
