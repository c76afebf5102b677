"""The tasks: each puts the building blocks (losses, diffusion, engine, models, scene, export) together for one
job, and none imports another. ``text_to_3d`` (prompt -> asset), ``images`` (one-step image distiller),
``toy`` (2-D proof), ``reconstruct`` (a real mesh fitted and exported), ``embedded_prior`` (the shipped prior's
data, training and judge)."""
