"""The notebook script a bundle carries (`kt_predict.py`): constant code, and one JSON literal of settings.

Nothing a user wrote (a competition's title, a YAML field, a file name) is pasted into the code: the
settings are `json.dumps` text embedded with `repr`, read by `json.loads` when the script runs, and the
rest comes from `bundle.json` at run time. The script finds its bundle under /kaggle/input by the
`bundle.json` that names its dataset (either mount layout), installs the wheels that match the running
interpreter into a temp folder (never /kaggle/working), and calls kt's torch-free prediction.
"""

from __future__ import annotations

import json
from typing import Any

SCRIPT = r'''"""kt offline prediction, made by `kt bundle`: internet off, no torch. Settings are data, below."""
import atexit, json, os, re, shutil, subprocess, sys, tempfile
from pathlib import Path

SETTINGS = json.loads(__KT_SETTINGS__)
INPUT = Path("/kaggle/input")
PY = f"{sys.version_info[0]}.{sys.version_info[1]}"


def say(line):
    print("kt:", line, flush=True)


def stop(line):
    sys.exit("kt: " + line)


def describes(folder, marker, dataset, build):
    """Does folder/marker name `dataset` (and, when given, this build of it)? None: another build."""
    try:
        record = json.loads((Path(folder) / marker).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or record.get("dataset") != dataset:
        return False
    return True if not build or record.get("bundle_id") == build else None


OTHERS = []  # folders holding another build of the bundle: named in the error when this build is absent


def search(marker, dataset, build, depth=4):
    """The folder under /kaggle/input, breadth first, whose `marker` names `dataset` (this build)."""
    level = [INPUT]
    for _ in range(depth + 1):
        below = []
        for folder in level:
            found = describes(folder, marker, dataset, build)
            if found:
                return folder
            if found is None:
                OTHERS.append(folder)
            try:
                with os.scandir(folder) as entries:
                    subs = sorted(Path(e.path) for e in entries if e.is_dir())
            except OSError:
                continue
            below += subs if len(subs) <= 200 else []  # image folders are not searched
        level = below
    return None


def locate(marker, dataset, override=None, build=None):
    here = Path(globals().get("__file__") or ".").resolve().parent
    for folder in (override, here):
        if folder and describes(folder, marker, dataset, build):
            return Path(folder)
    return search(marker, dataset, build)


def fits(wheel):
    """Does a wheel's file name install on this interpreter (py3, cpXY or an abi3 at most XY)?"""
    parts = wheel.name[:-4].split("-")
    for tag in parts[-3].split("."):
        cp = re.fullmatch(r"cp(\d)(\d+)", tag)
        if tag in ("py3", "py" + PY.replace(".", "")) or (cp and cp[1] == PY[0] and (
                cp[2] == PY.split(".")[1] or (parts[-2] == "abi3" and int(cp[2]) <= int(PY.split(".")[1])))):
            return True
    return False


BUNDLE = locate("bundle.json", SETTINGS["dataset"], os.environ.get("KT_BUNDLE_DIR"), SETTINGS.get("bundle_id"))
if BUNDLE is None:
    other = f"; {OTHERS[0]} holds another build of it: attach the version pushed with this notebook" if OTHERS \
        else ""
    stop(f"the bundle dataset {SETTINGS['dataset']} is not attached (no bundle.json of this build within four "
         f"levels under {INPUT}){other}: add it to the notebook's inputs, or push it again with kt submit")
say(f"bundle: {BUNDLE}")
folders = [BUNDLE]
if SETTINGS.get("runtime"):
    RUNTIME = locate("kt_runtime.json", SETTINGS["runtime"], os.environ.get("KT_RUNTIME_DIR"))
    if RUNTIME is None:
        stop(f"the runtime dataset {SETTINGS['runtime']} is not attached (no kt_runtime.json naming it under "
             f"{INPUT}): add it to the notebook's inputs, or push again with kt submit")
    say(f"runtime: {RUNTIME}")
    folders.append(RUNTIME)
wheels = sorted({w.name: w for f in folders for w in f.glob("*.whl")}.values(), key=lambda w: w.name)
runtimes = [w for w in wheels if w.name.startswith("onnxruntime")]
if runtimes and not any(fits(w) for w in runtimes):
    stop(f"cannot install {runtimes[0].name} on Python {PY}: the bundle has no onnxruntime wheel for Python {PY} "
         f"(it carries {', '.join(w.name.split('-')[2] for w in runtimes)}); rebuild the bundle with "
         f"kt bundle --python {PY}")
# wheels and the predictions go to one temp folder, not /kaggle/working: they must not become the notebook's
# output, and the folder is removed when the script ends (a run outside Kaggle leaves nothing in /tmp)
SCRATCH = Path(tempfile.mkdtemp(prefix="kt-notebook-"))
atexit.register(shutil.rmtree, SCRATCH, ignore_errors=True)
SITE = Path(os.environ.get("KT_SITE") or SCRATCH / "site")
OUT = Path(os.environ.get("KT_BUNDLE_OUT") or "/kaggle/working")
for wheel in [w for w in wheels if fits(w)]:
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                           "--target", str(SITE), str(wheel)], capture_output=True, text=True)
    if done.returncode:
        reason = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
        stop(f"cannot install {wheel.name} on Python {PY} ({reason}); rebuild the bundle with "
             f"kt bundle --python {PY}")
sys.path.insert(0, str(SITE))

import kaggle_transfer  # noqa: E402
from kaggle_transfer.errors import KtError  # noqa: E402
from kaggle_transfer.inference.bundle_run import run  # noqa: E402

say(f"kaggle_transfer {kaggle_transfer.__version__} from {Path(kaggle_transfer.__file__).parent}")
try:
    csv = run(BUNDLE, os.environ.get("KT_BUNDLE_DATA"), SCRATCH / "submissions",
              echo=say, cpu_fallback=bool(SETTINGS.get("cpu_fallback")))
except KtError as e:
    stop(str(e))
shutil.copy(csv.parent / "manifest.json", OUT / "kt_manifest.json")  # what ran: models, provider, timings
shutil.copy(csv, OUT / "submission.csv")
say(f"wrote {OUT / 'submission.csv'}")
'''


def render(settings: dict[str, Any]) -> str:
    """The script with `settings` embedded as a JSON string literal (repr of json.dumps: never code)."""
    return SCRIPT.replace("__KT_SETTINGS__", repr(json.dumps(settings, sort_keys=True)), 1)
