"""One Keras graph that serves a whole run: its folds, an ensemble's members and combination, site heads, calibration."""

from __future__ import annotations

import keras
import numpy as np

# The probability clipping of zoidberg.evaluation.calibration, so that exported calibration matches it.
CALIBRATION_EPSILON = 1e-6
# The clipping of zoidberg.evaluation.combination (stacking) and of zoidberg.models.site_heads.
STACKING_EPSILON = 1e-4
HEAD_EPSILON = 1e-6


@keras.saving.register_keras_serializable(package="zoidberg")
class LogitRecalibration(keras.layers.Layer):
    """Recalibrates probabilities on their logits: sigmoid(slope·logit + intercept), or softmax(slope·log p).

    The exported twin of zoidberg.evaluation.calibration.Calibration: temperature scaling is
    slope = 1/T and intercept 0, Platt's fit its slope and intercept.
    """

    def __init__(self, slope: float = 1.0, intercept: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.slope = float(slope)
        self.intercept = float(intercept)

    def call(self, probabilities):
        ops = keras.ops
        clipped = ops.clip(probabilities, CALIBRATION_EPSILON, 1.0 - CALIBRATION_EPSILON)
        if probabilities.shape[-1] == 1:
            logits = ops.log(clipped) - ops.log(1.0 - clipped)
            return ops.sigmoid(self.slope * logits + self.intercept)
        return ops.softmax(self.slope * ops.log(clipped), axis=-1)

    def get_config(self):
        return {**super().get_config(), "slope": self.slope, "intercept": self.intercept}


@keras.saving.register_keras_serializable(package="zoidberg")
class LogOdds(keras.layers.Layer):
    """log(p / (1 − p)) of an (N, 1) P(pneumonia), clipped epsilon away from 0 and 1: what stacking and site heads read."""

    def __init__(self, epsilon: float = HEAD_EPSILON, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, positive):
        ops = keras.ops
        clipped = ops.clip(positive, self.epsilon, 1.0 - self.epsilon)
        return ops.log(clipped) - ops.log(1.0 - clipped)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


def recalibration_layer(calibration, binary: bool, name: str) -> LogitRecalibration | None:
    """The layer that applies a fitted Calibration, or None without one."""
    if calibration is None:
        return None
    if calibration.method == "platt" and calibration.platt_slope is not None and binary:
        return LogitRecalibration(calibration.platt_slope, calibration.platt_intercept, name=name)
    return LogitRecalibration(1.0 / calibration.temperature, 0.0, name=name)


def preparation_of(part) -> dict:
    """How a fold ensemble prepares its images: its side, resize and contrast (its run's data config)."""
    data = part.run.config.get("data") or {}
    return {"image_size": int(part.image_size), "resize": data.get("resize", "stretch"), "enhance": data.get("enhance", "none")}


def input_name(preparation: dict, only: bool) -> str:
    """The input a preparation feeds: "image" when a graph has one, else "image_224" (plus "_pad", "_clahe" where they differ)."""
    if only:
        return "image"
    name = f"image_{preparation['image_size']}"
    if preparation["resize"] != "stretch":
        name += f"_{preparation['resize']}"
    if preparation["enhance"] != "none":
        name += f"_{preparation['enhance']}"
    return name


def fold_ensembles(served) -> list:
    """Every fold ensemble a served run reads, in order: itself, an ensemble's members, or an adapted run's parent's."""
    source = getattr(served, "parent", served) if _is_adapted(served) else served
    return list(getattr(source, "members", [source]))


def serving_inputs(served) -> dict:
    """{input name: preparation} of a served run, one per distinct preparation of its fold ensembles."""
    preparations = []
    for part in fold_ensembles(served):
        preparation = preparation_of(part)
        if preparation not in preparations:
            preparations.append(preparation)
    preparations.sort(key=lambda item: -item["image_size"])
    return {input_name(preparation, len(preparations) == 1): preparation for preparation in preparations}


def _is_adapted(served) -> bool:
    return hasattr(served, "heads") and hasattr(served, "parent")


class _Graph:
    """Builds one served run's tensors: inputs by preparation, each fold ensemble's folds once."""

    def __init__(self, served):
        self.served = served
        self._preparations = serving_inputs(served)
        self.inputs = {name: keras.Input((prep["image_size"], prep["image_size"], 1), dtype="uint8", name=name)
                       for name, prep in self._preparations.items()}
        self._scaled: dict = {}
        self._features: dict = {}

    def scaled(self, part):
        """The [0, 1] float image a fold ensemble reads."""
        preparation = preparation_of(part)
        name = next(key for key, prep in self._preparations.items() if prep == preparation)
        if name not in self._scaled:
            self._scaled[name] = keras.layers.Rescaling(1.0 / 255.0, name=f"scale_{name}")(self.inputs[name])
        return self._scaled[name]

    def features(self, part, prefix: str):
        """A frozen run's shared backbone features, computed once however many readers (folds, site heads)."""
        key = part.run.id
        if key not in self._features:
            extractor = part.frozen_parts()[0]
            self._features[key] = keras.Model(extractor.input, extractor.output, name=f"{prefix}_backbone")(self.scaled(part))
        return self._features[key]

    def folds(self, part, prefix: str) -> list:
        """Each fold model's raw output (N, 1) or (N, C); a frozen run's heads all read one backbone pass."""
        frozen = part.frozen_parts() if getattr(part, "frozen", False) else None
        if frozen is not None:
            features = self.features(part, prefix)
            return [keras.Model(head.input, head.output, name=f"{prefix}_fold_{fold}")(features) for fold, head in zip(part.folds, frozen[1])]
        scaled = self.scaled(part)
        return [keras.Model(model.input, model.output, name=f"{prefix}_fold_{fold}")(scaled) for fold, model in zip(part.folds, part.models)]


def _mean(tensors: list, name: str):
    return tensors[0] if len(tensors) == 1 else keras.layers.Average(name=name)(tensors)


def _linear_sigmoid(inputs, weights: np.ndarray, bias: float, name: str):
    """A fixed sigmoid(inputs · weights + bias): a Dense layer holding fitted coefficients."""
    layer = keras.layers.Dense(1, activation="sigmoid", name=name)
    output = layer(inputs)
    layer.set_weights([np.asarray(weights, dtype=np.float32).reshape(-1, 1), np.asarray([bias], dtype=np.float32)])
    return output


def _fold_ensemble_outputs(graph: _Graph, part, prefix: str) -> tuple:
    """(raw fold mean, calibrated fold mean or None) of one run's folds, as zoidberg.inference.ensemble.Ensemble.combine."""
    folds = graph.folds(part, prefix)
    raw = _mean(folds, f"{prefix}_fold_mean")
    if part.calibration is None:
        return raw, None
    calibrated = [recalibration_layer(part.calibration, part.is_binary, f"{prefix}_calibration_{fold}")(output)
                  for fold, output in zip(part.folds, folds)]
    return raw, _mean(calibrated, f"{prefix}_calibrated_mean")


def _member_means(graph: _Graph, members: list) -> list:
    return [_fold_ensemble_outputs(graph, member, f"member_{index}")[0] for index, member in enumerate(members, start=1)]


def _combined(graph: _Graph, served) -> tuple:
    """(raw, calibrated or None) of an ensemble of runs: its combiner on the members' fold means, then its calibration."""
    members = _member_means(graph, served.members)
    combiner = served.combiner
    if combiner.method == "mean":
        raw = _mean(members, "member_mean")
    else:
        logits = [LogOdds(STACKING_EPSILON, name=f"member_{index}_logit")(member) for index, member in enumerate(members, start=1)]
        joined = logits[0] if len(logits) == 1 else keras.layers.Concatenate(name="member_logits")(logits)
        raw = _linear_sigmoid(joined, np.asarray(combiner.coefficients), combiner.intercept, "stacking")
    return raw, _calibrated_on(raw, served)


def _adapted(graph: _Graph, served) -> tuple:
    """(raw, calibrated or None) of an adapted run: its site heads on the parent's log-odds and frozen features, averaged."""
    parent = served.parent
    members = fold_ensembles(served)
    means = _member_means(graph, members) if hasattr(parent, "members") else [_fold_ensemble_outputs(graph, parent, "member_1")[0]]
    columns = [LogOdds(HEAD_EPSILON, name=f"member_{index}_log_odds")(mean) for index, mean in enumerate(means, start=1)]
    if served.feature_member is not None:
        index = next(position for position, member in enumerate(members, start=1) if member.run.id == served.feature_member.run.id)
        columns.append(graph.features(served.feature_member, f"member_{index}"))
    joined = columns[0] if len(columns) == 1 else keras.layers.Concatenate(name="site_head_inputs")(columns)
    heads = []
    for number, head in enumerate(served.heads, start=1):
        # The head standardizes (x − mean) / scale before its weights: folded into one Dense layer.
        weights = np.asarray(head.coef, dtype=np.float64) / np.asarray(head.scale, dtype=np.float64)
        bias = float(head.intercept) - float(np.dot(np.asarray(head.mean, dtype=np.float64), weights))
        heads.append(_linear_sigmoid(joined, weights, bias, f"site_head_{number}"))
    raw = _mean(heads, "site_head_mean")
    return raw, _calibrated_on(raw, served)


def _calibrated_on(raw, served):
    layer = recalibration_layer(served.calibration, served.is_binary, "calibration")
    return None if layer is None else layer(raw)


def build_serving_model(served) -> keras.Model:
    """One Keras model of a whole run: uint8 images in, its probabilities out, exactly as the run computes them.

    A run's fold models are averaged (a frozen run's backbone runs once for all its heads);
    an ensemble of runs applies its combination (mean or stacking) to its members' fold
    means; an adapted run applies its site heads to its parent's log-odds and frozen features.
    The run's calibration follows, as the run applies it.

    Args:
        served: A loaded zoidberg.inference Ensemble, EnsembleOfRuns or AdaptedEnsemble.

    Returns:
        A model with one uint8 (N, S, S, 1) input per distinct preparation (named "image"
        when there is one; see serving_inputs), and outputs "probability" and, when
        calibrated, "probability_calibrated": P(pneumonia) (N, 1) for binary runs, the class
        probabilities (N, C) otherwise.
    """
    graph = _Graph(served)
    if _is_adapted(served):
        raw, calibrated = _adapted(graph, served)
    elif hasattr(served, "members"):
        raw, calibrated = _combined(graph, served)
    else:
        raw, calibrated = _fold_ensemble_outputs(graph, served, "run")
    outputs = {"probability": keras.layers.Identity(name="probability")(raw)}
    if calibrated is not None:
        outputs["probability_calibrated"] = keras.layers.Identity(name="probability_calibrated")(calibrated)
    inputs = graph.inputs["image"] if list(graph.inputs) == ["image"] else dict(graph.inputs)
    return keras.Model(inputs, outputs, name="zoidberg_served_run")
