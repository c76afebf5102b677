"""One-step image distillation on MNIST: data, EDM teacher, FID feature net, metrics, the distiller."""
