"""Devices for a fold: one GPU per fold child, memory growth, and mixed precision (float16 on GPUs, bfloat16 on CPUs that have it)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

PRECISIONS = ("auto", "float32", "mixed")
# Architectures that train faster in bfloat16 on a CPU that has it, by measurement (BENCHMARKS.md,
# "Mixed bfloat16 on this CPU"): the notes' CNN 2.2x, at the same AUC on the site sample.
# MobileNetV2's depthwise convolutions ran 0.66x, so "auto" keeps it in float32.
BFLOAT16_FASTER = ("cnn",)


def gpu_for_child(index: int, visible: str | None) -> str | None:
    """The CUDA_VISIBLE_DEVICES of the index-th fold child: one of the visible GPUs, in turn (None: leave it alone).

    Args:
        index: The child's number, from 0.
        visible: The driver's CUDA_VISIBLE_DEVICES ("0,1,3"), or None when unset.
    """
    if not visible:
        return None
    gpus = [gpu.strip() for gpu in visible.split(",") if gpu.strip() and gpu.strip() != "-1"]
    return gpus[index % len(gpus)] if gpus else None


def enable_memory_growth() -> int:
    """Lets TensorFlow take GPU memory as it needs it, so that several processes can share a GPU; returns the GPU count."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # Already initialized: growth can no longer change, which is harmless here.
            pass
    return len(gpus)


# /proc/cpuinfo flags of CPUs that compute bfloat16 in hardware: AVX-512 BF16 (recent AMD and Intel) and AMX.
BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_bfloat16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX), read from /proc/cpuinfo's flags.

    Args:
        cpuinfo: The text of /proc/cpuinfo (read when None; no such file means no).
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
                cpuinfo = handle.read()
        except OSError:
            return False
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return any(flag in flags for flag in BFLOAT16_FLAGS)


def mixed_policy(has_gpu: bool, has_bfloat16: bool) -> str | None:
    """The Keras policy "mixed" means here: float16 on a GPU, bfloat16 on a CPU that has it, else None (float32)."""
    if has_gpu:
        return "mixed_float16"
    return "mixed_bfloat16" if has_bfloat16 else None


def describe_precision(policy: str | None, precision: str = "mixed") -> str | None:
    """What a fold says about its precision (None: float32 by default, nothing to say)."""
    if precision == "auto":
        return ("Precision auto: bfloat16 on this CPU (AVX-512 BF16 or AMX) for the CNN, about twice float32's speed here "
                "at the same AUC on new films; the output layer in float32." if policy else None)
    if policy == "mixed_float16":
        return "Mixed precision: float16 on the GPU, the output layer in float32."
    if policy == "mixed_bfloat16":
        return "Mixed precision: bfloat16 on this CPU (it has AVX-512 BF16 or AMX), the output layer in float32."
    return ("Mixed precision asked for, but there is neither a GPU nor a CPU with bfloat16 (AVX-512 BF16 or AMX): "
            "training in float32 (float16 would be slower on this CPU).")


@contextlib.contextmanager
def precision_policy(precision: str, *, architecture: str | None = None, force: str | None = None) -> Iterator[str | None]:
    """Builds and trains under the mixed policy this machine supports when asked for; yields the policy (None: float32).

    Args:
        precision: "auto" (bfloat16 where this CPU has it and the architecture is measured
            faster in it, else float32), "float32" or "mixed".
        architecture: The model's architecture, for "auto".
        force: A policy to use whatever the machine (the tests: "mixed_float16" on a CPU).
    """
    import keras
    import tensorflow as tf

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}.")
    policy = None
    if precision == "mixed":
        policy = force or mixed_policy(bool(tf.config.list_physical_devices("GPU")), cpu_has_bfloat16())
    elif precision == "auto" and architecture in BFLOAT16_FASTER and not tf.config.list_physical_devices("GPU") and cpu_has_bfloat16():
        policy = "mixed_bfloat16"
    previous = keras.mixed_precision.global_policy()
    if policy:
        keras.mixed_precision.set_global_policy(policy)
    try:
        yield policy
    finally:
        keras.mixed_precision.set_global_policy(previous)


def visible_gpus_of_driver() -> str | None:
    """The driver's CUDA_VISIBLE_DEVICES, which the fold children split among themselves."""
    return os.environ.get("CUDA_VISIBLE_DEVICES")


@contextlib.contextmanager
def distribution_scope(devices: list[str] | None = None) -> Iterator[object | None]:
    """Trains one fold data-parallel over every GPU it sees (tf.distribute.MirroredStrategy) when it sees more than one.

    Models built and compiled inside the scope have mirrored variables, and Keras' fit splits
    each batch over the replicas. With one GPU or none this is a plain block.

    Args:
        devices: The devices to mirror over (default: the visible GPUs); the tests pass
            ["/cpu:0"] to check that the path builds and trains on a CPU.

    Yields:
        The strategy, or None when there is nothing to distribute over.
    """
    import tensorflow as tf

    if devices is None:
        gpus = tf.config.list_logical_devices("GPU")
        devices = [gpu.name for gpu in gpus] if len(gpus) > 1 else []
    if not devices:
        yield None
        return
    strategy = tf.distribute.MirroredStrategy(devices=devices)
    with strategy.scope():
        yield strategy
