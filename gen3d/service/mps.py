"""CUDA MPS for the stage processes of one card: a private control daemon that ``gen3d serve`` runs.

Each GPU stage is its own process. Without MPS the card time-slices between their contexts, so
under load every stage's kernels wait for the others' slices; with MPS their kernels share the
card at once. The serve config's ``args.mps`` decides (read by the launcher, before Ray starts):

- ``off``: no daemon.
- ``on``: start one or fail: ``gen3d serve`` stops with the reason.
- ``auto``: start one when the config puts a stage on CUDA, ``nvidia-cuda-mps-control`` is on
  PATH and a CUDA client really joins it (the driver allows it); otherwise say why once and
  serve without.

The daemon's pipes and logs live in a private temporary folder (``CUDA_MPS_PIPE_DIRECTORY``,
``CUDA_MPS_LOG_DIRECTORY``), so only processes given that folder join it: the launcher passes
both to ``serve run``, whose Ray cluster hands its environment down to every replica. It serves
the GPUs this machine gives Ray: with ``CUDA_VISIBLE_DEVICES`` set, both the daemon and Ray get
the cards' UUIDs, because MPS renumbers indices (daemon on "0,2" shows its clients 0 and 1).
``stop`` sends ``quit`` and removes the folder.

The trade-off: a fatal GPU fault in one client (an illegal address, a hardware error) ends every
client of that card's MPS server. Serve then fails their health checks and restarts the
replicas; requests in flight are answered 502 (the stage named) or, while replicas are missing,
503 with ``Retry-After``.
"""

import logging
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

logger = logging.getLogger(__name__)

MpsMode = Literal["auto", "on", "off"]
MPS_MODES: tuple[str, ...] = ("auto", "on", "off")
CONTROL_BINARY = "nvidia-cuda-mps-control"
PIPE_ENV = "CUDA_MPS_PIPE_DIRECTORY"
LOG_ENV = "CUDA_MPS_LOG_DIRECTORY"
VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"
#: Seconds for the daemon to start or quit, and for the probe client to create a CUDA context.
CONTROL_TIMEOUT_S = 30.0
PROBE_TIMEOUT_S = 120.0
#: A CUDA client: creates a context (joining MPS when the environment names a daemon), runs a kernel
#: and, while its context lives, prints the daemon's answer to ``get_server_list`` (argv[1] is the binary).
PROBE_CODE = (
    "import subprocess, sys, torch\n"
    "x = torch.ones(8, device='cuda'); x.add_(1); torch.cuda.synchronize()\n"
    "print(subprocess.run([sys.argv[1]], input='get_server_list\\n', capture_output=True, text=True, timeout=30).stdout.strip())\n"
)


class MpsUnavailable(RuntimeError):
    """MPS was asked for (``mps: on``) and cannot run here; the message says why."""


def mps_mode(args: Mapping[str, object]) -> MpsMode:
    """The ``mps`` of a serve config's builder args (``off`` when absent).

    Raises:
        ValueError: a value other than auto, on or off.
    """
    mode = args.get("mps", "off")
    if mode not in MPS_MODES:
        raise ValueError(f"args.mps: expected one of {list(MPS_MODES)}, got {mode!r}")
    return mode  # type: ignore[return-value]


@dataclass(frozen=True)
class MpsDaemon:
    """A running control daemon and what its clients need.

    Attributes:
        binary: the ``nvidia-cuda-mps-control`` that runs it.
        folder: its private folder (pipes and logs).
        client_env: the variables a process needs to join it.
    """

    binary: str
    folder: Path
    client_env: dict[str, str]

    def control(self, command: str, environ: Mapping[str, str]) -> str:
        """Send one command (``get_server_list``, ``quit``) to the daemon; its answer."""
        done = subprocess.run(
            [self.binary], input=f"{command}\n", env={**environ, **self.client_env},
            capture_output=True, text=True, timeout=CONTROL_TIMEOUT_S, check=False,
        )
        return done.stdout.strip()

    def stop(self, environ: Mapping[str, str]) -> None:
        """Quit the daemon (its servers exit once their clients have) and remove its folder."""
        try:
            self.control("quit", environ)
        except (OSError, subprocess.TimeoutExpired) as err:
            logger.warning("MPS: the control daemon did not quit cleanly (%s)", err)
        shutil.rmtree(self.folder, ignore_errors=True)
        logger.info("MPS: control daemon stopped")


def probe_client(environ: Mapping[str, str], binary: str) -> str | None:
    """Run a CUDA client in ``environ``; None when it joined an MPS server, else what went wrong.

    The server list is asked while the client's context lives: a server may leave with its last client.
    """
    try:
        done = subprocess.run(
            [sys.executable, "-c", PROBE_CODE, binary], env=dict(environ), capture_output=True, text=True,
            timeout=PROBE_TIMEOUT_S, check=False,
        )
    except subprocess.TimeoutExpired:
        return f"a CUDA client did not start within {PROBE_TIMEOUT_S:g} s"
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return f"a CUDA client failed: {lines[-1] if lines else f'exit code {done.returncode}'}"
    if not done.stdout.strip():
        return "a CUDA client ran but no MPS server came up for it (the driver or the GPU's compute mode refuses MPS)"
    return None


def gpu_uuids(environ: Mapping[str, str]) -> dict[str, str]:
    """``{index: uuid}`` of this machine's GPUs, from ``nvidia-smi``.

    Raises:
        MpsUnavailable: no ``nvidia-smi``, or it failed.
    """
    smi = shutil.which("nvidia-smi", path=environ.get("PATH"))
    if smi is None:
        raise MpsUnavailable("nvidia-smi is not on PATH, so CUDA_VISIBLE_DEVICES cannot be turned into GPU UUIDs")
    done = subprocess.run(
        [smi, "--query-gpu=index,uuid", "--format=csv,noheader"], capture_output=True, text=True,
        timeout=CONTROL_TIMEOUT_S, check=False,
    )
    if done.returncode != 0:
        raise MpsUnavailable(f"nvidia-smi failed: {done.stderr.strip()}")
    pairs = (line.split(",", 1) for line in done.stdout.splitlines() if "," in line)
    return {index.strip(): uuid.strip() for index, uuid in pairs}


def visible_as_uuids(environ: Mapping[str, str]) -> dict[str, str]:
    """``{CUDA_VISIBLE_DEVICES: uuids}`` when it lists indices (for the daemon and Ray alike), else ``{}``.

    Raises:
        MpsUnavailable: an index that no GPU has.
    """
    visible = environ.get(VISIBLE_ENV)
    if visible is None or visible.strip() == "":
        return {}
    entries = [entry.strip() for entry in visible.split(",") if entry.strip()]
    if all(entry.startswith(("GPU-", "MIG-")) for entry in entries):
        return {}
    uuids = gpu_uuids(environ)
    unknown = [entry for entry in entries if entry not in uuids]
    if unknown:
        raise MpsUnavailable(f"{VISIBLE_ENV}={visible} names GPU(s) {unknown} that nvidia-smi does not list")
    return {VISIBLE_ENV: ",".join(uuids[entry] for entry in entries)}


Probe = Callable[[Mapping[str, str], str], str | None]


def launch(binary: str, environ: Mapping[str, str], probe: Probe) -> MpsDaemon:
    """Start a control daemon in a private folder and check that a CUDA client joins it.

    Raises:
        MpsUnavailable: the daemon did not start, no client could run, or none joined.
    """
    folder = Path(tempfile.mkdtemp(prefix="gen3d-mps-"))
    (folder / "pipe").mkdir()
    (folder / "log").mkdir()
    try:
        client_env = {PIPE_ENV: str(folder / "pipe"), LOG_ENV: str(folder / "log"), **visible_as_uuids(environ)}
    except MpsUnavailable:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    daemon = MpsDaemon(binary, folder, client_env)
    try:
        started = subprocess.run(
            [binary, "-d"], env={**environ, **client_env}, capture_output=True, text=True,
            timeout=CONTROL_TIMEOUT_S, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        shutil.rmtree(folder, ignore_errors=True)
        raise MpsUnavailable(f"{binary} -d did not start: {err}") from err
    if started.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise MpsUnavailable(f"{binary} -d failed: {(started.stderr or started.stdout).strip()}")
    problem = probe({**environ, **client_env}, binary)
    if problem is not None:
        daemon.stop(environ)
        raise MpsUnavailable(f"{problem}; see the MPS log in {folder / 'log'} while it runs")
    return daemon


def start_mps(
    mode: MpsMode,
    uses_cuda: bool,
    environ: Mapping[str, str],
    probe: Probe | None = None,
) -> MpsDaemon | None:
    """Start MPS as ``mode`` asks; None when it is off or (``auto``) unavailable, said once in the log.

    Args:
        mode: the serve config's ``mps``.
        uses_cuda: whether the config puts any stage on CUDA.
        environ: the environment ``serve run`` will get (PATH finds the binary).
        probe: runs a CUDA client with the daemon's binary and says what failed; None: ``probe_client``.

    Raises:
        MpsUnavailable: ``mode`` is ``on`` and MPS cannot run here.
    """
    if mode == "off":
        return None
    binary = shutil.which(CONTROL_BINARY, path=environ.get("PATH"))
    reason = None
    if not uses_cuda:
        reason = "the config runs no stage on CUDA"
    elif binary is None:
        reason = f"{CONTROL_BINARY} is not on PATH (it comes with the NVIDIA driver's utilities)"
    daemon = None
    if reason is None:
        try:
            daemon = launch(binary, environ, probe or probe_client)
        except MpsUnavailable as err:
            reason = str(err)
    if daemon is not None:
        logger.info("MPS: control daemon up (pipes in %s)", daemon.client_env[PIPE_ENV])
        return daemon
    if mode == "on":
        raise MpsUnavailable(f"mps: on, but {reason}")
    logger.warning("MPS: not started (mps: auto): %s; the stages time-slice the card", reason)
    return None
