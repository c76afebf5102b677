"""uni3d: score distillation (Uni-Instruct) for text-to-3D and one-step image generators."""

__version__ = "0.1.0"
