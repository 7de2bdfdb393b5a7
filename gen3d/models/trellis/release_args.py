"""Reading the ``args`` of the release's checkpoint JSONs, shared by every network's config.

Each JSON names a class and its constructor keywords; keywords left out take the reference
constructor's defaults. Unknown keywords are refused by name, so a different release fails at
start-up rather than building a silently different network.
"""

from collections.abc import Iterable, Mapping
from typing import Any

#: Keywords that only matter for training (gradient checkpointing): read and ignored.
TRAINING_ONLY = ("use_checkpoint",)


def merged_args(args: Mapping[str, Any], required: Iterable[str], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``args`` over the reference ``defaults``, after checking that every ``required`` key is there.

    Raises:
        ValueError: unknown keys (naming them and the known ones), or missing required ones.
    """
    required = list(required)
    unknown = sorted(set(args) - set(defaults) - set(required) - set(TRAINING_ONLY))
    if unknown:
        raise ValueError(f"args: unknown keys {unknown}; expected some of {sorted([*required, *defaults])}")
    missing = [key for key in required if key not in args]
    if missing:
        raise ValueError(f"args: missing required keys {missing}")
    return {key: value for key, value in {**defaults, **args}.items() if key not in TRAINING_ONLY}


def head_count(args: Mapping[str, Any], default_channels: int, head_channels: int = 64) -> int:
    """``num_heads``, or, when it is null or absent, model_channels // num_head_channels (the reference's rule)."""
    if args.get("num_heads") is not None:
        return int(args["num_heads"])
    return int(args.get("model_channels", default_channels)) // int(args.get("num_head_channels", head_channels))
