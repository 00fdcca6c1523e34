"""CPUs this process may use (shared by the participant level, the demo and the group figures)."""

import os


def available_cpus():
    """CPUs this process may run on: its affinity mask where the OS has one (a Slurm job's
    cpuset, ``taskset``, a container's ``--cpuset-cpus``), else ``os.cpu_count()``.

    Examples
    --------
    >>> available_cpus() >= 1
    True
    """
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1
