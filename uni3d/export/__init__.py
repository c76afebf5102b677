"""Field -> mesh (marching cubes), UV atlas + texture bake, OBJ/GLB writers, turntable video."""
