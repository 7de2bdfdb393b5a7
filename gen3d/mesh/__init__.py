"""Usable mesh assets from raw marching-cubes meshes: clean, decimate, unwrap, bake, write.

Modules, one job each: ``clean`` (degenerates, duplicates, floaters, outward winding),
``decimate`` (quadric edge collapse keeping vertex colours), ``charts`` + ``pack`` + ``unwrap``
(UV atlas; charts and unwrap in torch on any device, packing numpy), ``bake`` (texels -> surface points -> colour field -> dilated texture, torch),
``prepare`` (the service's two steps), ``normalize`` (+Y up, unit box), ``glb`` + ``files``
(GLB/OBJ/PLY bytes), ``metrics`` (area, volume, Chamfer) and ``planted`` (test surfaces and
colour fields). Import from the modules; this package imports nothing, so writers stay cheap
to import.
"""
