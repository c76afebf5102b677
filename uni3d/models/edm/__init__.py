"""EDM (Karras et al. 2022) denoisers: the preconditioning wrapper, the small UNet, NVlabs' SongUNet and
DhariwalUNet, and the restricted reader of their network pickles."""
