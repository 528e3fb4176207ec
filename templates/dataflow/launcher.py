"""Dataflow Flex Template entry point: submit the catalog job and return without waiting.

The image built from ``templates/dataflow/Dockerfile`` runs this file in the template launcher
(``FLEX_TEMPLATE_PYTHON_PY_FILE``) and, as the SDK container, on every worker. The launcher
passes each template parameter as ``--name=value``; this module turns the boolean parameters
(``--full=true``) into metaextract's switches (``--full``), adds the worker image when the launch
did not set one, and calls :func:`pipelines.catalog.run` with ``wait=False``: a Flex Template
launcher that waits for the job times out.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

#: Set by the Dockerfile to the image's own name: workers run the launcher's image.
IMAGE_ENV = "METAEXTRACT_SDK_CONTAINER_IMAGE"
TRUE, FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no", ""})


def switch_flags() -> set[str]:
    """metaextract's options that take no value (``store_true``), e.g. ``--full``."""
    from pipelines.options import MetaextractOptions

    parser = argparse.ArgumentParser(add_help=False)
    MetaextractOptions._add_argparse_args(parser)  # pylint: disable=protected-access
    return {s for a in parser._actions if a.nargs == 0 for s in a.option_strings}  # pylint: disable=protected-access


def template_argv(argv: list[str], image: str | None = None) -> list[str]:
    """Template parameters -> metaextract's command line."""
    switches = switch_flags()
    out = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        if eq and name in switches:
            if value.strip().lower() in TRUE:
                out.append(name)
            elif value.strip().lower() not in FALSE:
                raise SystemExit(f"metaextract: error: {name} must be true or false, got {value!r}")
            continue
        out.append(arg)
    if not any(a.split("=", 1)[0] == "--runner" for a in out):
        out.append("--runner=DataflowRunner")
    if image and not any(a.split("=", 1)[0] == "--sdk_container_image" for a in out):
        out.append(f"--sdk_container_image={image}")
    return out


def main(argv: list[str] | None = None) -> int:
    from pipelines.catalog import run

    logging.basicConfig(level=logging.INFO)
    run(template_argv(list(sys.argv[1:] if argv is None else argv), os.environ.get(IMAGE_ENV)), wait=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
