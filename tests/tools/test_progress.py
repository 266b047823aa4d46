"""Progress bars written to a file or a pipe (d2ext/utils/progress.py): a line now and then, not
one redraw per update."""

import io

from tqdm import tqdm

from d2ext.utils.progress import LOG_INTERVAL_S, LineWriter, progress_options


def test_a_file_gets_the_first_and_last_line_of_a_fast_bar():
    stream = io.StringIO()
    with tqdm(total=1000, desc="steps", **progress_options(stream)) as bar:
        for _ in range(1000):
            bar.update()
    lines = stream.getvalue().splitlines()
    assert 1 <= len(lines) <= 3, lines  # not 1000 redraws: no update waited LOG_INTERVAL_S
    assert lines[-1].startswith("steps: 100%") and "1000/1000" in lines[-1]
    assert all("\r" not in line for line in lines)


def test_a_terminal_keeps_tqdm_as_it_is():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert progress_options(Terminal()) == {}
    options = progress_options(io.StringIO())
    assert isinstance(options["file"], LineWriter) and options["mininterval"] == LOG_INTERVAL_S


def test_line_writer_turns_redraws_into_lines():
    stream = io.StringIO()
    writer = LineWriter(stream)
    for text in ("\rbar 10%   ", "\r", "\rbar 20%", "\n"):
        writer.write(text)
    assert stream.getvalue() == "bar 10%\nbar 20%\n"
