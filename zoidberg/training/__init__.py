"""Training: the tf.data pipeline, callbacks, frozen-backbone features and patient-grouped cross-validation."""
