"""Training recipes: how each architecture is trained unless told otherwise, and the named recipes of
`digitrec train --recipe NAME`.

Plain data, no Keras: the CLI reads it to build `--help` without importing TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass

from digitrec.models import DEFAULT_ARCH


@dataclass(frozen=True)
class Recipe:
    """How an architecture is trained when the user does not say otherwise."""

    epochs: int
    batch_size: int
    learning_rate: float  # peak rate for the one-cycle schedule, the constant rate otherwise
    schedule: str  # "constant" (the seed's Adam as it was) or "one-cycle" (warm-up then cosine decay)
    augment: bool
    keep: str = "best"  # which epoch's weights the bundle gets: "best" on validation loss, or "last"


RECIPES: dict[str, Recipe] = {
    # The original's architecture, layer for layer, trained our way: its own recipe (Adam 1e-3, batch 32, no
    # augmentation, last of 5 epochs) lands anywhere in 98.76-99.32% by seed (mean 98.98%, 6 seeds), while
    # a one-cycle schedule at batch 128 with augmentation gave 99.25-99.39% (6 seeds) in fewer CPU seconds.
    # `--batch-size 32 --learning-rate 1e-3 --schedule constant --no-augment` trains it as it was.
    "seed": Recipe(epochs=5, batch_size=128, learning_rate=3e-3, schedule="one-cycle", augment=True, keep="last"),
    "bn-strided-cnn": Recipe(epochs=40, batch_size=128, learning_rate=4e-3, schedule="one-cycle", augment=True),
    "bn-strided-cnn-small": Recipe(epochs=10, batch_size=128, learning_rate=5e-3, schedule="one-cycle",
                                   augment=True),
    # Built for CPU seconds (benchmarks/train_speed.py): 99.0% in 2 epochs, no augmentation (`--recipe fast`
    # until s2d-cnn-fast replaced it; `--recipe fast-accurate` trains it longer).
    "bn-strided-cnn-fast": Recipe(epochs=2, batch_size=64, learning_rate=2e-3, schedule="one-cycle",
                                  augment=False),
    # `--recipe fast`: on validation 99.0% after 1.5, 1.5 and 1.75 epochs (seeds 0-2) at batch 64, peak 4e-3;
    # peak 3e-3 or 6e-3 no sooner (1.5-1.75), batch 128 (cheaper steps) needed 1.5-2 epochs, batch 256 2.
    "s2d-cnn-fast": Recipe(epochs=2, batch_size=64, learning_rate=4e-3, schedule="one-cycle", augment=False),
}


@dataclass(frozen=True)
class NamedRecipe:
    """`digitrec train --recipe NAME`: an architecture and how to train it, chosen for one goal."""

    arch: str
    recipe: Recipe
    goal: str  # one line for `--help`: what it is for, as benchmarks/train_speed.py measured it


NAMED_RECIPES: dict[str, NamedRecipe] = {
    "default": NamedRecipe(DEFAULT_ARCH, RECIPES[DEFAULT_ARCH], "for accuracy; slow on a CPU"),
    # Chosen on the validation split (benchmarks/train_speed.py runs them; the test set only measures them).
    # 'fast': every network tried needed about 70-80k images (1.25-1.75 epochs) to reach 99.0% on validation,
    # so what counts is CPU seconds per image: s2d-cnn-fast costs about half of bn-strided-cnn-fast's
    # (no conv at 26x26 or 28x28) for the same epochs to 99.0% (1.5-1.75 on validation, seeds 0-2), and
    # batch norm's fused op (train.fuse_batch_norm) cut both. Wider (40 channels, dense 192: 1.25-1.5
    # epochs) or deeper variants got there in no fewer CPU seconds.
    "fast": NamedRecipe("s2d-cnn-fast", RECIPES["s2d-cnn-fast"],
                        "for CPU seconds: 99.0% in under 2 epochs"),
    # 'fast-accurate': the same small network for longer, with augmentation: validation 99.5% after 8
    # epochs, 99.58% after 8.5; bn-strided-cnn-small's own 10-epoch recipe was at 99.48% after 8 and costs
    # about 1.3x more per epoch.
    "fast-accurate": NamedRecipe("bn-strided-cnn-fast", Recipe(epochs=12, batch_size=128, learning_rate=3e-3,
                                                                schedule="one-cycle", augment=True),
                                 "for 99.5% on a CPU: about 8 epochs"),
}




def describe(name: str) -> str:
    """One line for `--help`: "'fast': bn-strided-cnn-fast, 6 epochs, batch 128, ... (for CPU seconds)"."""
    named = NAMED_RECIPES[name]
    recipe = named.recipe
    mantissa, exponent = f"{recipe.learning_rate:e}".split("e")
    rate = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"  # 2e-3, as the flags are written
    schedule = f"one-cycle peak {rate}" if recipe.schedule == "one-cycle" else f"constant rate {rate}"
    return (f"'{name}': {named.arch}, {recipe.epochs} epochs, batch {recipe.batch_size}, {schedule}, "
            f"{'augmentation' if recipe.augment else 'no augmentation'} ({named.goal})")
