"""Scoring: Parzen-window log-likelihood of any model's samples (no GAN code here)."""
