"""The validation pass: Keras' val_* logs in one inference pass, whose kept probabilities are the out-of-fold ones."""

import keras
import numpy as np
import pytest

from zoidberg.config import ModelConfig, TrainConfig
from zoidberg.models.build import build_model, compile_model
from zoidberg.training.callbacks import ValidationPass
from zoidberg.training.pipeline import fit_model, make_early_stopping, make_fit_inputs, predict_probabilities

TINY_MODEL = ModelConfig(architecture="cnn", conv_blocks=2, base_filters=8, dense_units=16, dropout_rate=0.0)


def tiny_data(num_classes: int):
    rng = np.random.default_rng(0)
    images = (rng.random((120, 32, 32)) * 255).astype(np.uint8)
    labels = rng.integers(0, num_classes, len(images))
    return images, labels, np.arange(90), np.arange(90, 120)


@pytest.mark.parametrize("num_classes", [2, 3])
def test_validation_logs_match_keras_own_validation(num_classes):
    images, labels, train, validation = tiny_data(num_classes)
    train_config = TrainConfig(epochs=2, batch_size=16, early_stopping_patience=0)
    histories = []
    for ours in (False, True):
        keras.utils.set_random_seed(1)
        model = compile_model(build_model(TINY_MODEL, 32, num_classes), train_config, num_classes)
        train_data, validation_data, _ = make_fit_inputs(images, labels, train, validation, train_config, num_classes=num_classes, random_state=1)
        if ours:
            history = model.fit(train_data, epochs=2, callbacks=[ValidationPass(validation_data)], verbose=0, shuffle=False).history
        else:
            history = model.fit(train_data, validation_data=validation_data, epochs=2, verbose=0, shuffle=False).history
        histories.append({key: values for key, values in history.items() if key.startswith("val_")})
    keras_logs, our_logs = histories
    assert set(keras_logs) == set(our_logs) == {"val_loss", "val_accuracy", "val_auc"}
    for key in keras_logs:
        np.testing.assert_allclose(our_logs[key], keras_logs[key], rtol=1e-4, atol=1e-5)


def test_kept_outputs_are_those_of_the_weights_early_stopping_restores():
    images, labels, train, validation = tiny_data(2)
    # Random labels and a high learning rate: the validation loss is lowest at epoch 2 of 4 for
    # this seed. Patience 5 over 4 epochs never stops early but still restores the best.
    train_config = TrainConfig(epochs=4, batch_size=16, learning_rate=0.2, early_stopping_patience=5)
    keras.utils.set_random_seed(2)
    model = compile_model(build_model(TINY_MODEL, 32, 2), train_config, 2)
    train_data, validation_data, _ = make_fit_inputs(images, labels, train, validation, train_config, num_classes=2, random_state=2)
    validation_pass = ValidationPass()
    history = fit_model(
        model, TINY_MODEL, train_config, train_data, validation_data, num_classes=2,
        callbacks=[make_early_stopping(train_config.early_stopping_patience)], validation_pass=validation_pass,
    )
    best_epoch = int(np.argmin(history["val_loss"]))
    assert best_epoch < 3, "the test needs a best epoch before the last to tell the two apart"
    assert validation_pass.kept_epoch == best_epoch
    assert len(validation_pass.outputs_by_epoch) == 4
    # The model ends with the best epoch's weights, whose predictions are the kept ones.
    after = predict_probabilities(model, images, validation)[:, 1]
    np.testing.assert_allclose(validation_pass.kept_outputs[:, 0], after, atol=1e-5)


def test_kept_outputs_are_the_last_epoch_without_early_stopping():
    images, labels, train, validation = tiny_data(2)
    train_config = TrainConfig(epochs=2, batch_size=16, early_stopping_patience=0)
    model = compile_model(build_model(TINY_MODEL, 32, 2), train_config, 2)
    train_data, validation_data, _ = make_fit_inputs(images, labels, train, validation, train_config, num_classes=2, random_state=0)
    validation_pass = ValidationPass()
    fit_model(model, TINY_MODEL, train_config, train_data, validation_data, num_classes=2, validation_pass=validation_pass)
    assert validation_pass.kept_epoch == 1
    np.testing.assert_allclose(validation_pass.kept_outputs[:, 0], predict_probabilities(model, images, validation)[:, 1], atol=1e-5)
