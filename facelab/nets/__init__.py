"""Networks only, no training logic: StyleGAN2 (``stylegan2``), FIR resampling (``resample``),
the DCGAN teacher (``teacher``), the official StyleGAN2-ADA name table (``official``), the dlib
ResNet face-identity port (``identity``) and the teacher attribute labelers (``attributes``)."""
