"""Keras metrics and losses of the engine, registered so that saved models load with safe_mode=True."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="zoidberg")
class SparseMacroAUC(keras.metrics.AUC):
    """ROC AUC averaged over classes (one-vs-rest) from integer labels and softmax outputs.

    keras.metrics.AUC needs one-hot labels; this one-hot encodes sparse labels first, so
    the multiclass model keeps sparse_categorical_crossentropy. It is registered, so saved
    models load (safe_mode=True) once this module is imported.
    """

    def __init__(self, num_classes: int = 3, name: str = "auc", **kwargs):
        kwargs.pop("multi_label", None)
        kwargs.pop("num_labels", None)
        super().__init__(name=name, multi_label=True, num_labels=num_classes, **kwargs)
        self.num_classes = num_classes

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        return super().update_state(ops.one_hot(labels, self.num_classes), y_pred, sample_weight)

    def get_config(self):
        config = super().get_config()
        config.pop("multi_label", None)
        config.pop("num_labels", None)
        config["num_classes"] = self.num_classes
        return config


@keras.saving.register_keras_serializable(package="zoidberg")
class SmoothedSparseCategoricalCrossentropy(keras.losses.Loss):
    """Categorical cross-entropy from integer labels, with label smoothing.

    The one-hot target of class c becomes (1 - s) on c and s / num_classes on every
    class, as keras.losses.CategoricalCrossentropy(label_smoothing=s) does.

    Args:
        num_classes: Number of classes.
        label_smoothing: s, from 0 (none) to below 1.
    """

    def __init__(self, num_classes: int = 3, label_smoothing: float = 0.1, name: str = "smoothed_sparse_categorical_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        targets = ops.one_hot(labels, self.num_classes)
        return keras.losses.categorical_crossentropy(targets, y_pred, label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "label_smoothing": self.label_smoothing}
