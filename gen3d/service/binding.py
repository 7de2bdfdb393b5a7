"""Where ``gen3d serve`` listens, and the rule that keeps an open port behind an API key.

Every shipped serve config binds 127.0.0.1. ``gen3d serve --host 0.0.0.0`` (what the container
image runs) opens the port to the network, and then the service must require ``X-API-Key``:
the key comes from ``GEN3D_API_KEY`` (or the config's Ingress ``user_config.api_key``), and
without one ``gen3d serve`` refuses to start unless told ``--allow-no-api-key``. Host, port or
key given on the command line or in the environment go into a private copy of the config
(mode 0600: it holds the key), which is what Serve then runs.
"""

import copy
import ipaddress
import os
from pathlib import Path
from typing import Any

import yaml

from gen3d.service.preflight import BUILDERS, PreflightError, gen3d_application

API_KEY_ENV = "GEN3D_API_KEY"
#: Where the private copies go: one file per config, host and port, replaced at every start.
PRIVATE_DIR = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "gen3d" / "serve"
LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) only listens on this machine."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # another host name: it may resolve to any interface
        return False


def ingress_api_key(config: dict[str, Any]) -> str | None:
    """The Ingress ``user_config.api_key`` of the config's gen3d application, or None."""
    for deployment in gen3d_application_of(config).get("deployments") or []:
        if deployment.get("name") == "Ingress":
            return (deployment.get("user_config") or {}).get("api_key")
    return None


def gen3d_application_of(config: dict[str, Any]) -> dict[str, Any]:
    """The gen3d application of an already-read serve config (see ``preflight.gen3d_application``)."""
    for app in config.get("applications") or []:
        if app.get("import_path") in BUILDERS:
            return app
    return {}


def with_overrides(config: dict[str, Any], host: str | None, port: int | None, api_key: str | None) -> dict[str, Any]:
    """A copy of ``config`` listening on ``host``:``port`` with the Ingress requiring ``api_key``.

    None leaves a setting as the config has it.
    """
    result = copy.deepcopy(config)
    http = result.setdefault("http_options", {})
    if host is not None:
        http["host"] = host
    if port is not None:
        http["port"] = port
    if api_key is not None:
        deployments = gen3d_application_of(result).setdefault("deployments", [])
        ingress = next((d for d in deployments if d.get("name") == "Ingress"), None)
        if ingress is None:
            ingress = {"name": "Ingress"}
            deployments.append(ingress)
        ingress.setdefault("user_config", {})["api_key"] = api_key
    return result


def check_exposure(config: dict[str, Any], allow_no_api_key: bool) -> None:
    """Refuse a config that listens beyond this machine with no API key, unless allowed explicitly.

    Raises:
        PreflightError: naming the host and the two ways forward.
    """
    host = str((config.get("http_options") or {}).get("host", "127.0.0.1"))
    if is_loopback(host) or ingress_api_key(config) or allow_no_api_key:
        return
    raise PreflightError(
        f"the service would listen on {host} (beyond this machine) without an API key: set {API_KEY_ENV} "
        "(or the Ingress user_config.api_key), or pass --allow-no-api-key if a firewall or proxy guards the port"
    )


def effective_config(
    config_path: Path, host: str | None, port: int | None, allow_no_api_key: bool, environ: dict[str, str]
) -> Path:
    """The config Serve should run: ``config_path`` itself, or its private copy with the overrides.

    Raises:
        PreflightError: as ``gen3d_application``, or ``check_exposure`` refuses.
    """
    gen3d_application(config_path)  # a clear error for a file that is not a gen3d serve config
    config = yaml.safe_load(config_path.read_text())
    api_key = environ.get(API_KEY_ENV) or None
    result = with_overrides(config, host, port, api_key)
    check_exposure(result, allow_no_api_key)
    if result == config:
        return config_path
    http = result["http_options"]
    target = PRIVATE_DIR / f"{config_path.stem}-{http.get('host', '127.0.0.1')}-{http.get('port', 8000)}.yaml"
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    target.unlink(missing_ok=True)
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        yaml.safe_dump(result, handle, sort_keys=False)
    return target
