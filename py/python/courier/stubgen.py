"""`courier-stubgen` (and `python -m courier.stubgen`): generates typed Python
stubs from .proto files, protoc-style:

    courier-stubgen -I protos --python_out=gen protos/a/b.proto

The generator is Rust (crate courier-stubgen) inside the native module, so the
wheel needs neither protoc nor grpcio-tools. `--help` lists every option.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from . import _core


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the generator with `argv` (default: the command line); returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    code, out, err = _core.stubgen_main(args)
    if out:
        sys.stdout.write(out)
    if err:
        sys.stderr.write(err)
    return code


if __name__ == "__main__":
    sys.exit(main())
