"""Known third-party start-up warnings, filtered so a start-up log shows what matters.

Every process that imports diffusers/torchao (Serve's build task and each stage replica) printed
the same six warnings, which read like failures. Each one is listed below with why it is harmless
here; ``quiet_known_warnings`` drops exactly those records, by logger and message, and nothing else.
"""

import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KnownWarning:
    """One third-party warning that is expected and harmless in gen3d.

    Attributes:
        logger: name of the logger that emits it.
        fragment: text every such message contains.
        reason: why gen3d can ignore it.
    """

    logger: str
    fragment: str
    reason: str


KNOWN_WARNINGS = (
    KnownWarning(
        "torchao",
        "Failed to load ",
        "torchao ships prebuilt C++/CUDA kernels (mxfp8, CUTLASS sm90a) that cannot load into every torch "
        "build (none into a CPU-only one); gen3d's fp8 config (float8 dynamic activation, per-row) does not call them",
    ),
    KnownWarning(
        "torch.utils._pytree",
        "is now natively supported by torch.compile as an opaque value type",
        "torchao registers its enums with a torch API that torch 2.13 deprecates; nothing changes in behaviour",
    ),
    KnownWarning(
        "transformers.utils.import_utils",
        "requires torchvision (not installed)",
        "transformers falls back to its PIL image processors; FLUX's pipeline only imports them, gen3d never "
        "feeds them images",
    ),
    KnownWarning(
        "diffusers.quantizers.torchao.torchao_quantizer",
        "Unable to import `torchao` Tensor objects",
        "only matters for checkpoints saved already quantised by torchao; gen3d quantises at load time",
    ),
)


class _DropKnown(logging.Filter):
    """Drops the records of one logger whose message contains one of ``fragments``."""

    def __init__(self, fragments: tuple[str, ...]) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


def quiet_known_warnings() -> None:
    """Filter ``KNOWN_WARNINGS`` in this process; idempotent.

    Call it before diffusers, transformers or torchao are imported (their warnings fire at import
    time): the filters sit on the emitting loggers, which ``logging`` creates on first mention.
    """
    by_logger: dict[str, tuple[str, ...]] = {}
    for known in KNOWN_WARNINGS:
        by_logger[known.logger] = (*by_logger.get(known.logger, ()), known.fragment)
    for name, fragments in by_logger.items():
        target = logging.getLogger(name)
        target.filters = [f for f in target.filters if not isinstance(f, _DropKnown)]
        target.addFilter(_DropKnown(fragments))
    logger.debug("filtering %d known third-party warnings (gen3d.service.logs.KNOWN_WARNINGS)", len(KNOWN_WARNINGS))
