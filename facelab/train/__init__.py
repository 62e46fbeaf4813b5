"""How the shipped weights were made. ``python -m facelab.train.gan`` trains the StyleGAN2 world."""
