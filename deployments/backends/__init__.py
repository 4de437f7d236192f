"""Model math: load a tower's weights and run it. No ray, no HTTP."""
