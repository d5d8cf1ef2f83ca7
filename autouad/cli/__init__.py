"""Command lines: thin argparse layers over :mod:`autouad.api`."""
from autouad.utils.console import tolerate_ascii_consoles

tolerate_ascii_consoles()
