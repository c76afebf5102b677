"""Proof on real geometry: render a mesh, fit the field to the views, export, measure Chamfer and PSNR."""
