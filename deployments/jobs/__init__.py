"""Offline Ray jobs: contrastive fine-tuning, batch embedding, and the synthetic shapes data."""
