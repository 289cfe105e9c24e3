"""The competition registry: a plain dict. Adding a contest = one adapter file + one recipe folder."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from ..errors import KtError
from . import kaggle_input
from .aptos import APTOS
from .base import Competition
from .cassava import CASSAVA
from .cct20 import CCT20
from .custom import check_spec, from_spec, load_spec
from .eurosat import EUROSAT
from .hpa import HPA
from .siim_isic import SIIM_ISIC

COMPETITIONS: dict[str, Competition] = {
    c.name: c for c in (APTOS, HPA, SIIM_ISIC, CASSAVA, CCT20, EUROSAT)
}
CUSTOM: dict[str, Competition] = {}  # competitions described by a YAML, registered when first read


def is_yaml(name: str) -> bool:
    return str(name).endswith((".yaml", ".yml"))


def register(spec: dict) -> Competition:
    """Register a YAML-described competition (from its file or from an ONNX file's metadata)."""
    spec = check_spec(spec, f"competition {spec.get('name', '?')}")
    if spec["name"] in COMPETITIONS:
        raise KtError(
            f"competition file: name {spec['name']!r} is a built-in competition; choose another name"
        )
    CUSTOM[spec["name"]] = from_spec(spec)
    return CUSTOM[spec["name"]]


def get(name: str) -> Competition:
    """A built-in by name, a registered custom one, or a competition YAML by path."""
    if is_yaml(name):
        comp = register(load_spec(name))
        comp.spec_file = str(Path(name).resolve())
        return comp
    if name in COMPETITIONS:
        return COMPETITIONS[name]
    if name in CUSTOM:
        return CUSTOM[name]
    if name == "custom":
        raise KtError(
            "'custom' stands for a competition YAML: pass the YAML's path in its place (kt train FILE.yaml)"
        )
    close = difflib.get_close_matches(name, list(COMPETITIONS) + list(CUSTOM), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise KtError(
        f"unknown competition {name!r}{hint}; valid: {', '.join(COMPETITIONS)}, or a competition "
        "YAML (kt competitions explains it)"
    )


def for_config(cfg) -> Competition:
    """The adapter a run config (or ONNX recipe) means, with its reading options applied."""
    as_dict = cfg if isinstance(cfg, dict) else cfg.to_dict()
    name = as_dict["competition"]
    if name not in COMPETITIONS and name not in CUSTOM and as_dict.get("competition_file"):
        get(as_dict["competition_file"])
    return get(name).configure(
        keep_empty=as_dict.get("keep_empty", False),
        per_annotation=as_dict.get("per_annotation", False),
    )


def for_model(meta: dict) -> Competition:
    """The adapter a model file's metadata means: its `competition` (a YAML one is registered from its
    competition_spec when the model loads) with the recipe's reading options. A path in the metadata
    (recipe.competition_file) is never followed: a model file must not make kt read a YAML elsewhere."""
    recipe = meta.get("recipe") if isinstance(meta.get("recipe"), dict) else {}
    return get(meta["competition"]).configure(
        keep_empty=bool(recipe.get("keep_empty", False)),
        per_annotation=bool(recipe.get("per_annotation", False)),
    )


def default_data_dir(comp: Competition) -> Path:
    """Where `kt download` puts a competition's files: $KT_DATA/<name>, else data/<name>."""
    return Path(os.environ.get("KT_DATA") or "data") / comp.name


def find_external_dirs(
    comp: Competition, sources: list[str], given: dict[str, str]
) -> dict[str, str]:
    """The folder of each named external source (`--external dr2015`): --external-dir NAME=DIR, else
    $KT_DATA/<name> or data/<name>, beside the competition's own files. Checked before any run folder
    exists; `pseudo=FILE` tables need none. Folders given for sources not used are kept (harmless)."""
    out = dict(given)
    named = [s for s in sources if not s.startswith("pseudo=")]
    known = ", ".join(comp.external) if comp.external else "none"
    for source in named:
        if source not in comp.external:
            raise KtError(
                f"--external {source}: {comp.name} has no external source of that name (its sources: "
                f"{known}; or pseudo=FILE from kt pseudo)"
            )
    if len(set(named)) < len(named):
        twice = sorted({s for s in named if named.count(s) > 1})
        raise KtError(f"--external {', '.join(twice)} is given twice; its rows would train twice")
    unused = sorted(set(given) - set(named) - ({"pseudo"} if len(named) < len(sources) else set()))
    if unused:
        raise KtError(
            f"--external-dir {unused[0]}=…: the run uses no source {unused[0]!r} (add --external "
            f"{unused[0]}, or drop the folder)"
        )
    for source in named:
        if source in out:
            continue
        default = Path(os.environ.get("KT_DATA") or "data") / source
        if not default.is_dir():
            raise KtError(
                f"--external {source}: no folder for it (looked in {default}); pass --external-dir "
                f"{source}=DIR or put its files in {default} ({comp.name}'s sources: {known})"
            )
        out[source] = str(default)
    for source, folder in out.items():
        if not Path(folder).is_dir():
            raise KtError(f"--external-dir {source}={folder}: no such folder")
    return out


def find_data_dir(comp: Competition, given: str | Path | None) -> Path:
    """--data-dir, else $KT_DATA/<name>, else data/<name>, else a YAML's own folder, else the folder a
    Kaggle notebook mounts under /kaggle/input (either layout, or found by its marker files)."""
    if given:
        path = Path(given)
        if not path.is_dir():
            raise KtError(
                f"--data-dir {path} does not exist; kt download {comp.name} fetches the files"
            )
        return path
    candidates = [default_data_dir(comp)] + (
        [Path("data") / comp.name] if os.environ.get("KT_DATA") else []
    )
    if comp.spec_file:  # a competition YAML kept beside its data
        candidates.append(Path(comp.spec_file).parent)
    for path in candidates:
        if path.is_dir():
            return path
    if comp.kaggle.slug and (
        found := kaggle_input.find(comp.kaggle.slug, kaggle_input.KAGGLE_INPUT)
    ):
        return found[0]
    looked = candidates + (kaggle_input.known_paths(comp.kaggle.slug) if comp.kaggle.slug else [])
    if (
        comp.kaggle.slug and kaggle_input.KAGGLE_INPUT.is_dir()
    ):  # inside a notebook: no flags, no internet
        raise KtError(
            f"no data for {comp.name}: the competition {comp.kaggle.slug} is not attached (looked in "
            f"{', '.join(map(str, looked))}); add it to the notebook's inputs, or name the folder with "
            "KT_BUNDLE_DATA (--data-dir)"
        )
    raise KtError(
        f"no data for {comp.name}: looked in {', '.join(map(str, looked))}; "
        f"pass --data-dir DIR or run kt download {comp.name}"
    )
