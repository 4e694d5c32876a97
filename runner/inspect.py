"""`python -m runner.inspect [overrides]`: build the configured model and show its parameters.

Prints the module tree with each layer's output shape, a table of every parameter
(shape, dtype, device, init rule, tied names, statistics), unique and total counts,
one parameter by path (`inspect.param=0.1.0.bias`), and a signal-propagation probe
at init. Reads the same config groups as `python -m runner`; writes nothing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from runner.errors import exit_on_ctrl_c

EXAMPLES = """\
examples:
  python -m runner.inspect                                   # the chapter's mlp, default init
  python -m runner.inspect model=rgnet inspect.param=0.1.0.bias   # rgnet[0][1][0].bias
  python -m runner.inspect inspect.param=0.weight inspect.backward=true   # .grad after Y.backward()
  python -m runner.inspect inspect.param=                    # print(net.state_dict())
  python -m runner.inspect model=deep_mlp tying=hidden init=normal
  python -m runner.inspect model=deep_relu init=kaiming      # does the signal survive 10 layers?
  python -m runner.inspect --config-dir my_conf model=my_net # your own conf/model/my_net.yaml
"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Hydra overrides (`group=option`, `key=value`) plus Hydra's own --config-dir flag."""
    from runner.errors import tool_parser

    parser = tool_parser(
        "inspect",
        "Build the model a config describes and show its layers and parameters.",
        EXAMPLES,
    )
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides, e.g. model=rgnet init=xavier"
    )
    parser.add_argument(
        "--config-dir",
        "-cd",
        help="a folder of your own YAML files, searched before the shipped conf/",
    )
    return parser.parse_args(argv)


@exit_on_ctrl_c
def main(argv: Sequence[str] | None = None) -> None:
    """Compose, build and print; a bad config prints one line and exits with code 2."""
    from runner.errors import exit_on_user_error

    exit_on_user_error(_inspect)(parse_args(argv))


def _inspect(args: argparse.Namespace) -> None:
    import torch

    from runner import report
    from runner.builder import build
    from runner.config import compose
    from runner.device import resolve_device
    from runner.errors import ConfigError, require_int
    from runner.probe import example_input, record_calls

    cfg = compose(args.overrides, config_name="inspect", config_dir=args.config_dir)
    options = cfg.inspect
    for key in ("batch_size", "probe_batch"):  # BatchNorm needs two samples; so does a std
        require_int(options.get(key), f"inspect.{key}", 2)
    param = _raw_param(args.overrides, options.param)
    if options.backward and param is None:
        raise ConfigError("inspect.backward=true shows the .grad of inspect.param: give a "
                          "path too, e.g. inspect.param=0.weight")  # fmt: skip
    built = build(cfg)
    device = resolve_device(cfg.device)
    model = built.module.to(device)
    if param is not None:
        report.find_path(model, param)  # a wrong path fails before any output
    generator = torch.Generator().manual_seed(cfg.seed)
    choices = " ".join(f"{group}={name}" for group, name in cfg.choices.items())
    print(f"{choices} seed={cfg.seed} device={device}\n")
    batch = example_input(model, built.input_shape, options.batch_size, generator)
    shapes = record_calls(model, batch)
    print(report.module_tree(model, shapes, (options.batch_size, *built.input_shape)))
    print()
    print(report.parameter_table(model, built.init))
    print(report.parameter_counts(model))
    if param is not None:
        if options.backward:  # the chapter's Y = net(X).sum(); Y.backward(), on the same batch
            model(batch).sum().backward()
        print()
        print(report.show_path(model, param))
        model.zero_grad(set_to_none=True)  # the probe below starts from no gradients
    print(f"\nsignal propagation at init (batch of {options.probe_batch}, N(0, 1) cotangent):")
    x = example_input(model, built.input_shape, options.probe_batch, generator)
    print(report.probe_table(record_calls(model, x, backward=True)))


def _raw_param(overrides: Sequence[str], composed: object) -> str | None:
    """The path as typed: Hydra reads inspect.param=0.10 as the float 0.1, which is another path."""
    typed = [o.split("=", 1)[1] for o in overrides if o.lstrip("+").startswith("inspect.param=")]
    if typed:
        return typed[-1].strip("'\"")
    return None if composed is None else str(composed)


if __name__ == "__main__":
    from runner.pipes import survive_closed_readers

    survive_closed_readers()  # `| head`: no traceback when the reader leaves
    main(sys.argv[1:])
