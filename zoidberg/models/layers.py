"""Layer-level queries of built models: the backbone's layers, freezing, the last convolution, sizes."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras

# Layer names shared by every architecture (see zoidberg.models.build): the input "image",
# the pooled or flattened "features" (the frozen-feature fast path splits there), the
# "preprocess_*" range conversion, the "head_*" classifier layers and the "predictions" output.
INPUT_NAME = "image"
OUTPUT_NAME = "predictions"
FEATURES_NAME = "features"
PREPROCESS_PREFIX = "preprocess_"
HEAD_PREFIX = "head_"


def _is_backbone_layer(layer) -> bool:
    """Returns whether a layer belongs to the backbone (not input, preprocessing or head)."""
    import keras

    name = layer.name
    return not (
        isinstance(layer, keras.layers.InputLayer)
        or name in (INPUT_NAME, FEATURES_NAME, OUTPUT_NAME)
        or name.startswith(PREPROCESS_PREFIX)
        or name.startswith(HEAD_PREFIX)
    )


def backbone_layer_names(model: keras.Model) -> list[str]:
    """Returns the backbone's layer names in topological order.

    The backbone is every layer except the "image" input, "preprocess_*" layers, the
    "features" pooling, "head_*" layers and "predictions"; names survive saving, so this
    works on loaded models too.

    Args:
        model: A model from build_model (or a loaded one).

    Returns:
        Layer names, input side first.
    """
    return [layer.name for layer in model.layers if _is_backbone_layer(layer)]


def freeze_backbone(model: keras.Model) -> None:
    """Makes every backbone layer non-trainable (BatchNormalization then runs in inference mode).

    Args:
        model: A model from build_model. Compile it again afterwards.
    """
    for layer in model.layers:
        if _is_backbone_layer(layer):
            layer.trainable = False


def unfreeze_top_layers(model: keras.Model, n_layers: int) -> list[str]:
    """Makes the top n backbone layers trainable, keeping BatchNormalization frozen.

    BatchNormalization layers stay frozen (as the Keras transfer-learning guide
    recommends) so that their ImageNet statistics are not wrecked by small batches.
    Compile the model again afterwards, with a lower learning rate.

    Args:
        model: A model from build_model.
        n_layers: How many backbone layers, counted from the top, to consider.

    Returns:
        Names of the layers made trainable.
    """
    import keras

    if n_layers < 0:
        raise ValueError(f"n_layers must be 0 or more, not {n_layers}.")
    names = backbone_layer_names(model)
    top_names = names[len(names) - min(n_layers, len(names)):]
    unfrozen = []
    for name in top_names:
        layer = model.get_layer(name)
        if isinstance(layer, keras.layers.BatchNormalization):
            continue
        layer.trainable = True
        unfrozen.append(name)
    return unfrozen


def last_conv_layer_name(model: keras.Model) -> str:
    """Returns the last layer with a 4-D (spatial) output before pooling or flattening.

    Trailing pooling and dropout layers are skipped, so the CNN gives its last
    convolution (or its BatchNormalization) and backbones their final activation.

    Args:
        model: A Functional model.

    Returns:
        The layer name, for Grad-CAM.

    Raises:
        ValueError: The model has no spatial layer.
    """
    import keras

    skipped = (
        keras.layers.InputLayer,
        keras.layers.MaxPooling2D,
        keras.layers.AveragePooling2D,
        keras.layers.Dropout,
        keras.layers.SpatialDropout2D,
    )
    for layer in reversed(model.layers):
        if isinstance(layer, skipped) or layer.name.startswith(PREPROCESS_PREFIX):
            continue
        if len(layer.output.shape) == 4:
            return layer.name
    raise ValueError(f"Model {model.name!r} has no layer with a 4-D output.")


def count_parameters(model: keras.Model) -> dict[str, int]:
    """Counts weights.

    Args:
        model: Any built Keras model.

    Returns:
        {"total", "trainable", "non_trainable"} numbers of scalars.
    """
    trainable = sum(int(math.prod(weight.shape)) for weight in model.trainable_weights)
    total = sum(int(math.prod(weight.shape)) for weight in model.weights)
    return {"total": total, "trainable": trainable, "non_trainable": total - trainable}


_KERNEL_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel")


def estimate_flops(model: keras.Model) -> int:
    """Estimates forward FLOPs for one image, analytically.

    Counts 2 FLOPs per multiply-add of Conv2D, DepthwiseConv2D, SeparableConv2D and Dense
    layers (2 x output positions x kernel size), which dominate these networks; biases,
    BatchNormalization, activations, pooling and element-wise ops are ignored (a few %).

    Args:
        model: A built Functional model.

    Returns:
        FLOPs per image.
    """
    from keras import layers

    total = 0
    for layer in model.layers:
        if not isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D, layers.SeparableConv2D, layers.Dense)):
            continue
        kernel_size = sum(int(math.prod(weight.shape)) for weight in layer.weights if weight.name in _KERNEL_NAMES)
        positions = int(math.prod(dim for dim in layer.output.shape[1:-1] if dim is not None))
        total += 2 * positions * kernel_size
    return total


def unsafe_layers(path) -> list[str]:
    """The names of the Lambda layers a .keras file's config declares (none for a file that cannot be read)."""
    import json
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return []
    found = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("class_name") == "Lambda":
                found.append(str((node.get("config") or {}).get("name", "?")))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return found


def as_float32(model: keras.Model) -> keras.Model:
    """The same model computing in float32 (a model trained under a mixed policy keeps that policy in its saved layers).

    Predicting, Grad-CAM and every export then run one numeric type on every machine:
    ONNX Runtime, for one, has no bfloat16 convolution, and bfloat16 inference is no faster
    on most CPUs. The weights are float32 under a mixed policy already, so they are copied
    as they are.
    """
    import keras

    if all(layer.dtype_policy.name == "float32" for layer in model.layers):
        return model

    def float32_layer(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    copy = keras.models.clone_model(model, clone_function=float32_layer)
    copy.set_weights(model.get_weights())
    return copy
