"""Where the YuNet model comes from: one lookup for `facecap detector`, `facecap detect` and the demo.

In order: the configuration's detection.modelPath (the detector only), `--model`, FACECAP_MODEL (the
Greengrass recipe sets it to the model's artifact), FACECAP_SHARED/models/<MODEL_FILE> (a development
checkout), a copy in the cache (XDG_CACHE_HOME or ~/.cache, then facecap/). A path given by one of the first
three must exist. When none is found, `facecap detect` and the demo fetch the model once into the cache
from its pinned URL, checking its sha256 as the component build does; offline, or for the detector
component, the detector falls back to Haar and says so.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..release import MODEL_FILE, MODEL_URL, MODEL_URL_ENV, download_verified
from ..validation import file_problem
from .config import MODEL_ENV

log = logging.getLogger(__name__)

SHARED_ENV = "FACECAP_SHARED"


@dataclass(frozen=True)
class ModelChoice:
    """The model file ("" when there is none: Haar) and the key, flag or place it came from."""

    path: str
    origin: str


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if env is None else env
    base = environ.get("XDG_CACHE_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".cache")
    return Path(base) / "facecap"


def find_model(configured: str = "", cli_model: str | None = None, env: Mapping[str, str] | None = None,
               *, download: bool = False, notify: Callable[[str], None] | None = None) -> ModelChoice:
    """The model to use (see the module's text). Raises ConfigError when a given path does not exist."""
    environ = os.environ if env is None else env
    for origin, value in (("detection.modelPath", configured), ("--model", cli_model or ""),
                          (MODEL_ENV, environ.get(MODEL_ENV, ""))):
        if value:
            path = Path(value).expanduser()
            problem = file_problem(str(path), "YuNet model file")
            if problem:
                raise ConfigError("detector", [(origin, problem)],
                                  hint="give the path of the model, or leave it empty to use Haar")
            return ModelChoice(str(path), origin)
    candidates = [(Path(environ[SHARED_ENV]) / "models" / MODEL_FILE, SHARED_ENV)] if environ.get(SHARED_ENV) else []
    candidates.append((cache_dir(environ) / MODEL_FILE, "the cache"))
    for path, origin in candidates:
        if path.is_file():
            return ModelChoice(str(path), origin)
    if download:
        return fetch_model(environ, notify or log.warning)
    return ModelChoice("", "")


def fetch_model(env: Mapping[str, str], notify: Callable[[str], None]) -> ModelChoice:
    """Download the model into the cache once; ModelChoice("", "") when that fails (offline)."""
    url = env.get(MODEL_URL_ENV) or MODEL_URL
    target = cache_dir(env) / MODEL_FILE
    notify(f"no YuNet model found: downloading it once from {url} into {target}")
    try:
        download_verified(url, target, timeout=30)
    except (OSError, ValueError) as exc:
        notify(f"cannot download the YuNet model ({exc}): using Haar, which finds fewer faces — pass --model "
               f"PATH or set {MODEL_ENV} to use YuNet offline")
        return ModelChoice("", "")
    return ModelChoice(str(target), "the cache")
