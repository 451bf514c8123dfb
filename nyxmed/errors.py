"""One error hierarchy for every command, and the exit code each kind of error ends with.

The CLI maps a :class:`NyxmedError` to one line on stderr and its ``exit_code``; anything else is a
bug and keeps its traceback. The codes are documented in docs/exit-codes.md.
"""

from __future__ import annotations


class NyxmedError(Exception):
    """A user error: bad input, a used or missing folder, a server that says no. Exit code 1."""

    exit_code = 1


class UsageError(NyxmedError, ValueError):
    """A bad flag, config key or value. Exit code 2 (argparse's own)."""

    exit_code = 2


class InputError(NyxmedError, ValueError):
    """An input file or record that cannot be read or is damaged. Exit code 3."""

    exit_code = 3


class NotFound(NyxmedError, FileNotFoundError):
    """A file, folder, version or checkpoint that does not exist. Exit code 4."""

    exit_code = 4


class OutputConflict(NyxmedError, FileExistsError):
    """An output path that is in use, or is, contains or lies inside an input. Exit code 5."""

    exit_code = 5


class RemoteError(NyxmedError, ConnectionError):
    """A server that refuses, is unreachable, or no network. Exit code 6."""

    exit_code = 6


class VerificationError(NyxmedError):
    """Checksums, adapter shapes or merge outputs that do not match. Exit code 7."""

    exit_code = 7


EXIT_CODES = {cls.__name__: cls.exit_code for cls in
              (NyxmedError, UsageError, InputError, NotFound, OutputConflict, RemoteError, VerificationError)}
