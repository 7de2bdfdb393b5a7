"""Log records that read like failures and are not: filtered so a log shows what matters.

Every process that imports diffusers/torchao (Serve's build task and each stage replica) printed
the same six warnings, which read like failures. Each one is listed below with why it is harmless
here; ``quiet_known_warnings`` drops exactly those records, by logger and message, and nothing else.

Serve logs every exception a replica method raises as an ERROR with its whole traceback. A
client's mistake (bad input found in a stage, an unknown job id) is no server failure:
``ExpectedErrorsBrief`` turns those records into one INFO line.
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


class ExpectedErrorsBrief(logging.Filter):
    """Turns a record whose exception is one of ``expected`` into one INFO line without traceback.

    Args:
        expected: the exception types that are answers, not failures (4xx, a store's refusal).
    """

    def __init__(self, expected: tuple[type[BaseException], ...]) -> None:
        super().__init__()
        self.expected = expected

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, self.expected):
            record.msg, record.args = f"{record.getMessage()} (expected) {type(error).__name__}: {error}", None
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def brief_expected_errors(target: logging.Logger, expected: tuple[type[BaseException], ...]) -> None:
    """Put one ``ExpectedErrorsBrief`` on ``target`` (replacing an earlier one); idempotent."""
    target.filters = [f for f in target.filters if not isinstance(f, ExpectedErrorsBrief)]
    target.addFilter(ExpectedErrorsBrief(expected))
