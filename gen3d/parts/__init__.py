"""Speed parts shared by the models: fp8 linear layers, CUDA graphs, the compile cache."""
