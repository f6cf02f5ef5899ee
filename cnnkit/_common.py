"""Small helpers the CLI modules share: tables, KEY=VALUE options."""
import ast
import logging

from keras_cnns.errors import CnnkitError


def table(headers, rows, right=()):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def parse_options(pairs):
    """``("alpha=0.5", "batch_norm=true")`` -> ``{"alpha": 0.5, "batch_norm": True}``."""
    options = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise CnnkitError(f"option {pair!r} must look like KEY=VALUE (e.g. alpha=0.5)")
        words = {"true": "True", "false": "False", "none": "None", "null": "None"}
        text = words.get(raw.strip().lower(), raw)
        try:
            options[key.strip()] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            options[key.strip()] = raw
    return options


class _TerminalHandler(logging.StreamHandler):
    """Writes to the real stderr, also inside ``stderr_silenced`` (which silences native output only)."""

    def emit(self, record):
        from cnnkit._quiet import terminal_stderr

        self.stream = terminal_stderr()
        super().emit(record)


def log_to_stderr(logger_name, prefix):
    """Route a library logger's INFO messages to stderr as ``PREFIX: message`` (stdout stays for results)."""
    handler = _TerminalHandler()
    handler.setFormatter(logging.Formatter(f"{prefix}: %(message)s"))
    logger = logging.getLogger(logger_name)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
