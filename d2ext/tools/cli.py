"""What every d2ext tool shares: the arguments that load a config, and how errors end the tool.

A tool is ``d2ext/tools/<name>.py`` with ``main(argv=None)`` decorated by :func:`command`, a
console script ``d2ext-<name>`` (setup.py) and a thin ``tools/<name>.py`` for a checkout.
"""

import functools
import logging
import os
import sys
import warnings

from d2ext.errors import D2extError

DEBUG_ENV = "D2EXT_DEBUG"


def add_config_arguments(
    parser, opts_help: str = "config overrides (KEY VALUE ... for yaml, key=value for .py)"
):
    """--config-file, --allow-unsafe-yaml and --debug; the caller adds its own ``opts``."""
    parser.add_argument(
        "--config-file", required=True, metavar="FILE", help="a yaml or lazy (.py) config"
    )
    add_safety_arguments(parser)
    return parser


def add_safety_arguments(parser):
    """--allow-unsafe-yaml and --debug, for tools whose parser names the config otherwise
    (Detectron2's default_argument_parser)."""
    parser.add_argument(
        "--allow-unsafe-yaml",
        action="store_true",
        help="let yaml configs use python tags (yaml.unsafe_load: the file can run code; only for files you trust)",
    )
    return add_debug_argument(parser)


def add_debug_argument(parser):
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show the traceback of an error on bad input (also {DEBUG_ENV}=1)",
    )
    return parser


def config_from_args(args, on_loaded=None):
    """The config a tool's arguments name: their datasets registered (--coco-dataset, ...),
    --config-file and its overrides loaded (d2ext.config.load_config, with --allow-unsafe-yaml),
    ``on_loaded(cfg)`` called (e.g. to set up logging in the config's output folder), then
    --train-dataset / --test-dataset and the class count they imply applied. Not frozen."""
    from d2ext.config import load_config
    from d2ext.data.registration import apply_dataset_arguments, register_from_args

    register_from_args(args)
    cfg = load_config(
        args.config_file, args.opts, allow_unsafe_yaml=getattr(args, "allow_unsafe_yaml", False)
    )
    if on_loaded is not None:
        on_loaded(cfg)
    return apply_dataset_arguments(cfg, args)


class _DropMessage(logging.Filter):
    """Drops the log records whose message starts with ``prefix``."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


_FX_TRACING_NOTE = _DropMessage("is_fx_tracing will return true")


def quiet_known_warnings():
    """Hides, in a tool's process, the warnings of d2ext's dependencies that users can do nothing
    about (each one named below); d2ext's own warnings stay visible."""
    # Detectron2's anchor generator calls torch.meshgrid without `indexing` (its grid is the "ij"
    # one torch keeps).
    warnings.filterwarnings(
        "ignore", message=r"torch\.meshgrid: in an upcoming release", category=UserWarning
    )
    # Detectron2's model_zoo (which lazy configs call for their common parts) imports
    # pkg_resources, which setuptools deprecates.
    warnings.filterwarnings("ignore", message=r"pkg_resources is deprecated", category=UserWarning)
    # torch deprecates TorchScript, which the TorchScript export (d2ext-export, Detectron2's
    # scripting_with_instances) is made of: torch.jit.trace / trace_method / script each warn once.
    warnings.filterwarnings(
        "ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning
    )
    # Detectron2's ROIPooler (Faster / Libra R-CNN) asks torch.fx's is_fx_tracing(), which logs a
    # note about torch.export once per process.
    logging.getLogger("torch.fx._symbolic_trace").addFilter(_FX_TRACING_NOTE)  # added once


def command(main):
    """Decorates a tool's ``main(argv)``: an error d2ext raises about its input (D2extError: a
    file, key or value, named in the message) ends the tool with that one line on stderr and exit
    status 1; ``--debug`` or D2EXT_DEBUG=1 re-raises it with its traceback. ``main(argv)`` returns
    the tool's result (for callers and tests); ``main()`` from the command line only an exit
    status."""

    @functools.wraps(main)
    def run(argv=None):
        quiet_known_warnings()
        from_command_line = argv is None
        argv = sys.argv[1:] if from_command_line else list(argv)
        try:
            result = main(argv)
        except D2extError as e:
            if "--debug" in argv or os.environ.get(DEBUG_ENV) == "1":
                raise
            print(f"{os.path.basename(sys.argv[0]) or 'd2ext'}: error: {e}", file=sys.stderr)
            raise SystemExit(1) from None
        # A console script exits with sys.exit(main()): only an exit status may reach it (sys.exit
        # of any other object prints it and exits with 1). Called with argv, the result is returned.
        if from_command_line:
            return result if isinstance(result, int) else None
        return result

    return run
