"""Networks only, no training logic: StyleGAN2 (``stylegan2``), FIR resampling (``resample``),
the DCGAN teacher (``teacher``) and the official StyleGAN2-ADA name table (``official``)."""
