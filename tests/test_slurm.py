"""A real scheduler: Slurm (Debian's ``slurm-wlm``: slurmctld + slurmd on this node, started
by the test with a private configuration) runs ``examples/slurm_array.sh`` unchanged on a
4-participant dataset: one array task per participant, then the group level as a job that
depends on the array.

The script runs ``singularity run ... bids-iron.sif /data /out <level> ...``; here a
``singularity`` on PATH runs the same command from this venv (``python -m bids_iron``, the
binds mapped back to host paths), adds the test's options (no template registration: the
participants get ROIs from ``--roi-dseg``) and records when each run started and ended.

Skipped, with the reason, where slurmctld/slurmd/sbatch are not installed
(``apt-get install slurm-wlm``).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import phantom as P

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "slurm_array.sh"
NEEDED = ("slurmctld", "slurmd", "sbatch", "squeue", "sinfo")

pytestmark = pytest.mark.skipif(
    not all(shutil.which(n) for n in NEEDED),
    reason="Slurm is not installed (apt-get install slurm-wlm gives slurmctld, slurmd, sbatch)")

SHIM = """#!{python}
# singularity run [options] IMAGE ARGS...: run ARGS with this venv's bids-iron
import os, sys, time
args = sys.argv[2:]
binds, i = {{}}, 0
while i < len(args):
    if args[i] in ("-B", "--bind"):
        src, dst = args[i + 1].split(":")[:2]
        binds[dst] = src
        i += 2
    elif args[i].startswith("-"):
        i += 1
    else:
        break
rest = [binds.get(a, a) for a in args[i + 1:]]
level = "participant" if "participant" in rest else "group"
rest += os.environ.get("TEST_" + level.upper() + "_ARGS", "").split()
label = os.environ.get("SLURM_ARRAY_TASK_ID", "group")
with open(os.environ["TEST_TIMES"], "a") as fh:
    fh.write(f"start {{level}} {{label}} {{time.time()}}\\n")
code = os.spawnv(os.P_WAIT, sys.executable, [sys.executable, "-m", "bids_iron", *rest])
with open(os.environ["TEST_TIMES"], "a") as fh:
    fh.write(f"end {{level}} {{label}} {{time.time()}} {{code}}\\n")
sys.exit(code)
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


@pytest.fixture
def slurm(tmp_path):
    """slurmctld + slurmd on this node; yields the environment for sbatch/squeue."""
    import getpass

    base = tmp_path / "slurm"
    for d in ("state", "spool", "log"):
        (base / d).mkdir(parents=True)
    host, user = socket.gethostname().split(".")[0], getpass.getuser()
    conf = base / "slurm.conf"
    conf.write_text(f"""ClusterName=biids
SlurmctldHost={host}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/none
CredType=cred/none
SlurmUser={user}
SlurmdUser={user}
StateSaveLocation={base}/state
SlurmdSpoolDir={base}/spool
SlurmctldPidFile={base}/slurmctld.pid
SlurmdPidFile={base}/slurmd.pid
SlurmctldLogFile={base}/log/slurmctld.log
SlurmdLogFile={base}/log/slurmd.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
NodeName={host} CPUs=4 RealMemory=16384 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
    env = dict(os.environ, SLURM_CONF=str(conf))
    started = []
    try:
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([daemon, "-c"] if daemon == "slurmctld" else [daemon], env=env,
                           check=True, capture_output=True, timeout=30)
            started.append(base / f"{daemon}.pid")
            time.sleep(0.5)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True,
                                   text=True).stdout.strip()
            if state == "idle":
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"slurmd did not come up ({state!r}): "
                        + (base / "log/slurmd.log").read_text()[-2000:])
        yield env
    finally:
        for pidfile in reversed(started):
            try:
                os.kill(int(pidfile.read_text().split()[0]), 15)
            except (OSError, ValueError):
                pass


def _dataset(root, rois):
    """4 participants (sessions 1 and 2 for two of them) on the coarse phantom, and their
    label maps on the MEGRE grid for --roi-dseg."""
    ph = P.make_phantom((32, 32, 24), (4.0, 4.0, 4.0))
    affine, _ = P.oblique_affine(ph.voxel_size, 0.0, 0, ph.labels.shape)
    labels = np.zeros(ph.labels.shape, np.int16)
    for index, name in enumerate(("caudate", "putamen", "globus_pallidus", "thalamus"), 1):
        labels[ph.label_mask(name)] = index
    rows = ["participant_id\tage\tgroup"]
    for i, sub in enumerate(("01", "02", "03", "04")):
        P.write_megre(root, P.simulate_gre(ph, snr=80, seed=i), affine, sub)
        rows.append(f"sub-{sub}\t{40 + i}\t{'HC' if i % 2 else 'MS'}")
        folder = rois / f"sub-{sub}" / "anat"
        folder.mkdir(parents=True)
        nib.save(nib.Nifti1Image(labels, affine), str(folder / f"sub-{sub}_dseg.nii.gz"))
        (folder / f"sub-{sub}_dseg.tsv").write_text(
            "index\tname\n1\tcaudate\n2\tputamen\n3\tglobus_pallidus\n4\tthalamus\n")
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")


def _submit_and_wait(env, root, out, sif):
    """bash examples/slurm_array.sh BIDS OUT SIF, then wait until the queue is empty."""
    submit = subprocess.run(["bash", str(SCRIPT), str(root), str(out), str(sif)], env=env,
                            capture_output=True, text=True, timeout=60)
    assert submit.returncode == 0, submit.stderr
    assert "4 participants" in submit.stdout, submit.stdout
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        queue = subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True)
        if queue.returncode == 0 and not queue.stdout.strip():
            break
        time.sleep(2)


def _runs(times):
    """(starts, ends) of the shim's records: {(level, task): time} and {(level, task):
    (time, exit code)}; a later run of the same task replaces an earlier one."""
    records = [line.split() for line in times.read_text().splitlines()]
    ends = {(r[1], r[2]): (float(r[3]), int(r[4])) for r in records if r[0] == "end"}
    starts = {(r[1], r[2]): float(r[3]) for r in records if r[0] == "start"}
    return starts, ends


def test_slurm_array_then_group(slurm, tmp_path):
    """The array and the group job; one participant fails (a sidecar without EchoTime), the
    group job still runs after the array; after the fix, submitting the same command again
    redoes only that participant (the others are skipped) and the group level."""
    root, out, rois = tmp_path / "ds", tmp_path / "out", tmp_path / "rois"
    _dataset(root, rois)
    bad = root / "sub-03/anat/sub-03_echo-2_part-mag_MEGRE.json"
    good = bad.read_text()
    meta = json.loads(good)
    del meta["EchoTime"]
    bad.write_text(json.dumps(meta))
    shim = tmp_path / "bin" / "singularity"
    shim.parent.mkdir()
    shim.write_text(SHIM.format(python=sys.executable))
    shim.chmod(0o755)
    (tmp_path / "bids-iron.sif").write_text("stands for the image")
    times = tmp_path / "times.txt"
    env = dict(slurm, PATH=f"{shim.parent}:{slurm['PATH']}", TEST_TIMES=str(times),
               TEST_PARTICIPANT_ARGS=f"--no-anatomy --no-report --roi-dseg {rois}",
               TEST_GROUP_ARGS="--no-report")
    env.pop("SLURM_JOB_ID", None)
    sif = tmp_path / "bids-iron.sif"
    _submit_and_wait(env, root, out, sif)
    logs = "".join(p.read_text() for p in sorted((out / "logs" / "slurm").glob("*.out")))
    starts, ends = _runs(times)
    tasks = [k for k in ends if k[0] == "participant"]
    assert len(tasks) == 4, logs
    assert sorted(ends[k][1] for k in tasks) == [0, 0, 0, 1], logs  # sub-03 failed
    assert "no EchoTime" in logs and "sub-03" in logs
    for sub in ("01", "02", "04"):
        assert (out / f"sub-{sub}" / f".bids-iron-done_sub-{sub}.json").exists(), logs
    # the group level ran once, after every array task had ended (afterany)
    assert ("group", "group") in starts, logs
    assert starts[("group", "group")] >= max(ends[k][0] for k in tasks)

    # fixed; the same command again: only sub-03 is processed, then the group level
    bad.write_text(good)
    first = {sub: (out / f"sub-{sub}/anat/sub-{sub}_R2starmap.nii.gz").stat().st_mtime_ns
             for sub in ("01", "02", "04")}
    _submit_and_wait(env, root, out, sif)
    logs = "".join(p.read_text() for p in sorted((out / "logs" / "slurm").glob("*.out")))
    starts, ends = _runs(times)
    tasks = [k for k in ends if k[0] == "participant"]
    assert all(ends[k][1] == 0 for k in tasks), logs
    for sub in ("01", "02", "03", "04"):
        assert (out / f"sub-{sub}" / f".bids-iron-done_sub-{sub}.json").exists(), logs
    for sub, mtime in first.items():
        assert (out / f"sub-{sub}/anat/sub-{sub}_R2starmap.nii.gz").stat().st_mtime_ns == mtime
    assert logs.count("already finished with these options and inputs") >= 3
    assert starts[("group", "group")] >= max(ends[k][0] for k in tasks)
    assert ends[("group", "group")][1] == 0, logs
    assert (out / "group" / "group_roistats.tsv").exists(), logs
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["GeneratedBy"][0]["Name"] == "bids-iron"
