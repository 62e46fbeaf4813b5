"""Networks only, no training logic: StyleGAN2 (``stylegan2``), FIR resampling (``resample``),
the DCGAN teacher (``teacher``), the official StyleGAN2-ADA name table (``official``), the dlib
ResNet face-identity port (``identity``), the teacher attribute labelers (``attributes``), the
attribute regressor H (``regressor``) and the projected discriminator (``projected``).

They import nothing of facelab above its base layer (``utils``, ``imaging``, ``geometry``): the
loaders of their shipped weights live in :mod:`facelab.hub` (``load_generator``, ``load_identity``,
``load_regressor``). See ``docs/architecture.md``."""
