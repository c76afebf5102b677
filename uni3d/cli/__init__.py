"""The ``uni3d`` command: :mod:`uni3d.cli.main` builds the parser; one module per task registers its commands.
Nothing heavy (diffusers, gradio) is imported until a command runs."""
