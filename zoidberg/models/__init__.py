"""Models: the TensorFlow-free registry of architectures and training options, weights lookup, builders."""
