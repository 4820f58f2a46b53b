"""The paper's MNIST GAN: models, Algorithm 1, sampling, checkpoints and export."""
