"""Every option declared once: architectures, hyperparameters, training and preprocessing options (no TensorFlow)."""
