"""Progress bars that suit where they are written. On a terminal, tqdm's bar, redrawn in place. In
a file or a pipe (a CI log, ``2> run.log``), where every redraw would be kept, a plain line now and
then: at most one per ``LOG_INTERVAL_S`` seconds, plus the first and the last."""

import sys
from typing import Any, Dict, Optional, TextIO

# Seconds between two lines of a progress bar written to a file or a pipe.
LOG_INTERVAL_S = 30.0


class LineWriter:
    """A stream for tqdm that turns its redraws ("\\r" + the bar, padded) into lines, and drops
    the clears and the closing newline."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_options(stream: Optional[TextIO] = None) -> Dict[str, Any]:
    """Keyword arguments for ``tqdm(...)`` writing to ``stream`` (default: sys.stderr, tqdm's):
    none on a terminal; otherwise a :class:`LineWriter` and a refresh interval of
    ``LOG_INTERVAL_S`` seconds. Set descriptions and postfixes with ``refresh=False``: a refresh
    draws a line at once."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    if callable(isatty) and isatty():
        return {}
    return {
        "file": LineWriter(stream),
        "mininterval": LOG_INTERVAL_S,
        "maxinterval": LOG_INTERVAL_S,
    }
