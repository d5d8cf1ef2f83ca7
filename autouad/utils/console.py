"""The console autouad prints to."""
import sys


def tolerate_ascii_consoles() -> None:
    """Messages carry a few non-ASCII signs (± in the validation summary, — in reasons). Under an
    ASCII locale (LC_ALL=C with PYTHONUTF8=0: some CI runners and cluster nodes) printing them
    would raise UnicodeEncodeError after a finished training; write them escaped instead. Called
    by the command lines and by the processes they spawn, never on import of the library."""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "").replace("_", "")
        if encoding != "utf8" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
