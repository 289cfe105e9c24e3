"""`kt` as users run it: help without heavy imports, the whole flow, and one-line user errors."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from kaggle_transfer.cli import main


def kt(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "kaggle_transfer", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["predict", "--help"], ["competitions"]])
def test_help_imports_neither_torch_nor_kaggle(argv):
    # help needs no data library at all (it once pulled pandas in through the Kaggle commands: 0.55 s)
    heavy = ("torch", "kaggle", "timm", "onnxruntime") + (("pandas", "sklearn") if "--help" in argv else ())
    code = ("import sys; from kaggle_transfer.cli import main\n"
            f"try: main({argv!r})\nexcept SystemExit as e: assert not e.code, e.code\n"
            f"heavy = [m for m in {heavy!r} if m in sys.modules]\n"
            "assert not heavy, heavy")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "aptos" in out.stdout or "Usage" in out.stdout


@pytest.mark.slow
def test_the_readme_flow_train_export_predict_validate(aptos_dir, tmp_path):
    runs = tmp_path / "runs"
    out = kt("train", "aptos", "--data-dir", aptos_dir, "--arch", "test_resnet", "--no-pretrained", "--size", 32,
             "--pool", "gem", "--loss", "l1", "--epochs", 1, "--workers", 1, "--runs-root", runs, "--no-progress",
             "--set", "batch_size=16")
    assert out.returncode == 0, out.stderr
    run_dir = next((runs / "aptos").iterdir())
    assert "best qwk" in out.stdout and f"kt export {run_dir}" in out.stdout
    cfg = (run_dir / "config.yaml").read_text()
    assert "loss: l1" in cfg and "pool: gem" in cfg and "batch_size: 16" in cfg
    out = kt("export", run_dir)
    assert out.returncode == 0, out.stderr
    assert "max |onnx - torch|" in out.stdout
    out = kt("predict", "aptos", runs / "aptos" / "*" / "model.onnx", "--data-dir", aptos_dir, "--tta", "flip",
             "--out-root", tmp_path / "subs", "--no-progress")
    assert out.returncode == 0, out.stderr
    csv = next((tmp_path / "subs" / "aptos").glob("*/submission.csv"))
    assert (csv.parent / "manifest.json").is_file()
    out = kt("validate", "aptos", csv, "--data-dir", aptos_dir)
    assert out.returncode == 0 and "valid aptos submission: 30 rows" in out.stdout


def _error(args):
    runner = CliRunner()
    with runner.isolated_filesystem():  # relative paths in args land in a temp folder, never the checkout
        result = runner.invoke(main, [str(a) for a in args])
    assert result.exit_code == 2, (result.output, result.exception)
    lines = [line for line in result.output.splitlines() if line.strip()]
    return lines


@pytest.mark.parametrize("args, message", [
    (["train", "kaggle-cats"], "unknown competition 'kaggle-cats'"),
    # relative to the isolated folder the runner works in: it exists nowhere
    (["train", "aptos", "--data-dir", "no-such-folder"], "--data-dir no-such-folder does not exist"),
    (["train", "aptos", "--arch", "resnet5O", "--data-dir", "."], "unknown --arch 'resnet5O'"),
    (["train", "aptos", "--set", "szie=64", "--data-dir", "."], "unknown config key 'szie'"),
    (["train", "aptos", "-c", "missing.yaml"], "recipe missing.yaml not found"),
    (["train", "--resume", "/tmp"], "not a run folder made by kt train (--resume) (no config.yaml)"),
    (["export", "/tmp"], "not a run folder"),
    (["validate", "aptos", "missing.csv", "--data-dir", "."], "missing.csv not found"),
    (["predict", "aptos", "nope.onnx", "--data-dir", "."], "model nope.onnx not found"),
    (["demo", "forest.yaml"], "choose one of aptos, hpa, siim_isic, cassava, cct20, eurosat, digits"),
])
def test_user_errors_are_one_line_and_exit_2(args, message):
    lines = _error(args)
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_unknown_arch_error_is_raised_before_training(aptos_dir, tmp_path):
    lines = _error(["train", "aptos", "--data-dir", aptos_dir, "--arch", "resnet5O", "--runs-root", tmp_path])
    assert "close matches" in lines[0]


@pytest.mark.slow
def test_corrupt_image_inside_a_loader_worker_is_named(aptos_copy, tmp_path):
    victim = sorted((aptos_copy / "train_images").iterdir())[3]
    victim.write_bytes(b"garbage")
    out = kt("train", "aptos", "--data-dir", aptos_copy, "--arch", "test_resnet", "--no-pretrained", "--size", 32,
             "--epochs", 1, "--workers", 1, "--runs-root", tmp_path, "--no-progress")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("error: image ")
    assert victim.name in out.stderr and "Traceback" not in out.stderr


def test_invalid_submission_is_refused(aptos_dir, tmp_path):
    sample = pd.read_csv(aptos_dir / "sample_submission.csv")
    sample.iloc[:-1].to_csv(tmp_path / "s.csv", index=False)
    lines = _error(["validate", "aptos", tmp_path / "s.csv", "--data-dir", aptos_dir])
    assert "not a valid aptos submission" in lines[0] and "missing" in lines[0]


def test_competitions_lists_the_registry():
    result = CliRunner().invoke(main, ["competitions"])
    assert result.exit_code == 0 and "aptos" in result.output and "qwk" in result.output


@pytest.mark.slow
def test_demo_at_small_scale(tmp_path):
    from kaggle_transfer.training.demo import run_demo

    lines = []
    result = run_demo("aptos", tmp_path, epochs=1, progress=False, echo=lines.append, n_train=80, n_test=20)
    assert [r[0] for r in result["rows"]] == ["test_resnet@32", "test_resnet@48", "ensemble (mean, flip TTA)"]
    assert all(-1 <= cv <= 1 and -1 <= test <= 1 for _, cv, test in result["rows"])
    assert Path(result["submission"]).is_file() and len(result["models"]) == 2
    assert any("submission (validated)" in line for line in lines)


@pytest.mark.slow
def test_kt_demo_eurosat(tmp_path):
    """The paper's sixth dataset end to end through the CLI, on synthetic patches in EuroSAT's layout."""
    result = CliRunner().invoke(main, ["demo", "eurosat", "--workdir", str(tmp_path), "--epochs", "2",
                                       "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "eurosat" / "2750" / "SeaLake").is_dir()
    rows = [line.split() for line in result.output.splitlines() if line.startswith("test_resnet@")]
    assert len(rows) == 2 and all(float(r[-1]) > 0.3 for r in rows)  # chance is 0.1 with ten classes
    assert "submission (validated)" in result.output


def test_renamed_flags_keep_their_old_spellings_out_of_help():
    """One name per idea: -o/--out for output paths and --name for a folder's name; the old spellings
    (--out-root, --dest, --label) still run users' scripts but are no longer offered."""
    from kaggle_transfer.cli import main

    for command, new, old in ((["predict"], ["-o, --out", "--name"], ["--out-root", "--label"]),
                              (["download"], ["-o, --out"], ["--dest"]),
                              (["train"], ["--name"], ["--label TEXT"]),
                              (["pseudo"], ["--threads"], ["--workers"]),
                              (["prepare"], ["--processes"], ["--workers"]),
                              (["study", "run"], ["--parallel", "--progress"], ["--workers"]),
                              (["export"], ["--progress"], []), (["average"], ["--progress"], [])):
        out = CliRunner().invoke(main, [*command, "--help"])
        assert out.exit_code == 0
        assert all(n in out.output for n in new) and not any(o in out.output for o in old), out.output


@pytest.mark.parametrize("flag", ["--progress", "--no-progress"])
def test_a_redirected_log_reads_one_line_per_epoch(aptos_dir, tmp_path, flag):
    """Written to a file (not a terminal), kt train prints one plain line per epoch, with or without
    --progress, and no carriage-return frames of a progress bar."""
    out = subprocess.run(
        [sys.executable, "-m", "kaggle_transfer", "train", "aptos", "--data-dir", str(aptos_dir), "--arch",
         "test_resnet", "--no-pretrained", "--size", "32", "--epochs", "2", "--workers", "0", "--runs-root",
         str(tmp_path), flag], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    log = out.stdout + out.stderr
    assert "\r" not in log
    epochs = [line for line in out.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"]
    assert all(" qwk " in line and " lr " in line and "img/s" in line and "ETA" in line for line in epochs)


def test_train_help_is_grouped_with_kts_defaults_and_timms_short_flags(aptos_dir, tmp_path):
    """kt train --help lists its options under the config's sections, each config flag with kt's own
    default (RunConfig's), and timm's spellings (-b, -j, --sched, --weight-decay, --warmup-epochs,
    --drop-path) set the keys they name; the run prints what differs from the defaults first."""
    import dataclasses

    from kaggle_transfer import config
    from kaggle_transfer.cli.common import KeyOption
    from kaggle_transfer.cli.train import train

    text = CliRunner().invoke(main, ["train", "--help"], terminal_width=200).output
    heads = [line for line in text.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert heads == ["Recipe:", "Data:", "Model:", "Optimisation:", "Augmentation:", "Interventions:",
                     "Evaluation:", "Runtime:", "Output:", "Other:"]
    keyed = [p for p in train.params if isinstance(p, KeyOption)]
    assert len(keyed) >= 39
    for p in keyed:
        f = config.FIELDS[p.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if default not in (None, []):
            shown = {True: "on", False: "off"}.get(default, default) if isinstance(default, bool) else default
            assert f"[default: {shown}]" in p.help, p.name
        section = text.split(f"{p.section.capitalize()}:", 1)[1].split("\n\n", 1)[0]
        assert p.opts[-1] in section, (p.name, p.section)
    assert "-b, --batch-size" in text and "-j, --workers" in text and "[default: 32]" in text
    flags = {o for p in train.params for o in (*p.opts, *p.secondary_opts)}
    earlier = """-c --recipe --data-dir --arch --size --pool --loss --epochs --batch-size --lr --optimizer --augment
        --protocol --external --external-dir --mix --mix-prob --mix-alpha --init --teacher --distill-alpha
        --pretrained --no-pretrained --weights --split --split-file --folds --seeds --fold --seed --device --amp
        --workers --tta --label-smoothing --ema --no-ema --layer-decay --accum-steps --freeze-epochs --lp-ft
        --compile --no-compile --track --set --runs-root --name --label --resume --skip-bad-images --progress
        --no-progress --list-keys""".split()
    assert set(earlier) <= flags, set(earlier) - flags  # users' scripts keep working
    out = CliRunner().invoke(main, [
        "train", "aptos", "--data-dir", str(aptos_dir), "--arch", "test_resnet", "--no-pretrained",
        "--size", "32", "--epochs", "1", "-b", "8", "-j", "0", "--sched", "step", "--weight-decay", "0.01",
        "--warmup-epochs", "1", "--dropout", "0.1", "--drop-path", "0.1", "--runs-root", str(tmp_path),
        "--set", "max_steps=1", "--no-progress"])
    assert out.exit_code == 0, out.output
    first = out.output.splitlines()[0]
    assert first.startswith("config: ") and "batch_size=8" in first and "schedule=step" in first
    assert "lr=" not in first.split()  # unchanged keys are not listed
    cfg = config.load(next((tmp_path / "aptos").iterdir()) / "config.yaml")
    assert (cfg.batch_size, cfg.workers, cfg.schedule, cfg.weight_decay, cfg.warmup_epochs, cfg.dropout,
            cfg.drop_path) == (8, 0, "step", 0.01, 1, 0.1, 0.1)


def test_old_flag_spellings_still_run(aptos_dir, tmp_path):
    """Scripts written for the old names keep working: prepare --workers is --processes."""
    out = CliRunner().invoke(main, ["prepare", "aptos", "--data-dir", str(aptos_dir), "--size", "32",
                                    "--cache-dir", str(tmp_path), "--workers", "1", "--no-progress"])
    assert out.exit_code == 0 and "cached" in out.output, out.output


def test_a_gpu_provider_on_a_machine_without_one_is_one_line(trained_run, tmp_path):
    """--provider cuda where there is no NVIDIA GPU (this machine): one line naming the fix, not
    onnxruntime's log lines and a silent CPU run."""
    from kaggle_transfer.inference.session import _gpu_present

    if _gpu_present():
        pytest.skip("this machine has a GPU")
    out = CliRunner().invoke(main, ["export", str(trained_run), "-o", str(tmp_path / "m.onnx")])
    assert out.exit_code == 0, out.output
    for provider in ("cuda", "tensorrt"):
        out = CliRunner().invoke(main, ["predict", "aptos", str(tmp_path / "m.onnx"), "--provider", provider,
                                        "-o", str(tmp_path / "subs"), "--no-progress"])
        assert out.exit_code == 2 and out.output.count("\n") == 1, out.output
        assert f"--provider {provider}: this machine has no NVIDIA GPU" in out.output
    out = CliRunner().invoke(main, ["predict", "aptos", str(tmp_path / "m.onnx"), "--provider", "gpu"])
    assert out.exit_code == 2 and "'auto', 'cuda', 'tensorrt', 'cpu'" in out.output


@pytest.mark.parametrize("argv, says", [
    (["ensemble", "aptos", "x", "--test-images", "0"], "Invalid value for '--test-images': 0 is not in the range"),
    (["ensemble", "aptos", "x", "--target", "tpu"], "'tpu' is not one of 'here', 'kaggle-cpu'"),
    (["ensemble"], "Missing argument 'COMPETITION'"),
    (["train", "aptos", "--bogus"], "No such option '--bogus'"),
    (["nosuch"], "No such command 'nosuch'"),
])
def test_what_click_refuses_is_one_error_line_too(argv, says):
    out = CliRunner().invoke(main, argv)
    assert out.exit_code == 2 and out.output.count("\n") == 1, out.output
    assert out.output.startswith("error: ") and says in out.output and "--help)" in out.output
