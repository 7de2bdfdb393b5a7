"""gen3d: text or image to 3D asset (mesh or Gaussian splat), the Ray-free library.

Stages, one module each: ``text_to_image`` (FLUX.1-schnell), ``background`` (rembg + TripoSR
preprocessing), ``image_to_3d`` (our TripoSR), ``export`` (mesh files and splat PLY).
"""

__version__ = "0.1.0"
