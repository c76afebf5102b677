"""The 2-D proof: a ring of Gaussians with an exact score, distilled into a one-step MLP by every preset."""
