"""Data: decoding X-rays, datasets in the Kaggle or flat layout, patient-grouped folds, the synthetic demo set."""
