"""Files written whole or not at all, and the error a bad input file raises."""

import json
import os
import tempfile
from pathlib import Path


class InputError(ValueError):
    """A problem with what the user gave us, worded for a one-line message."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_save(write, path) -> None:
    """Write `path` through a temporary file in the same folder and rename it: never half-written."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_json(data, path, indent: int | None = None) -> None:
    """Write `data` as JSON, one trailing newline, through `atomic_save`."""
    text = json.dumps(data, indent=indent) + "\n"
    atomic_save(lambda tmp: Path(tmp).write_text(text), path)
