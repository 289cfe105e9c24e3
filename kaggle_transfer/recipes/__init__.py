"""The recipes kt ships, as package data: `<competition>/<name>.yaml` (what we try: `paper` is the
study's baseline, `top` the winners' interventions) and `<competition>/README.md` (the paper's and
the winners' numbers, with sources). `kt train NAME -c top` finds them by name from any folder."""

from __future__ import annotations

from pathlib import Path

from ..errors import KtError

ROOT = Path(__file__).resolve().parent


def available(competition: str) -> dict[str, str]:
    """The competition's shipped recipes: name → its one-line purpose (the YAML's first comment)."""
    folder = ROOT / competition
    out = {}
    for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
        if path.name.startswith("_"):  # _next.yaml: kt next's evidence, not a recipe
            continue
        head = []
        for line in path.read_text().splitlines():
            if not line.startswith("#"):
                break
            head.append(line.lstrip("# ").strip())
        text = " ".join(head)
        out[path.stem] = text.split(": ")[0].split(". ")[0].split(" (")[0][:90]
    return out


def is_name(recipe: str) -> bool:
    """`top`, `paper`: a shipped recipe's name rather than a path."""
    return "/" not in recipe and "\\" not in recipe and not recipe.endswith((".yaml", ".yml"))


def resolve(competition: str, recipe: str) -> Path:
    """`-c RECIPE`: a shipped recipe of the competition by name, else a YAML path as given."""
    if not is_name(recipe):
        return Path(recipe)
    names = available(competition)
    if recipe not in names:
        offer = ", ".join(names) if names else "none ship with kt for it"
        raise KtError(
            f"-c {recipe}: no recipe of that name for {competition} ({offer}); pass a name or a "
            "YAML file's path"
        )
    return ROOT / competition / f"{recipe}.yaml"
