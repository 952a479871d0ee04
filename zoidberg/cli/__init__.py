"""Command line: python -m zoidberg {demo-data,folds,audit,holdout,cv,tune,runs,resume,stop,predict,evaluate,operating-point}."""

from zoidberg.cli.main import build_parser, main
from zoidberg.cli.run_configs import config_from_args

__all__ = ["build_parser", "config_from_args", "main"]
