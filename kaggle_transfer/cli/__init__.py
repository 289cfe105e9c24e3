"""`kt`: the command line. One module per command family, each registered here with add_command.

A command parses its flags, calls one library function and prints where the outputs went. Heavy
imports (torch, timm, onnxruntime, kaggle) live inside the command bodies, so `kt --help` is
instant and needs no GPU and no credentials. Nothing in the library imports this package.
"""

from __future__ import annotations

import click

from . import kaggle, lr_find, predict, results, study, train
from .common import KtGroup


@click.group(
    cls=KtGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}
)
@click.version_option(package_name="kaggle_transfer")
def main() -> None:
    """kaggle_transfer: from a Kaggle image competition's files to a validated submission.

    \b
    kt train aptos --data-dir DIR --arch resnet50 --size 512 --pool gem --loss l1
    kt export runs/aptos/<run-id>
    kt predict aptos runs/aptos/*/model.onnx --data-dir DIR --tta flip
    kt validate aptos submissions/aptos/<stamp>_<label>/submission.csv --data-dir DIR
    """


for family in (train, lr_find, predict, results, kaggle, study):
    for command in family.COMMANDS:
        main.add_command(command)

if __name__ == "__main__":
    main()
