"""CLI of the evaluation suite.

Examples::

    python -m eval generative --ckpt checkpoints/prior_default.pt --ref synthetic:seed=123 \\
        --n 10000 --runs 5 --out report/ [--no-apg] [--cfg-weight 0] [--mode parallel]
    python -m eval train-features --config configs/eval_features.yaml \\
        --out checkpoints/features_default.pt
    python -m eval recon --config configs/eval.yaml [--set ...]

Each subcommand's module is imported only when that subcommand runs.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "generative": "eval.cli_generative",
    "train-features": "eval.cli_generative",
    "recon": "eval.cli_recon",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__, file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)  # noqa: T201
        if argv and argv[0] not in ("-h", "--help"):
            print(f"error: unknown command {argv[0]!r}; use one of {sorted(COMMANDS)}", file=sys.stderr)  # noqa: T201
            return 2
        return 0 if argv else 2
    module = importlib.import_module(COMMANDS[argv[0]])
    if argv[0] == "train-features":
        return module.main_train_features(argv[1:])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
