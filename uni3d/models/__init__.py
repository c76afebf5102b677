"""The networks the tasks put together: the Stable Diffusion prior (diffusers), its LoRA fake score (peft), the
ratio heads, EDM's denoisers and their pickles, and the tiny offline SD pipelines the tests and the embedded prior
start from. Only this package (and the embedded prior's training) imports diffusers, transformers and peft; import
the modules explicitly (they take seconds)."""
