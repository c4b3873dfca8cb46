"""Server reflection: generated `*_courier.py` modules register their files'
descriptors (and their imports) so `grpcurl list`/`describe` work against any
Courier server of this process."""

from __future__ import annotations

from typing import List, Set

from google.protobuf.descriptor import FileDescriptor

from . import _core


def register_descriptor(file: FileDescriptor) -> None:
    """Registers `file` (a `_pb2` module's `DESCRIPTOR`) and everything it imports."""
    seen: Set[str] = set()
    ordered: List[bytes] = []

    def visit(f: FileDescriptor) -> None:
        if f.name in seen:
            return
        seen.add(f.name)
        for dep in f.dependencies:
            visit(dep)
        ordered.append(f.serialized_pb)

    visit(file)
    _core.register_file_descriptors(ordered)
