"""One package per model: its architecture, loading and config (FLUX, TripoSR, TRELLIS, segmentation)."""
