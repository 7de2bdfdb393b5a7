"""FLUX.1-schnell: components built from config, without downloading anything."""
