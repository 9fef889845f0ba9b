"""``collapse-monitor simulate``: the model-collapse papers by recursive training, and each alert's lead time.

The options and the run live with the scenarios in :mod:`flows.simulate`; this module registers them."""

from __future__ import annotations

from flows.cli.common import Formatter


def add_parser(sub, common) -> None:
    from flows import simulate

    simulate.add_parser(sub, parents=[common], formatter_class=Formatter)


def run(args) -> int:
    from flows import simulate

    return simulate.run(args)
