"""Pretrained weights offline: fail in seconds, with the fix, when an arch's ImageNet weights are
neither in the local cache nor downloadable. Without this check timm's download retries for about a
minute before its own error, and a study turns it into an Optuna traceback.

Where the weights come from (checked against the installed packages): timm prefers the Hugging Face
Hub when the model's pretrained_cfg has an `hf_hub_id` (timm/models/_builder.py,
`_resolve_pretrained_source`), cached under huggingface_hub's HF_HUB_CACHE; otherwise its `url`,
cached by torch.hub under `<torch hub dir>/checkpoints/`. torchvision's weights are a URL cached the
same way (torchvision/models/_api.py, `WeightsEnum.get_state_dict` → `load_state_dict_from_url`).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from ..errors import KtError

PROBE_S = 3.0  # seconds to wait for the weights' host before calling the machine offline
HUB_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


def _torch_cached(url: str) -> bool:
    import torch.hub

    return (
        Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
    ).is_file()


def _source(arch: str) -> tuple[bool, str, str] | None:
    """(cached, host URL, cache folder) of an arch's pretrained weights; None when it has none."""
    if arch.startswith("tv:"):
        import torch.hub
        import torchvision

        url = torchvision.models.get_model_weights(arch.removeprefix("tv:")).IMAGENET1K_V1.url
        return _torch_cached(url), url, str(Path(torch.hub.get_dir()) / "checkpoints")
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        return None
    if cfg.hf_hub_id:
        from huggingface_hub import constants, try_to_load_from_cache

        repo = cfg.hf_hub_id.split("@")[0]
        names = (cfg.hf_hub_filename, *HUB_FILES) if cfg.hf_hub_filename else HUB_FILES
        cached = any(isinstance(try_to_load_from_cache(repo, n), str) for n in names)
        return cached, constants.ENDPOINT, constants.HF_HUB_CACHE
    import torch.hub

    return _torch_cached(cfg.url), cfg.url, str(Path(torch.hub.get_dir()) / "checkpoints")


def reachable(url: str, timeout: float = PROBE_S) -> bool:
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def check_pretrained(arch: str) -> None:
    """Raise a one-line KtError when `arch`'s pretrained weights are not cached and their host does not
    answer; return at once when they are cached."""
    source = _source(arch)
    if source is None or source[0]:
        return
    _, url, cache = source
    if not reachable(url):
        host = urlparse(url).hostname
        raise KtError(
            f"--arch {arch}: its pretrained weights are not in the cache ({cache}) and {host} does not "
            "answer (offline?): train with --no-pretrained, pass --weights FILE (a state dict fetched "
            "elsewhere), or fill the cache on a machine with internet"
        )
