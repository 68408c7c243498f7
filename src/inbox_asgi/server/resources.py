"""Process limits the server raises for itself at start."""

from __future__ import annotations

import logging
import resource

logger = logging.getLogger("inbox_asgi")


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the soft limit now in force.

    Every waiting reader holds a descriptor. Many systems start processes with a
    soft limit of 1024, which ~1,000 long polls use up: accept() then fails and
    everyone else is locked out, with nothing logged. The hard limit is what an
    administrator allows; workers inherit the raised limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit is no value for the soft one (Linux caps descriptors
    # at fs.nr_open): leave the soft limit as it is then.
    if hard == resource.RLIM_INFINITY or soft == resource.RLIM_INFINITY or soft >= hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as error:
        logger.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, error)
        return soft
    return hard
