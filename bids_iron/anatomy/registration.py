"""Registration of templates, T1w and FLAIR to the native MEGRE space (ANTsPy), label transfer.

Native space is the MEGRE voxel grid. Its reference image for registration is the
root-sum-of-squares (RSS) of the magnitude echoes (`native_reference`): RSS has a higher SNR than
echo 1 alone and keeps echo 1's tissue contrast while adding the T2*-darkening of the
iron-rich nuclei (globus pallidus, substantia nigra, red nucleus, dentate) that the later
echoes show, i.e. the very structures whose boundaries matter here; the signal drop-out near
air cavities, strongest in late echoes, is diluted by the early echoes.

Strategy (`register_to_session`), all in world space with ANTs (antsRegistration through
ANTsPy's raw interface, so every option is explicit):

* without T1w: template T1w -> MEGRE RSS directly: rigid, affine, SyN, all with Mattes mutual
  information (the contrasts differ);
* with T1w: T1w -> MEGRE rigid (mutual information), template -> T1w affine + SyN; the chain
  is template -> T1w -> MEGRE.

Where the iron is visible (issue 11): with ``iron_img`` (the session's R2* map; the anatomy
stage passes it unless ``--no-registration-iron``) SyN gets a second channel, the local
correlation of the session's R2* (carried to the fixed grid) with an iron-contrast template
painted once per run from the atlas labels (`templates.iron_template`: typical 3 T R2* of
each nucleus, white and gray matter), so that nuclei that a T1w barely shows (nigra, red
nucleus, dentate, pulvinar) pull the warp; ``masked`` restricts every metric to the template
brain (dilated 4 mm) so the scalp and neck do not pull; ``refine`` adds a local SyN of R2*
against the warped iron template (painted from the 1 mm labels) on the native grid in a box
around the brainstem and cerebellar nuclei, the pallidum and the pulvinar (`REFINE_BOX_MM`),
tapered to identity at the box edges. Measured on the
independent-anatomy benchmark (benchmarks/accuracy_registration.py): see `IRON_WEIGHT`.

Speed: registration runs on 2 mm copies of both images (``reg_resolution``), three levels
(8, 4, 2 mm), SyN 60x40x10 iterations (60x10x0 when the local refinement runs), the
template's affine stage without a rigid one before it (`LINEAR_ITERATIONS`: measured choices
and where the time goes); transforms live in world space, so they are applied to the 1 mm
atlases and the native grid afterwards. Fixed ``--random-seed`` and regular (not random)
metric sampling; still not bit-for-bit repeatable: the labels depend on the number of ITK
threads and, measured, on the load of the machine (the 2 mm test subject's right dentate
Dice 0.825 quiet, 0.831-0.843 with the other core busy, 0.795 once in a full test run;
ITK's "Platform" threader did not fix it). This is a known property of ITK's multithreaded
similarity metrics, whose per-thread partial sums are added in the order the threads finish
(ANTs issue #1174; ANTsPy's ``set_ants_deterministic`` sets one thread): only one ITK thread
is repeatable bit for bit. The number of ITK threads follows ``n_threads`` (set before ANTs
is first used in the process; ITK reads it once) or ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS.

SUIT (dentate): the SUIT T1w is registered to the template once (affine + SyN on the posterior
fossa, identity start as SUIT coordinates are close to MNI) and cached under ``cache_dir``
keyed by the input files and parameters; dentate labels are then warped through
SUIT -> template -> MEGRE in one resampling.

Labels go to the native grid with ANTs' ``genericLabel`` interpolator (each label's indicator
is interpolated and the most likely label wins), which keeps small nuclei rounder and more
accurate than nearest neighbour; brain masks and lesion masks are interpolated linearly and
thresholded at 0.5.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import BidsIronError, InputError
from . import rois

__all__ = ["native_reference", "register_to_session", "register_rigid", "resample_to_native",
           "jacobian_determinant",
           "warp_labels_to_native", "mask_to_native", "SessionRegistration", "RigidTransform",
           "NativeLabels", "dice", "native_label_table", "REG_RESOLUTION", "SEED"]

#: Grid spacing (mm) on which registrations are computed.
REG_RESOLUTION = 2.0
#: Random seed given to antsRegistration.
SEED = 20240
#: Version of the registration parameters (part of the SUIT cache key).
PARAMS_VERSION = "1"
#: Similarity metric of the template->MEGRE registration: mutual information, because the
#: template (T1w) and the MEGRE magnitude have different contrasts.
SYN_METRIC = "MI"
#: Weight of the iron channel (session R2* <-> iron template, local correlation) in SyN,
#: against 1 for the anatomical channel.
#:
#: The choices of this module (iron channel, masked metrics, local refinement, SyN levels)
#: were measured on benchmarks/accuracy_registration.py: template (real MNI T1w; aseg,
#: Brainstem Navigator, MIAL67 labels) and subject (realistic head with CIT168, Brainnetome,
#: THOMAS nuclei, 4 mm smooth warp, own T1w and MEGRE contrasts, noise) from independent
#: sources; MEGRE and T1w 1 mm; Dice (mean of left and right) against the subject's labels;
#: CPU seconds of registration + label transfer per session (SUIT transform cached; the 2
#: cores were shared with other jobs, so wall times were longer and are not compared):
#:
#: =============================  ====  ====  ====  ====  ====  ====  ====  ====  ====  =====
#: method                         CN    PUT   GP    TH    PUL   SN    RN    DN    mean  CPU s
#: =============================  ====  ====  ====  ====  ====  ====  ====  ====  ====  =====
#: atlas agreement (ceiling [1])  0.82  0.86  0.74  0.85  0.44  0.51  0.68  0.65  0.69
#: T1w only (before issue 11)     0.80  0.87  0.73  0.86  0.34  0.56  0.71  0.54  0.68  n/m
#: + R2* channel, masked          0.82  0.86  0.74  0.87  0.38  0.57  0.74  0.71  0.71  281
#: + local refinement             0.82  0.88  0.78  0.89  0.48  0.65  0.81  0.91  0.78  369
#: ... SyN 60x40x0               0.81  0.88  0.79  0.88  0.48  0.63  0.80  0.91  0.77  217
#: **... refinement 30x20x4**     0.81  0.87  0.78  0.88  0.47  0.62  0.79  0.90  0.77  174
#: =============================  ====  ====  ====  ====  ====  ====  ====  ====  ====  =====
#:
#: (the default was the last row until the speed measurements of `LINEAR_ITERATIONS`: SyN
#: 60x20x0 and no rigid stage now, same Dice; peak memory of the refined runs 0.87-1.15 GB)
#:
#: [1] template against subject labels in MNI space: a registration that follows the visible
#: anatomy perfectly and nothing else. Mean surface distance (mm), before -> default: CN 1.58
#: -> 1.54, PUT 0.74 -> 0.71, GP 1.22 -> 0.86, TH 1.06 -> 0.93, PUL 3.60 -> 2.81, SN 1.17 ->
#: 1.08, RN 0.87 -> 0.66, DN 1.97 -> 0.50. Dropping the 2 mm SyN level when the refinement
#: runs costs at most 0.02 Dice and saves 41 % of the CPU time (369 -> 217 s). Only the
#: weight 1 was measured (other weights are a benchmark variant, ``t1w+iron2+masked``).
IRON_WEIGHT = 1.0
#: Restrict the metrics to the template brain dilated by MASK_MARGIN_MM (with ``iron_img``;
#: measured together with the iron channel, see `IRON_WEIGHT`).
MASKED = True
#: Margin (mm) of the template brain mask used as the moving mask.
MASK_MARGIN_MM = 4.0
#: Local refinement (``refine``): template-space box (world mm, MNI: x, y, z ranges) around
#: the brainstem and cerebellar nuclei (substantia nigra, red nucleus, dentate), the pallidum
#: and the pulvinar, refined by a second SyN of the session's R2* against the warped iron
#: template (`REFINE_FINE_IRON`) on the native grid. Measured (benchmarks/accuracy_registration.py,
#: 1 mm, 2 ITK threads, seed 3 unless noted; Dice CN PUT GP TH PUL SN RN DN and mean; CPU s
#: of one session, registration and labels; smallest Jacobian determinant of the refinement):
#:
#: =====================================  =======================================  ====  ===  ====
#: variant                                Dice CN PUT GP TH PUL SN RN DN           mean  CPU  det
#: =====================================  =======================================  ====  ===  ====
#: before: box to y 0, z 2 (brainstem),   .819 .878 .797 .886 .631 .713 .838 .933  .812  113  .21
#: 2 mm iron template, SyN 60x20x0
#: ... 1 mm iron template                 .820 .887 .821 .887 .656 .751 .837 .934  .824  114  .19
#: box to y 14, z 22 (deep GM)            .830 .889 .755 .888 .698 .718 .839 .932  .819  143  .16
#: ... 1 mm iron template                 .852 .900 .799 .889 .703 .753 .837 .932  .833  151  .12
#: ... 1 mm iron, radius 1, step 0.4      .845 .886 .792 .889 .703 .735 .839 .927  .827   98  .06
#: box to y 4, z 14 (pulvinar), 1 mm iron .826 .895 .815 .888 .704 .756 .838 .935  .832  127  .14
#: ... seed 4                             .826 .892 .822 .887 .740 .746 .851 .931  .837  126  .13
#: ... refinement 30x20x0                 .817 .872 .795 .877 .687 .699 .786 .918  .806   83  .22
#: ... refinement 30x20x2                 .823 .886 .808 .885 .693 .736 .820 .929  .822  104  .22
#: ... refinement spacing 1.25 mm         .827 .887 .804 .884 .667 .720 .831 .929  .819   86  .25
#: ... refinement spacing 1.5 mm          .826 .875 .799 .877 .669 .685 .815 .927  .809   74  .29
#: ... radius 1                           .825 .879 .811 .889 .745 .757 .849 .931  .836   89  .01
#: ... radius 1, step 0.3                 .822 .875 .805 .889 .662 .727 .832 .921  .817   85  .11
#: ... radius 1, update variance 5        .816 .845 .798 .884 .725 .717 .819 .919  .815   92  .13
#: ... SyN 60x10x0                        .824 .895 .817 .886 .721 .759 .837 .933  .834  116  .12
#: ... ... seed 4                         .826 .896 .824 .884 .751 .763 .849 .932  .841  116  .13
#: **... ... taper 4 mm**                 .822 .893 .825 .885 .712 .759 .841 .933  .834  106  .15
#: **... ... ... seed 4**                 .825 .893 .822 .884 .725 .740 .842 .931  .833  106  .21
#: ... ... taper 3 mm                     .822 .892 .831 .883 .696 .754 .836 .932  .831  102  .09
#: ... ... ... seed 4                     .824 .891 .821 .884 .727 .743 .845 .930  .833  103  .20
#: ... ... ... box 2-4 mm smaller [1]     .821 .890 .831 .882 .692 .740 .830 .931  .827  103  .21
#: ... ... ... ... seed 4                 .823 .892 .818 .883 .718 .730 .839 .929  .829  102  .08
#: ... ... ... box 4-6 mm smaller [2]     .821 .888 .838 .884 .680 .740 .829 .931  .826   97  .22
#: R2* smoothed by 1 mm (deep GM box)     .836 .887 .732 .883 .689 .713 .826 .922  .811  136  .21
#: R2* smoothed by 1 mm (brainstem box)   .819 .875 .783 .883 .637 .719 .827 .931  .809  104  .22
#: =====================================  =======================================  ====  ===  ====
#:
#: The iron template on the 2 mm registration grid had lost the thin pallidum's shape: a
#: refinement over the pallidum shrank it (1827 -> 1484 voxels, truth 2181; the missed voxels
#: at R2* 38 1/s), so a box over the deep gray matter lost pallidum Dice until the template
#: came from the 1 mm labels. Smoothing the session's R2* instead was worse. Radius 1 halves
#: the refinement but compresses its field to a determinant of 0.01-0.06. Wall time on 2
#: quiet cores, seed 3 / 4: before 64-65 s; pulvinar box with SyN 60x10x0 67.7 s; with the
#: 4 mm taper (default) 61.2 / 60.8 s (refinement 37-38 s, template -> T1w 10.5-11.5 s,
#: labels 4.1-4.3 s, T1w -> MEGRE 3.0-3.1 s); a 3 mm taper 58.9 / 59.2 s, but the pulvinar
#: at .696 on seed 3 and a determinant of 0.09; [1] ((-32, 32), (-76, 4), (-48, 14)) 59.1 /
#: 59.8 s but the pulvinar at .692 on seed 3; [2] ((-30, 30), (-74, 4), (-46, 14)) 57.2 s.
#: Peak RSS 0.91-0.93 GiB. Then, same Dice (within 0.002) and faster: ANTs resampling in
#: float32 instead of double, labels and masks resampled only where they land
#: (`_support_box`), the last echo read only when used: 58.5 / 58.6 s, peak 0.62 GiB. The
#: caudate (outside the box) keeps its 1.5-1.6 mm mean surface distance, above the two
#: atlases' own 1.38 mm.
REFINE_BOX_MM = ((-32.0, 32.0), (-80.0, 4.0), (-50.0, 14.0))
#: Refinement grid spacing (mm; at least the native voxel), SyN iterations per level
#: (4, 2, 1 x spacing) and the margin (mm) over which the refinement fades to zero at the
#: box edges (a displacement field is identity outside its box; the taper avoids a seam).
#: Iterations measured (benchmark of `IRON_WEIGHT`, Dice SN / RN / DN / GP, CPU s per
#: session): 40x20x10 0.63 / 0.80 / 0.91 / 0.79, 217 s; **30x20x4** 0.62 / 0.79 / 0.90 /
#: 0.78, 174 s; 40x20x0 0.60 / 0.78 / 0.89 / 0.78, 154 s.
REFINE_SPACING_MM = 1.0
REFINE_ITERATIONS = (30, 20, 4)
REFINE_TAPER_MM = 4.0
#: Transform of the refinement: "SyN" (symmetric) or "GaussianDisplacementField" (greedy:
#: one metric evaluation per iteration and no field inversion).
REFINE_TRANSFORM = "SyN"
#: Gradient step of the refinement. Measured (benchmarks/accuracy_registration.py, 1 mm,
#: 1 ITK thread, SyN radius 1; Dice CN PUT GP TH PUL SN RN DN, mean; smallest Jacobian
#: determinant of the refinement's field, `jacobian_determinant`; CPU s unchanged, 113-118):
#:
#: ==========  ======  ===========================================  =====  =========
#: step        seed    Dice                                         mean   min det
#: ==========  ======  ===========================================  =====  =========
#: 0.1 before  3       .818 .864 .782 .882 .498 .623 .785 .902      .769   0.62
#: 0.1 before  4       .818 .867 .780 .886 .557 .612 .760 .905      .773   0.58
#: 0.3         3       .819 .874 .793 .885 .579 .676 .825 .927      .797   0.32
#: 0.3         4       .820 .876 .788 .884 .663 .675 .811 .925      .805   0.28
#: 0.4         3       .820 .877 .796 .886 .610 .696 .832 .930      .806   0.26
#: **0.5**     3       .819 .879 .797 .887 .630 .713 .839 .933      .812   0.21
#: **0.5**     4       .820 .882 .794 .885 .716 .709 .841 .934      .823   0.18
#: 0.7         3       .820 .882 .798 .887 .663 .733 .846 .936      .821   0.16
#: 1.0         3       .821 .885 .807 .886 .688 .751 .860 .942      .830   0.09
#: ==========  ======  ===========================================  =====  =========
#:
#: The 30x20x4 iterations had not converged at 0.1; larger steps follow the session's iron
#: contrast further and compress the field more (no fold in any row). 0.5 keeps the smallest
#: determinant near 0.2, a margin that 1.0 (0.09) no longer has. The greedy field
#: ("GaussianDisplacementField", step 0.2: .812 .896 .826 .891 .569 .778 .857 .946 at seed
#: 3) folded in 0.19-0.29 % of the box (determinant down to -0.8); with its total field
#: smoothed (variance 1) it no longer folds but loses (.811 .859 .761 .866 .447 .549 .747 .833).
REFINE_STEP = 0.5
#: Smoothing (variance, voxels) of the refinement's update field and total field.
REFINE_FIELD_SIGMAS = (3, 0)
#: Local correlation radius (voxels) of the refinement. Radius 1 halves the refinement's time
#: (1 mm session 65 -> 45 s wall, 113 -> 78 s CPU, 2 ITK threads) but compresses its field
#: more: at step 0.5 Dice seed 3 / 4 .819/.820 .876/.880 .793/.795 .886/.887 .652/.733
#: .718/.718 .842/.851 .934/.931 (mean .815/.827) with the smallest Jacobian determinant
#: 0.095/0.061 (no fold, but no margin); at step 0.3 the margin is back (0.24/0.21) and the
#: nigra drops below the default (.693/.692, mean .801/.811). Not the default.
REFINE_CC_RADIUS = 2
#: The refinement's iron template on the template labels' own grid (1 mm) instead of the
#: registration grid (`REG_RESOLUTION`, 2 mm), where the thin pallidum loses its shape
#: (measured in `REFINE_BOX_MM`'s table).
REFINE_FINE_IRON = True
#: Apply the local refinement by default (with ``iron_img``).
REFINE = True
#: SyN iterations at 8, 4 and 2 mm without and with the local refinement (with: measured at
#: `LINEAR_ITERATIONS` and, 60x10x0 since the refinement covers the pallidum and pulvinar,
#: in `REFINE_BOX_MM`'s table; without: not re-measured, the value of `IRON_WEIGHT`'s table).
SYN_ITERATIONS = (60, 40, 10)
SYN_ITERATIONS_REFINED = (60, 10, 0)
#: Linear stages of the template registration (rigid, affine): iterations at 8, 4 and 2 mm
#: and the convergence threshold (ANTs: slope of the metric over the last 10 iterations).
#:
#: Where the time went (default before, 1 mm, 2 ITK threads, antsRegistration --verbose, wall
#: s on shared cores): T1w -> MEGRE rigid 8; template -> T1w rigid 11, affine 16, SyN 113
#: (8 mm 11, 4 mm 100: about 2.5 s per iteration, two local-correlation channels evaluated
#: twice per symmetric iteration; the 2 mm level with 0 iterations < 1); refinement 62 (4 mm
#: 3, 2 mm 15, the four 1 mm iterations 40-45); iron channel resampling 0.5, cached template
#: channels 0.5, composed fields 2-3, label transfer 4-11. The linear stages converged after
#: 15-42 iterations per level (of 500/250/100), so smaller caps only trim the slow 2 mm level.
#:
#: Measured on benchmarks/accuracy_registration.py (see `IRON_WEIGHT`; 1 mm, seed 3, 2 ITK
#: threads; methods ``default-issue11``, ``issue11+...``, ``default+...``): Dice (left/right
#: mean; 3 decimals, a method's rerun moved the mean by 0.001) and CPU s of one session
#: (T1w -> MEGRE rigid, template -> T1w, refinement, labels). The cores were shared with
#: other jobs (load 3-4.5 on 2 cores), so times vary by up to 30 % between runs; the last
#: two rows ran back to back:
#:
#: ================================  =====  =====  =====  =====  =====  =====  =====  =====  ======  =====
#: variant                           CN     PUT    GP     TH     PUL    SN     RN     DN     mean    CPU s
#: ================================  =====  =====  =====  =====  =====  =====  =====  =====  ======  =====
#: before: rigid + affine 500x250x   0.813  0.874  0.784  0.880  0.469  0.623  0.793  0.896  0.7668  249
#: 100, SyN 60x40x0, refine 30x20x4
#: no rigid stage, affine 100x50x25  0.813  0.874  0.784  0.879  0.469  0.622  0.795  0.895  0.7662  190
#: SyN 60x30x0 (linear as before)    0.813  0.873  0.781  0.878  0.471  0.620  0.791  0.896  0.7654  177
#: **both, SyN 60x20x0**             0.812  0.873  0.783  0.877  0.477  0.618  0.793  0.898  0.7664  149
#: ... SyN 60x10x0                   0.806  0.873  0.786  0.872  0.481  0.624  0.804  0.895  0.7677  121
#: ... refinement 30x20x2            0.811  0.872  0.780  0.876  0.475  0.611  0.785  0.893  0.7630  131
#: ... greedy refinement [1]         0.812  0.888  0.810  0.888  0.560  0.740  0.839  0.940  0.8098  216
#: ... greedy refinement, step 0.2   0.812  0.896  0.826  0.891  0.569  0.778  0.857  0.946  0.8219  216
#: back to back [2]: before          0.813  0.874  0.784  0.880  0.469  0.622  0.794  0.896  0.7664  200
#: back to back [2]: **default**     0.811  0.874  0.783  0.877  0.477  0.618  0.793  0.898  0.7664  151
#: ================================  =====  =====  =====  =====  =====  =====  =====  =====  ======  =====
#:
#: SyN 60x10x0 costs caudate and thalamus 0.007-0.008 and the shorter refinement the nigra
#: 0.012, so neither is the default. [2] On nearly quiet cores (load 1-2): wall 111 s
#: before, 84 s now (registration 106 -> 79: template -> T1w 62 -> 34, refinement 31 -> 33,
#: T1w -> MEGRE rigid 8 -> 8; labels 4.3 -> 4.5), peak RSS 0.91 GiB both; two earlier pairs
#: under load 3-4: CPU 200 / 147 and 200 / 151 s, wall 207 / 108 and 164 / 147 s. The
#: T1w-only registration (no R2* map, SyN 60x40x10; ``t1w-only-issue11``, ``t1w-only``):
#: 0.801 0.870 0.730 0.862 0.341 0.562 0.709 0.543 before, 0.800 0.870 0.730 0.862 0.341
#: 0.563 0.710 0.544 with the new linear stages (mean 0.677 both; CPU 201 and 190 s).
#: At 2 mm MEGRE voxels (the demo's; T1w 1 mm; 1 ITK thread, as with 2 sessions on 2
#: cores; ``--voxel 2.0 --threads 1``): before 0.818 0.863 0.774 0.875 0.432 0.556 0.767
#: 0.883 (mean 0.746), 137 s; new linear stages only 0.817 0.864 0.776 0.876 0.430 0.552
#: 0.767 0.883 (0.746), 128 s; **default** 0.814 0.864 0.773 0.873 0.430 0.543 0.762 0.876
#: (0.742), 85 s; with SyN 60x30x0 0.816 0.864 0.770 0.875 0.429 0.549 0.767 0.878
#: (0.743), 109 s. At 2 mm the refinement is coarse (7 s) and the nigra leans on the global
#: SyN: 60x20x0 loses it 0.013 there (60x30x0: 0.007), within 0.01 at 1 mm.
#: [1] ``REFINE_TRANSFORM`` "GaussianDisplacementField" (greedy, no symmetric half-way
#: fields) is slower here and changes the result far beyond this measurement's scope (nigra
#: +0.12-0.16, pulvinar +0.09): a candidate of its own, not checked for folding; not the
#: default. A second subject (``--seed 4 --threads 1``), default vs greedy step 0.2: CN .81
#: .81, PUT .87 .89, GP .78 .81, TH .88 .89, PUL .55 .62, SN .61 .74, RN .76 .85, DN .90 .94,
#: mean .77 .82; CPU 158 vs 240 s.
#: Then (``default+affine100x50x10-0.1``, SyN radius 1, refinement step 0.5, 2 ITK threads):
#: the affine stage at 100x50x10 on 10 % of the voxels instead of 100x50x25 on 25 % (4 s of a
#: 2 mm demo session's 23 s, ANTs --verbose): seed 3 .819 .878 .797 .886 .631 .713 .838 .933
#: against .820 .880 .797 .887 .629 .711 .839 .934; seed 4 .820 .881 .793 .885 .720 .710
#: .838 .929 against .820 .881 .793 .885 .717 .710 .839 .929.
LINEAR_ITERATIONS = (100, 50, 10)
LINEAR_CONVERGENCE = 1e-6
#: Fraction of the voxels (a regular grid) at which the linear stages' mutual information is
#: evaluated (time is proportional to it); `register_rigid` has its own, `RIGID_SAMPLING`.
LINEAR_SAMPLING = 0.1
#: `register_rigid` (T1w and FLAIR -> MEGRE): iterations at 8, 4 and 2 mm and the sampled
#: fraction of the voxels. Measured (benchmarks/accuracy_rigid.py, seeds 3 and 4, T1w ->
#: MEGRE RSS against the subject's known head motion of 3.9 deg and 2.7 mm; error = distance
#: between estimated and true positions over the MEGRE brain, mean / max mm; CPU s, 1 ITK
#: thread, best of 2, load ~3 on 2 cores):
#:
#: ==========================  =========  =========  =========  =========  =========
#: variant                     1 mm s3    1 mm s4    2 mm s3    2 mm s4    CPU s
#: ==========================  =========  =========  =========  =========  =========
#: before: 100x50x25, 0.25     0.05 0.09  0.05 0.10  0.06 0.13  0.06 0.13  10.0-10.4
#: 100x50x25, 0.1              0.05 0.11  0.06 0.13  0.09 0.17  0.06 0.13  4.2-4.7
#: 100x50x25, 0.05             0.05 0.10  0.04 0.09  0.06 0.13  0.06 0.12  2.4-2.7
#: 100x50x10, 0.25             0.05 0.09  0.05 0.10  0.06 0.12  0.06 0.14  4.9-5.3
#: **100x50x10, 0.1**          0.05 0.11  0.06 0.13  0.09 0.17  0.06 0.13  2.1-2.7
#: 100x50x0, 0.25              0.07 0.14  0.10 0.18  0.07 0.14  0.08 0.14  2.2-2.6
#: ==========================  =========  =========  =========  =========  =========
#:
#: (MEGRE/T1w voxel, seed: mean and max error, mm). Every variant is within 0.2 mm
#: everywhere in the brain (a tenth of the demo's voxel); the time is the 2 mm level's
#: (proportional to the sampled voxels). The
#: default keeps >= 10 % of the voxels so that the 8 mm level still has ~1000 samples for the
#: 32-bin histogram (0.05 leaves ~500 on a 2 mm whole-head grid, fewer with partial
#: coverage). On the FLAIR-like phantom of tests/test_registration.py (5 deg, 5 mm; error over
#: an 80 mm cube): before 0.81 / 1.19 mm, 2.8 s; **default** 0.84 / 1.17 mm, 0.6 s;
#: 100x50x25 at 0.05: 1.48 / 2.67 mm (too few samples).
RIGID_ITERATIONS = (100, 50, 10)
RIGID_SAMPLING = 0.1
#: Fewest samples of the coarsest level of a linear stage's mutual information (32 bins):
#: on small grids (a 2.5 mm FLAIR, a partial-coverage slab) the fraction rises until the
#: 8 mm level has them (a 2 mm whole head keeps `RIGID_SAMPLING`/`LINEAR_SAMPLING`). Without
#: it the 64x64x48 test phantom's 8 mm level had ~300 samples and its FLAIR -> MEGRE rigid
#: result varied from run to run (2 ITK threads): caudate chi from FLAIR-space labels 1.9,
#: 1.9, 2.2 % off the MEGRE-space mean in three runs; with it -0.4 % in three (0.6 % at most
#: over the four nuclei and both spaces; tests/test_user_rois.py allows 2 %).
MIN_LINEAR_SAMPLES = 1000
#: A rigid stage before the affine one of the template registration (the affine stage finds
#: the rotation itself; measured in `LINEAR_ITERATIONS`' table).
RIGID_BEFORE_AFFINE = False
#: Convergence threshold of the SyN stages (not varied: the 4 mm level does not reach 1e-6 in
#: 20-40 iterations, the 8 mm level converges at ~34 of 60).
SYN_CONVERGENCE = 1e-6
#: Metric of the template -> T1w SyN's anatomical channel ("CC": local correlation, or "MI")
#: and the local correlation's radius (voxels of each level) for the session's SyN channels.
#: The 4 mm SyN level was most of a 2 mm session's registration time (about 1.4 s CPU per
#: iteration with two radius-2 channels; ANTs --verbose on a demo session). Measured
#: (benchmarks/accuracy_registration.py, 1 mm, seed 3, 1 ITK thread; Dice CN PUT GP TH PUL
#: SN RN DN, mean; CPU s of the session at 1 mm / of a demo session at 2 mm, rigid included):
#:
#: ========================  =============================================  =====  =========
#: variant                   Dice                                           mean   CPU s
#: ========================  =============================================  =====  =========
#: CC radius 2 (before)      .812 .874 .783 .877 .477 .618 .793 .898        .766   151 / 45
#: **CC radius 1**           .818 .864 .782 .882 .498 .623 .785 .902        .769   115 / 23
#: MI for the T1w channel    .779 .858 .765 .866 .437 .622 .770 .885        .748   127 / 29
#: ========================  =============================================  =====  =========
#:
#: (radius 1 on the 4 mm level is a 12 mm window, radius 2 a 20 mm one.)
SYN_T1W_METRIC = "CC"
SYN_CC_RADIUS = 1
#: Version of the cached template channels (iron template, moving mask).
CHANNELS_VERSION = "1"


def _ants(n_threads=None):
    """Import ants after setting the ITK thread count (ITK reads it when it starts)."""
    if n_threads:
        os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(int(n_threads))
    import ants
    return ants


# ----------------------------------------------------------------------------- images

def _as_img3d(img, what="image"):
    if isinstance(img, (str, Path)):
        path = Path(img)
        try:
            img = nib.load(str(path))
        except FileNotFoundError:
            raise InputError(f"{path}: {what} not found") from None
        except Exception as exc:
            raise InputError(f"{path}: {what} cannot be read as NIfTI ({exc}); re-convert it") from None
    if img.ndim == 4 and img.shape[3] == 1:
        img = nib.Nifti1Image(np.asanyarray(img.dataobj)[..., 0], img.affine)
    if img.ndim != 3:
        raise InputError(f"{getattr(img, 'get_filename', lambda: what)() or what}: expected a 3-D "
                         f"{what}, got shape {img.shape}")
    return img


def native_reference(magnitude, affine=None):
    """The native-space reference image: root-sum-of-squares of the magnitude echoes.

    Parameters
    ----------
    magnitude : MegreData, nibabel image (3-D or 4-D, echoes last) or ndarray
    affine : ndarray (4, 4), optional
        Needed when ``magnitude`` is an array.

    Returns
    -------
    nibabel.Nifti1Image
        3-D float32 image on the MEGRE grid.
    """
    if hasattr(magnitude, "magnitude") and hasattr(magnitude, "affine"):  # MegreData
        data, affine = magnitude.magnitude, magnitude.affine
    elif isinstance(magnitude, nib.spatialimages.SpatialImage):
        data, affine = np.asanyarray(magnitude.dataobj), magnitude.affine
    else:
        data = np.asarray(magnitude)
        if affine is None:
            raise ValueError("affine is required when magnitude is an array")
    data = np.asarray(data, np.float32)
    if data.ndim == 4:
        data = np.sqrt(np.sum(np.square(data, dtype=np.float64), axis=-1)).astype(np.float32)
    if data.ndim != 3:
        raise ValueError(f"magnitude must be 3-D or 4-D, got shape {data.shape}")
    img = nib.Nifti1Image(data, np.asarray(affine, float))
    img.header.set_xyzt_units("mm", "sec")
    return img


def _last_echo(magnitude):
    """The last (most T2*-weighted) echo as a 3-D image, or None for a single 3-D image."""
    if hasattr(magnitude, "magnitude") and hasattr(magnitude, "affine"):
        data, affine = magnitude.magnitude, magnitude.affine
    elif isinstance(magnitude, nib.spatialimages.SpatialImage):
        data, affine = magnitude.dataobj, magnitude.affine
    else:
        return None
    if len(data.shape) != 4 or data.shape[3] < 2:
        return None
    return nib.Nifti1Image(np.asarray(data[..., -1], np.float32), affine)


def _save(img, path):
    img = nib.Nifti1Image(np.asarray(img.dataobj, np.float32), img.affine)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(path))
    return str(path)


def _resample_grid(img, spacing):
    """A grid covering ``img``'s field of view with voxels of ``spacing`` mm (same axes)."""
    zooms = np.sqrt((img.affine[:3, :3] ** 2).sum(0))
    if np.all(zooms >= spacing - 1e-3):
        return img.shape[:3], img.affine
    extent = np.asarray(img.shape[:3]) * zooms
    shape = tuple(int(n) for n in np.maximum(np.ceil(extent / spacing), 1))
    direction = img.affine[:3, :3] / zooms
    new = np.eye(4)
    new[:3, :3] = direction * spacing
    # keep the field-of-view corner (voxel edges) in place
    corner = img.affine[:3, :3] @ np.full(3, -0.5) + img.affine[:3, 3]
    new[:3, 3] = corner + new[:3, :3] @ np.full(3, 0.5)
    return shape, new


#: The last few `_downsample` results, ``(source image, spacing, result)``: a session passes
#: the same native reference and T1w objects to `register_rigid` and `register_to_session`.
_DOWNSAMPLED = []


def _downsample(img, spacing):
    """``img`` resampled (linear, after an anti-alias Gaussian) to ``spacing`` mm voxels
    (the same image object at the same spacing is resampled once; treat the result as read
    only)."""
    for src, sp, out in _DOWNSAMPLED:
        if src is img and sp == spacing:
            return out
    out = _downsample_new(img, spacing)
    _DOWNSAMPLED.append((img, spacing, out))
    del _DOWNSAMPLED[:-4]
    return out


def _downsample_new(img, spacing):
    from scipy import ndimage
    shape, affine = _resample_grid(img, spacing)
    if shape == img.shape[:3] and np.allclose(affine, img.affine):
        return img
    data = np.asarray(img.dataobj, np.float32)
    zooms = np.sqrt((img.affine[:3, :3] ** 2).sum(0))
    sigma = np.maximum((spacing / zooms - 1.0) * 0.5, 0)
    data = ndimage.gaussian_filter(data, sigma) if np.any(sigma > 0) else data
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1)
    m = np.linalg.inv(img.affine) @ affine
    coords = (m[:3, :3] @ ijk + m[:3, 3:4]).reshape((3,) + shape)
    out = ndimage.map_coordinates(data, coords, order=1, mode="nearest")
    return nib.Nifti1Image(out.astype(np.float32), affine)


def _crop_to_box(img, lo, hi):
    """Crop ``img`` to the world bounding box [lo, hi] (mm)."""
    inv = np.linalg.inv(img.affine)
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
    ijk = (inv[:3, :3] @ corners.T + inv[:3, 3:4]).T
    i0 = np.clip(np.floor(ijk.min(0)).astype(int), 0, np.asarray(img.shape[:3]) - 1)
    i1 = np.clip(np.ceil(ijk.max(0)).astype(int) + 1, 1, np.asarray(img.shape[:3]))
    data = np.asarray(img.dataobj, np.float32)[i0[0]:i1[0], i0[1]:i1[1], i0[2]:i1[2]]
    affine = img.affine.copy()
    affine[:3, 3] = img.affine[:3, :3] @ i0 + img.affine[:3, 3]
    return nib.Nifti1Image(data, affine)


def _bbox_world(img):
    ijk = np.array([[a, b, c] for a in (0, img.shape[0] - 1) for b in (0, img.shape[1] - 1)
                    for c in (0, img.shape[2] - 1)], float)
    xyz = (img.affine[:3, :3] @ ijk.T + img.affine[:3, 3:4]).T
    return xyz.min(0), xyz.max(0)


# ----------------------------------------------------------------------------- ANTs calls

def _stage(kind, fixed, moving, iterations, shrink, smooth, step=0.1, metric="MI", bins=32,
           extra=(), masks=None, convergence=1e-6, sampling=None, field_sigmas=(3, 0),
           cc_radius=2):
    """antsRegistration arguments of one stage.

    ``extra`` adds channels: ``(fixed, moving)`` pairs compared by mutual information, or
    ``(fixed, moving, metric, weight)`` with ``metric`` "CC" or "MI" (SyN stages only when
    ``metric`` is given: linear stages keep the first, anatomical, channel). ``masks`` is
    ``(fixed_mask, moving_mask)`` (either may be None) restricting every metric of the stage.
    ``sampling``: fraction of the voxels (regular grid) for the linear stages' mutual
    information; default `LINEAR_SAMPLING`. ``field_sigmas``: the deformable stages' update
    and total field smoothing (variance, voxels; ANTs' ``SyN[step,update,total]``);
    ``cc_radius`` the local correlation's neighbourhood radius (voxels).
    """
    sampling = LINEAR_SAMPLING if sampling is None else sampling
    deformable = kind in ("SyN", "GaussianDisplacementField")
    if not deformable:
        sampling = _sampling_floor(fixed, sampling, shrink[0])
    pairs = [(fixed, moving, metric if deformable else "MI", 1.0)]
    for e in extra:
        if len(e) == 2:
            pairs.append((e[0], e[1], "MI", 1.0))
        elif deformable:
            pairs.append(tuple(e))
    metrics = []
    for f, m, kind_metric, weight in pairs:
        if deformable:
            metrics.append(f"CC[{f},{m},{weight:g},{cc_radius}]" if kind_metric == "CC"
                           else f"MI[{f},{m},{weight:g},{bins}]")
        else:
            metrics.append(f"MI[{f},{m},{weight:g},{bins},Regular,{sampling:g}]")
    transform = (f"{kind}[{step},{field_sigmas[0]:g},{field_sigmas[1]:g}]" if deformable
                 else f"{kind}[{step}]")
    args = []
    for m in metrics:
        args += ["--metric", m]
    args += ["--transform", transform,
             "--convergence", f"[{'x'.join(map(str, iterations))},{convergence:g},10]",
             "--shrink-factors", "x".join(map(str, shrink)),
             "--smoothing-sigmas", "x".join(map(str, smooth)) + "vox"]
    if masks is not None and any(x is not None for x in masks):
        fixed_mask = masks[0] or _ones_like(fixed)
        args += ["--masks", f"[{fixed_mask}{',' + str(masks[1]) if masks[1] else ''}]"]
    return args


def _sampling_floor(fixed, sampling, coarsest_shrink):
    """``sampling`` raised so that the coarsest level keeps `MIN_LINEAR_SAMPLES` samples of
    the ``fixed`` image file (small or partial-coverage grids; at most all voxels)."""
    n_voxels = float(np.prod(nib.load(str(fixed)).shape[:3]))
    needed = MIN_LINEAR_SAMPLES * float(coarsest_shrink) ** 3 / n_voxels
    return float(min(1.0, max(sampling, np.ceil(needed * 100) / 100)))


def _ones_like(path):
    """An all-ones mask on the grid of the image file ``path`` (ANTs here takes no NULL mask)."""
    out = str(path).replace(".nii", "_ones.nii")
    if not os.path.exists(out):
        img = nib.load(str(path))
        _save(nib.Nifti1Image(np.ones(img.shape[:3], np.float32), img.affine), out)
    return out


def _run_ants(fixed, moving, stages, prefix, init="com", n_threads=None, seed=SEED):
    """Run antsRegistration on image files; returns ``(affine_mat, warp or None, inverse_warp)``."""
    ants = _ants(n_threads)
    prefix = str(prefix)
    if init == "com":
        init_args = ["--initial-moving-transform", f"[{fixed},{moving},1]"]
    elif init == "identity":
        init_args = []
    else:
        init_args = ["--initial-moving-transform", str(init)]
    args = ["--dimensionality", "3", "--float", "1", "--collapse-output-transforms", "1",
            "--output", f"[{prefix}]", "--interpolation", "Linear",
            "--winsorize-image-intensities", "[0.005,0.995]", "--use-histogram-matching", "0",
            "--random-seed", str(seed), "--write-composite-transform", "0"] + init_args
    for st in stages:
        args += st
    try:
        ants.registration(args, None)
    except RuntimeError as exc:
        raise BidsIronError(f"ANTs registration of {Path(moving).name} to {Path(fixed).name} failed "
                            f"({exc}); check that both images show the head") from None
    affine = prefix + "0GenericAffine.mat"
    warp = prefix + "1Warp.nii.gz"
    inv = prefix + "1InverseWarp.nii.gz"
    return affine, (warp if os.path.exists(warp) else None), (inv if os.path.exists(inv) else None)


def _levels(syn_iterations):
    return dict(shrink=(4, 2, 1), smooth=(2, 1, 0), syn=tuple(syn_iterations))


def _affine_syn(fixed, moving, prefix, syn_metric, syn_iterations, n_threads, seed, rigid=None,
                init="com", extra=(), masks=None, linear_iterations=None,
                linear_convergence=None, syn_convergence=None, cc_radius=2):
    """Rigid (``rigid``, default `RIGID_BEFORE_AFFINE`), affine and SyN stages in one
    antsRegistration run; linear iterations and convergence thresholds default to
    `LINEAR_ITERATIONS`, `LINEAR_CONVERGENCE` and `SYN_CONVERGENCE`."""
    lv = _levels(syn_iterations)
    rigid = RIGID_BEFORE_AFFINE if rigid is None else rigid
    lin = tuple(LINEAR_ITERATIONS if linear_iterations is None else linear_iterations)
    lin_conv = LINEAR_CONVERGENCE if linear_convergence is None else linear_convergence
    syn_conv = SYN_CONVERGENCE if syn_convergence is None else syn_convergence
    stages = []
    if rigid:
        stages.append(_stage("Rigid", fixed, moving, lin, lv["shrink"], lv["smooth"],
                             extra=extra, masks=masks, convergence=lin_conv))
    stages.append(_stage("Affine", fixed, moving, lin, lv["shrink"], lv["smooth"],
                         extra=extra, masks=masks, convergence=lin_conv))
    if any(lv["syn"]):
        stages.append(_stage("SyN", fixed, moving, lv["syn"], lv["shrink"], lv["smooth"],
                             step=0.1, metric=syn_metric, extra=extra, masks=masks,
                             convergence=syn_conv, cc_radius=cc_radius))
    return _run_ants(fixed, moving, stages, prefix, init=init, n_threads=n_threads, seed=seed)


# ----------------------------------------------------------------------------- results

@dataclass
class RigidTransform:
    """A rigid transform from `register_rigid` (moving image -> fixed grid).

    ``path`` is an ANTs ``.mat`` usable with antsApplyTransforms; ``matrix`` the 4x4 RAS
    world matrix mapping a FIXED-space point to the MOVING-space point it shows (the
    resampling direction).
    """

    path: str
    matrix: np.ndarray

    @property
    def translation_mm(self):
        """Length (mm) of the translation of the world centre (0, 0, 0)."""
        return float(np.linalg.norm(self.matrix[:3, 3]))

    @property
    def rotation_deg(self):
        """Rotation angle (degrees) of the rotation part."""
        r = self.matrix[:3, :3]
        return float(np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1, 1))))


@dataclass
class SessionRegistration:
    """Template (and SUIT) -> native MEGRE transforms of one session.

    Attributes
    ----------
    native : nibabel image
        The native reference (RSS magnitude) on the MEGRE grid.
    template : str
    transforms : list of str
        ANTs transform files, antsApplyTransforms order, that resample a template-space image
        onto the native grid (``-t`` list: last applied first to native points).
    suit_transforms : list of str or None
        SUIT -> template files, appended after ``transforms`` for SUIT-space images.
    files : dict of str -> str
        Derivative files: ``"from-<tpl>_to-MEGRE_mode-image_xfm.nii.gz"`` (and
        ``"from-SUIT_to-MEGRE_mode-image_xfm.nii.gz"`` when the dentate is used) are ANTs
        displacement fields composed over the native field of view on a 2 mm grid; with a T1w
        also ``"from-T1w_to-MEGRE_mode-image_xfm.mat"`` and ``"from-<tpl>_to-T1w_..."`` parts.
    timings : dict of str -> float
        Seconds per step.
    """

    native: object
    template: str
    transforms: list
    suit_transforms: list | None = None
    files: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    work_dir: str | None = None
    #: template-side images on the registration grid (``"iron"``: `templates.iron_template`;
    #: ``"mask"``: the dilated brain mask), cached per run
    channels: dict = field(default_factory=dict)
    #: folder shared by the sessions of a run (SUIT transform, template channels and labels)
    cache_dir: str | None = None
    #: checks of the transforms: ``refine_jacobian_min`` and ``refine_folded_percent`` of the
    #: local refinement's field (`jacobian_determinant`; empty without the refinement)
    quality: dict = field(default_factory=dict)

    def chain(self, space=None):
        """Transform list for images in ``space`` (template name or ``"SUIT"``)."""
        if space in (None, self.template):
            return list(self.transforms)
        if space == "SUIT" and self.suit_transforms:
            return list(self.transforms) + list(self.suit_transforms)
        raise BidsIronError(f"no transform from space {space} to MEGRE (registered: {self.template})")

    def to_native(self, img, interpolation="linear", space=None):
        """Resample a template-space (or SUIT) image onto the native grid; returns an array."""
        return resample_to_native(img, self.native, self.chain(space), interpolation)


@dataclass
class NativeLabels:
    """Labels on the native grid: ``labels`` (int16, `rois.NATIVE_LABELS` indices) and the
    template brain mask (bool); ``image`` is the dseg NIfTI, ``table`` its (index, name) rows."""

    labels: np.ndarray
    brain_mask: np.ndarray | None
    image: object
    table: list


def _to_ants_image(img, ants):
    return ants.from_nibabel_nifti(img) if hasattr(ants, "from_nibabel_nifti") else ants.from_nibabel(img)


def _to_ants(img, ants):
    """nibabel 3-D image -> ANTsImage (RAS -> LPS), float32."""
    data = np.asarray(img.dataobj, np.float32)
    zooms = np.sqrt((img.affine[:3, :3] ** 2).sum(0))
    direction = img.affine[:3, :3] / zooms
    flip = np.diag([-1.0, -1.0, 1.0])
    origin = flip @ img.affine[:3, 3]
    return ants.from_numpy(data, origin=tuple(origin), spacing=tuple(zooms),
                           direction=flip @ direction)


def resample_to_native(img, native, transforms, interpolation="linear", default=0.0, n_threads=None):
    """Apply ANTs transforms to ``img`` and sample it on ``native``'s grid.

    Parameters
    ----------
    img : nibabel image or path
        The moving image (3-D).
    native : nibabel image or path
        Defines the output grid (the MEGRE grid).
    transforms : list of str
        antsApplyTransforms order; ``[]`` for a pure resampling.
    interpolation : {"linear", "nearestNeighbor", "genericLabel", "bSpline", ...}

    Returns
    -------
    ndarray (float32; integer-valued for label interpolators)
    """
    ants = _ants(n_threads)
    img = _as_img3d(img)
    native = _as_img3d(native, "native reference")
    if not transforms:
        transforms = [_identity_file()]
    box = _support_box(img, native, transforms, interpolation, default, ants)
    grid = native if box is None else _crop_grid(native, box)
    out = ants.apply_transforms(fixed=_to_ants(grid, ants), moving=_to_ants(img, ants),
                                transformlist=list(transforms), interpolator=interpolation,
                                whichtoinvert=[False] * len(transforms), defaultvalue=default,
                                singleprecision=True)
    out = out.numpy().astype(np.float32)
    if box is None:
        return out
    full = np.full(native.shape[:3], default, np.float32)
    full[tuple(slice(a, b) for a, b in box)] = out
    return full


#: Interpolators whose value at a point depends only on the moving voxels next to it, so that a
#: native voxel mapped outside the moving image's non-zero box (plus one voxel) gets 0.
_LOCAL_INTERPOLATORS = ("linear", "nearestNeighbor", "genericLabel")

#: Spacing (mm) of the coarse grids on which `_support_box` finds where an image lands.
SUPPORT_SPACING_MM = 4.0


def _crop_grid(img, box):
    """An empty image on the voxels ``box`` (``[(lo, hi)] * 3`` indices) of ``img``'s grid."""
    lo = np.array([a for a, _ in box])
    affine = img.affine.copy()
    affine[:3, 3] = img.affine[:3, :3] @ lo + img.affine[:3, 3]
    return nib.Nifti1Image(np.zeros(tuple(b - a for a, b in box), np.float32), affine)


def _support_box(img, native, transforms, interpolation, default, ants):
    """Index box ``[(lo, hi)] * 3`` of the native voxels that can receive a non-zero value of
    ``img`` (labels and masks cover a small part of the field of view: genericLabel on the
    whole 1 mm grid spent most of its time writing zeros), or None to resample everything.

    The moving image's non-zero bounding box plus 2 voxels is painted on a coarse grid
    (`SUPPORT_SPACING_MM`, every coarse cell that touches it), carried to a coarse native
    grid through ``transforms`` (linear, any value > 0), dilated by one coarse voxel and
    turned back into native indices: a superset of where the image can land, so the result
    is the same as resampling the whole grid.
    """
    from scipy import ndimage
    if default != 0 or interpolation not in _LOCAL_INTERPOLATORS:
        return None
    data = np.asanyarray(img.dataobj)
    nz = [np.flatnonzero(np.any(data != 0, axis=tuple(j for j in range(3) if j != k)))
          for k in range(3)]
    if any(len(n) == 0 for n in nz):
        return None
    lo = np.array([n[0] for n in nz], float) - 2.0
    hi = np.array([n[-1] for n in nz], float) + 2.0
    spacing = SUPPORT_SPACING_MM
    shape, affine = _resample_grid(img, spacing)
    # moving voxel coordinates of each coarse cell's corners along each axis (same axes)
    step = np.linalg.inv(img.affine)[:3, :3] @ affine[:3, :3]
    origin = (np.linalg.inv(img.affine) @ affine)[:3, 3]
    inside = np.ones(shape, bool)
    for k in range(3):
        ax = np.arange(shape[k], dtype=float)
        scale = step[k, k]
        first = origin[k] + (ax - 0.5) * scale
        last = origin[k] + (ax + 0.5) * scale
        a, b = np.minimum(first, last), np.maximum(first, last)
        hit = (b >= lo[k]) & (a <= hi[k])
        inside &= hit.reshape([-1 if j == k else 1 for j in range(3)])
    cshape, caffine = _resample_grid(native, spacing)
    coarse = nib.Nifti1Image(np.zeros(cshape, np.float32), caffine)
    out = ants.apply_transforms(fixed=_to_ants(coarse, ants),
                                moving=_to_ants(nib.Nifti1Image(inside.astype(np.float32),
                                                                affine), ants),
                                transformlist=list(transforms), interpolator="linear",
                                whichtoinvert=[False] * len(transforms), singleprecision=True)
    land = ndimage.binary_dilation(out.numpy() > 0, iterations=1)
    if not land.any():
        return None
    idx = np.argwhere(land)
    # coarse voxel centres -> native indices (same axes, `_resample_grid`); one coarse voxel more
    m = np.linalg.inv(native.affine) @ caffine
    corners = np.array([[i, j, k] for i in (idx[:, 0].min() - 1, idx[:, 0].max() + 1)
                        for j in (idx[:, 1].min() - 1, idx[:, 1].max() + 1)
                        for k in (idx[:, 2].min() - 1, idx[:, 2].max() + 1)], float)
    ijk = (m[:3, :3] @ corners.T + m[:3, 3:4]).T
    n = np.asarray(native.shape[:3])
    box_lo = np.clip(np.floor(ijk.min(0)).astype(int), 0, n)
    box_hi = np.clip(np.ceil(ijk.max(0)).astype(int) + 1, 0, n)
    if np.any(box_hi <= box_lo):
        return None
    if np.prod(box_hi - box_lo) > 0.7 * np.prod(n):
        return None
    return [(int(a), int(b)) for a, b in zip(box_lo, box_hi)]


_IDENTITY = None


def _identity_file():
    global _IDENTITY
    if _IDENTITY is None or not os.path.exists(_IDENTITY):
        ants = _ants()
        tx = ants.create_ants_transform(transform_type="AffineTransform", dimension=3)
        fd, path = tempfile.mkstemp(suffix="_identity.mat")
        os.close(fd)
        ants.write_transform(tx, path)
        atexit.register(Path(path).unlink, missing_ok=True)  # not one left behind a process
        _IDENTITY = path
    return _IDENTITY


def mask_to_native(mask_img, native, transforms, threshold=0.5):
    """A binary mask (e.g. a lesion mask in FLAIR space) on the native grid: linear
    interpolation of the 0/1 mask, then ``>= threshold`` (partial-volume fraction)."""
    img = _as_img3d(mask_img, "mask")
    data = (np.asanyarray(img.dataobj) > 0).astype(np.float32)
    out = resample_to_native(nib.Nifti1Image(data, img.affine), native, transforms, "linear")
    return out >= threshold


def _ants_mat_to_ras(path):
    """4x4 RAS matrix (fixed point -> moving point) of an ANTs affine ``.mat``."""
    ants = _ants()
    tx = ants.read_transform(path)
    p = np.asarray(tx.parameters, float)
    c = np.asarray(tx.fixed_parameters, float)
    a = p[:9].reshape(3, 3)
    t = p[9:12]
    flip = np.diag([-1.0, -1.0, 1.0])
    m = np.eye(4)
    m[:3, :3] = flip @ a @ flip
    m[:3, 3] = flip @ (t + c - a @ c)
    return m


def register_rigid(moving_img, fixed_img, work_dir=None, prefix="rigid_", n_threads=None,
                   reg_resolution=REG_RESOLUTION, seed=SEED):
    """Rigid registration (mutual information) of ``moving_img`` (FLAIR, T1w) to ``fixed_img``.

    Both images are registered on copies of at most ``reg_resolution`` mm voxels, at 8, 4 and
    2 mm. Use `resample_to_native` (``[result.path]``) to bring the moving image (or masks in
    its space, `mask_to_native`) onto the fixed grid.

    Returns
    -------
    RigidTransform
    """
    work = Path(work_dir or tempfile.mkdtemp(prefix="bids_iron_reg_"))
    work.mkdir(parents=True, exist_ok=True)
    fixed = _downsample(_as_img3d(fixed_img, "fixed image"), reg_resolution)
    moving = _downsample(_as_img3d(moving_img, "moving image"), reg_resolution)
    f = _save(fixed, work / f"{prefix}fixed.nii")
    m = _save(moving, work / f"{prefix}moving.nii")
    stages = [_stage("Rigid", f, m, RIGID_ITERATIONS, (4, 2, 1), (2, 1, 0),
                     convergence=LINEAR_CONVERGENCE, sampling=RIGID_SAMPLING)]
    affine, _, _ = _run_ants(f, m, stages, work / prefix, init="com", n_threads=n_threads, seed=seed)
    return RigidTransform(path=affine, matrix=_ants_mat_to_ras(affine))


def _file_key(paths, extra):
    h = hashlib.sha1()
    for p in paths:
        st = Path(p).stat()
        h.update(f"{Path(p).resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    h.update(json.dumps(extra, sort_keys=True).encode())
    return h.hexdigest()[:12]


#: SyN iterations (8, 4, 2 mm) of the SUIT -> template registration (once per run, before
#: the sessions' registrations can start), without and with the sessions' local refinement.
#: Measured with it (benchmarks/accuracy_registration.py, ``default+suit60x40x0``, 1 mm,
#: seeds 3 / 4): 60x40x10 21 s CPU at 2 mm (16 s of it the 2 mm level), dentate Dice .933 /
#: .934; **60x40x0** 4.7 s, dentate .934 / .929, every other nucleus within 0.004 (the local
#: refinement covers the dentate). Without the refinement the 2 mm level is needed: the
#: warped-copy test's right dentate drops to 0.79 (tests/test_registration.py).
SUIT_SYN_ITERATIONS = (60, 40, 10)
SUIT_SYN_ITERATIONS_REFINED = (60, 40, 0)


def register_suit(atlas_files, cache_dir, n_threads=None, seed=SEED, syn_iterations=None):
    """SUIT T1w -> template transforms (cached under ``cache_dir``); antsApplyTransforms order.

    The template is cropped to SUIT's field of view (+10 mm) and the registration starts at
    identity (SUIT coordinates are close to MNI). Runs once per set of input files; later calls
    reuse the files ``suit-to-<tpl>-<key>_0GenericAffine.mat`` / ``_1Warp.nii.gz``.
    """
    syn_iterations = SUIT_SYN_ITERATIONS if syn_iterations is None else tuple(syn_iterations)
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    tpl_path = atlas_files.t1w_coarse or atlas_files.t1w
    key = _file_key([atlas_files.suit_t1w, tpl_path],
                    {"v": PARAMS_VERSION, "syn": list(syn_iterations), "seed": seed})
    prefix = cache / f"suit-to-{atlas_files.template}-{key}_"
    affine, warp = str(prefix) + "0GenericAffine.mat", str(prefix) + "1Warp.nii.gz"
    if os.path.exists(affine) and os.path.exists(warp):
        return [warp, affine]
    with _cache_lock(cache):  # a parallel session registering SUIT: wait for its files
        if os.path.exists(affine) and os.path.exists(warp):
            return [warp, affine]
        return _register_suit(atlas_files, tpl_path, cache, affine=affine,
                              warp=warp, n_threads=n_threads, seed=seed,
                              syn_iterations=syn_iterations)


@contextlib.contextmanager
def _cache_lock(folder):
    """Exclusive lock of a cache folder shared by the sessions of a run (flock of the folder
    itself, so no lock file is left behind); no lock where the file system refuses it (the
    caches stay safe without: files are moved into place whole, and the seed makes them
    identical, only the work is duplicated)."""
    fd = None
    try:
        fd = os.open(str(folder), os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        pass
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


def _register_suit(atlas_files, tpl_path, cache, affine, warp, n_threads, seed,
                   syn_iterations):
    """`register_suit`'s registration, written to ``affine`` and ``warp`` in ``cache``."""
    suit = _downsample(_as_img3d(atlas_files.suit_t1w, "SUIT T1w"), REG_RESOLUTION)
    lo, hi = _bbox_world(suit)
    tpl = _crop_to_box(_downsample(_as_img3d(tpl_path, "template T1w"), REG_RESOLUTION),
                       lo - 10.0, hi + 10.0)
    # sessions running in parallel share the cache: each registers in a private folder and
    # moves the finished transforms into place (atomic; the seed makes them identical), the
    # affine last, so a session that finds both files finds them whole
    private = Path(tempfile.mkdtemp(prefix="suit-", dir=cache))
    try:
        f = _save(tpl, private / "fixed.nii")
        m = _save(suit, private / "moving.nii")
        a, w, _ = _affine_syn(f, m, private / "out_", "CC", syn_iterations, n_threads, seed,
                              rigid=False, init="identity", linear_iterations=(500, 250, 100),
                              linear_convergence=1e-6, syn_convergence=1e-6)
        if w:
            os.replace(w, warp)
        os.replace(a, affine)
    finally:
        shutil.rmtree(private, ignore_errors=True)
    return [warp, affine] if w else [affine]


_CHANNEL_FILES = set()


def _template_channels(atlas_files, cache_dir, suit_transforms, reg_resolution, iron=True,
                       fine=False):
    """Cached template-side channels on the ``reg_resolution`` grid: ``"iron"`` (the R2*-like
    `templates.iron_template`, with the SUIT dentate when registered) and ``"mask"`` (the
    template brain dilated by `MASK_MARGIN_MM`); with ``fine`` also ``"iron_fine"``, the iron
    template on the template labels' own grid (for the local refinement). Built once per
    atlas set and parameters."""
    from scipy import ndimage

    from . import templates as TP
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    tpl_path = atlas_files.t1w_coarse or atlas_files.t1w
    srcs = [tpl_path] + [a.dseg for a in atlas_files.atlases] + \
        [p for p in (atlas_files.brain_mask, atlas_files.wm_probseg) if p is not None] + \
        [p for p in (suit_transforms or []) if os.path.exists(p)]
    key = _file_key(srcs, {"v": CHANNELS_VERSION, "res": reg_resolution,
                           "margin": MASK_MARGIN_MM})
    mask_path = cache / f"tpl-{atlas_files.template}-{key}_mask.nii"
    iron_path = cache / f"tpl-{atlas_files.template}-{key}_iron.nii"
    fine_path = cache / f"tpl-{atlas_files.template}-{key}_ironfine.nii"

    def missing():
        return (atlas_files.brain_mask is not None and not mask_path.exists()) or \
            (iron and not iron_path.exists()) or (iron and fine and not fine_path.exists())

    out = {}
    # parallel sessions of a run: one builds, the others wait for its files (and find them
    # written when the lock is theirs: then no template grid is made)
    with _cache_lock(cache) if missing() else contextlib.nullcontext():
        grid = _downsample(_as_img3d(tpl_path, "template T1w"), reg_resolution) \
            if missing() else None
        if atlas_files.brain_mask is not None:
            path = mask_path
            if not path.exists():
                b = _as_img3d(atlas_files.brain_mask, "template brain mask")
                m = _downsample(nib.Nifti1Image((np.asarray(b.dataobj) > 0).astype(np.float32),
                                                b.affine), reg_resolution)
                m = _resample_like(m, grid) > 0.5
                vs = np.sqrt((grid.affine[:3, :3] ** 2).sum(0))
                m = ndimage.distance_transform_edt(~m, sampling=vs) <= MASK_MARGIN_MM
                _atomic_save(nib.Nifti1Image(m.astype(np.float32), grid.affine), path)
            out["mask"] = str(path)
        if iron:
            path = iron_path
            if not path.exists() or (fine and not fine_path.exists()):
                labels = cached_template_labels(atlas_files, cache)
                tl = labels[atlas_files.template]
                lab = np.asarray(tl.dataobj).astype(np.int16)
                if "SUIT" in labels and suit_transforms:
                    dent = np.rint(resample_to_native(labels["SUIT"], tl, suit_transforms,
                                                      "genericLabel")).astype(np.int16)
                    lab = np.where(dent > 0, dent, lab)
                img = TP.iron_template(atlas_files, {atlas_files.template:
                                                     nib.Nifti1Image(lab, tl.affine)})
                if not path.exists():
                    data = _resample_like(_downsample(img, reg_resolution), grid)
                    _atomic_save(nib.Nifti1Image(data, grid.affine), path)
                if fine and not fine_path.exists():
                    _atomic_save(nib.Nifti1Image(np.asarray(img.dataobj, np.float32),
                                                 img.affine), fine_path)
            out["iron"] = str(path)
            if fine:
                out["iron_fine"] = str(fine_path)
    _CHANNEL_FILES.update(out.values())
    return out


def _resample_like(img, grid):
    """``img`` linearly resampled onto ``grid``'s voxels (world coordinates)."""
    from scipy import ndimage
    if img.shape[:3] == grid.shape[:3] and np.allclose(img.affine, grid.affine, atol=1e-4):
        return np.asarray(img.dataobj, np.float32)
    ijk = np.indices(grid.shape[:3], dtype=np.float32).reshape(3, -1)
    m = np.linalg.inv(img.affine) @ grid.affine
    coords = m[:3, :3] @ ijk + m[:3, 3:4]
    return ndimage.map_coordinates(np.asarray(img.dataobj, np.float32), coords, order=1,
                                   mode="constant", cval=0).reshape(grid.shape[:3])


def _atomic_save(img, path):
    """Write ``img`` to ``path`` through a private temporary file (sessions share caches)."""
    fd, tmp = tempfile.mkstemp(suffix=".nii", dir=str(Path(path).parent))
    os.close(fd)
    _save(img, tmp)
    os.replace(tmp, path)


def _iron_on_grid(iron, grid_path, transforms, path, n_threads, reg_resolution=REG_RESOLUTION):
    """The session's R2* map resampled onto the registration grid ``grid_path``; through the
    inverse of the T1w -> MEGRE rigid ``transforms`` when the grid is the T1w's. Values are
    clipped to 0..100 1/s (bone and air give wild fits)."""
    ants = _ants(n_threads)
    data = np.clip(np.nan_to_num(np.asarray(iron.dataobj, np.float32)), 0, 100)
    fixed = ants.image_read(str(grid_path))
    moving = _to_ants(_downsample(nib.Nifti1Image(data, iron.affine), reg_resolution), ants)
    tx = list(transforms) or [_identity_file()]
    out = ants.apply_transforms(fixed=fixed, moving=moving, transformlist=tx,
                                interpolator="linear", whichtoinvert=[bool(transforms)] * len(tx))
    ants.image_write(out, str(path))
    return str(path)


def jacobian_determinant(displacement, affine):
    """Jacobian determinant of the map x -> x + u(x) of an ANTs/ITK displacement field.

    Parameters
    ----------
    displacement : ndarray, shape (X, Y, Z, 3) or (X, Y, Z, 1, 3)
        Displacement u (mm) in ITK's LPS world axes at each voxel, as antsRegistration writes
        its ``Warp.nii.gz`` files.
    affine : ndarray, shape (4, 4)
        The field's voxel -> RAS world (mm) matrix.

    Returns
    -------
    ndarray, shape (X, Y, Z), float32
        det(I + du/dx) (central differences inside, one-sided at the edges): 1 where the
        map keeps volume, < 1 where it shrinks, <= 0 where it folds (a tissue point lands
        behind its neighbour, so warped labels would tear or overlap).

    Examples
    --------
    A displacement u = 0.1 x (10 % stretch along x) has the determinant 1.1 everywhere:

    >>> import numpy as np
    >>> x = np.indices((6, 6, 6))[0].astype(np.float32) * 2.0        # 2 mm voxels, RAS x
    >>> u = np.zeros((6, 6, 6, 3), np.float32)
    >>> u[..., 0] = -0.1 * x                                          # LPS: x is negated
    >>> round(float(jacobian_determinant(u, np.diag([2.0, 2.0, 2.0, 1.0])).mean()), 3)
    1.1
    """
    u = np.asarray(displacement, np.float32)
    u = u.reshape(u.shape[:3] + (3,))
    m_inv = np.linalg.inv(np.asarray(affine, float)[:3, :3]).astype(np.float32)
    jac = np.empty(u.shape[:3] + (3, 3), np.float32)
    for a, sign in enumerate((-1.0, -1.0, 1.0)):  # LPS -> RAS components
        grads = np.gradient(sign * u[..., a])  # d u_a / d index_k
        for b in range(3):  # d u_a / d x_b = sum_k d u_a / d i_k * d i_k / d x_b
            jac[..., a, b] = sum(grads[k] * m_inv[k, b] for k in range(3))
    jac += np.eye(3, dtype=np.float32)
    return np.linalg.det(jac).astype(np.float32)


def _template_box_image(grid_img, box=REFINE_BOX_MM):
    """1 inside the world box ``box`` on ``grid_img``'s grid (template space), else 0."""
    shape, affine = grid_img.shape[:3], grid_img.affine
    axes = [np.arange(n, dtype=np.float32).reshape([-1 if j == i else 1 for j in range(3)])
            for i, n in enumerate(shape)]
    inside = np.ones(shape, bool)
    for k, (lo, hi) in enumerate(box):
        x = affine[k, 3] + sum(affine[k, i] * axes[i] for i in range(3))  # broadcast, no grid copy
        inside &= (x >= lo) & (x <= hi)
    return nib.Nifti1Image(inside.astype(np.float32), affine)


def _refine_local(native, iron_img, iron_template_path, transforms, work, n_threads, seed,
                  box=REFINE_BOX_MM, spacing=None, iterations=REFINE_ITERATIONS,
                  taper_mm=None, quality=None):
    """Local SyN refinement on the native grid around the template box ``box``.

    The iron template is carried to the session through ``transforms`` and registered again
    (SyN, local correlation, identity start) to the session's R2* map inside the box (plus
    ``taper_mm``), at ``spacing`` mm. The displacement field is tapered to zero at the crop's
    edges and returned as a transform file to put first in the chain (it moves native points
    before the global chain; identity outside the box). None when the box is not in view.
    ``quality`` (a dict) receives the tapered field's smallest Jacobian determinant
    (``refine_jacobian_min``) and the percentage of its voxels that fold (determinant <= 0,
    ``refine_folded_percent``).
    """
    from scipy import ndimage
    spacing = REFINE_SPACING_MM if spacing is None else spacing
    taper_mm = REFINE_TAPER_MM if taper_mm is None else taper_mm
    tpl_iron = _as_img3d(iron_template_path, "iron template")
    inbox = resample_to_native(_template_box_image(tpl_iron, box), native, transforms,
                               "linear", n_threads=n_threads) > 0.5
    if inbox.sum() < 100:
        return None
    zooms = np.sqrt((native.affine[:3, :3] ** 2).sum(0))
    pad = np.ceil(taper_mm / zooms).astype(int)
    ijk = np.argwhere(inbox)
    lo = np.maximum(ijk.min(0) - pad, 0)
    hi = np.minimum(ijk.max(0) + pad + 1, native.shape[:3])
    crop_affine = native.affine.copy()
    crop_affine[:3, 3] = native.affine[:3, :3] @ lo + native.affine[:3, 3]
    crop = nib.Nifti1Image(np.zeros(tuple(hi - lo), np.float32), crop_affine)
    crop = _downsample(crop, spacing) if np.any(zooms < spacing - 1e-3) else crop
    r2 = np.clip(np.nan_to_num(np.asarray(iron_img.dataobj, np.float32)), 0, 100)
    fixed_data = resample_to_native(nib.Nifti1Image(r2, iron_img.affine), crop, [], "linear",
                                    n_threads=n_threads)
    moving_data = resample_to_native(tpl_iron, crop, transforms, "linear", n_threads=n_threads)
    f = _save(nib.Nifti1Image(fixed_data, crop.affine), work / "refine_fixed.nii")
    m = _save(nib.Nifti1Image(moving_data, crop.affine), work / "refine_moving.nii")
    stage = _stage(REFINE_TRANSFORM, f, m, iterations, (4, 2, 1), (2, 1, 0), step=REFINE_STEP,
                   metric="CC", field_sigmas=REFINE_FIELD_SIGMAS,
                   cc_radius=REFINE_CC_RADIUS)
    prefix = str(work / "refine_")
    _run_ants(f, m, [stage], prefix, init="identity", n_threads=n_threads, seed=seed)
    warp = prefix + "0Warp.nii.gz"
    for p in (f, m, prefix + "0InverseWarp.nii.gz"):
        if os.path.exists(p):
            os.remove(p)
    if not os.path.exists(warp):
        return None
    img = nib.load(warp)
    field = np.asarray(img.dataobj, np.float32)
    cz = np.sqrt((crop.affine[:3, :3] ** 2).sum(0))
    edge = np.zeros(crop.shape[:3], bool)
    edge[1:-1, 1:-1, 1:-1] = True
    dist = ndimage.distance_transform_edt(edge, sampling=cz)
    weight = np.clip(dist / taper_mm, 0, 1).astype(np.float32)
    field = field * weight.reshape(weight.shape + (1,) * (field.ndim - 3))
    out = nib.Nifti1Image(field, img.affine, img.header)
    nib.save(out, warp)
    if quality is not None:
        det = jacobian_determinant(field, img.affine)
        quality.update(refine_jacobian_min=round(float(det.min()), 3),
                       refine_folded_percent=round(100.0 * float((det <= 0).mean()), 4))
    return warp


def register_to_session(magnitude_img, template, t1w_img=None, work_dir=None, cache_dir=None,
                        n_threads=None, reg_resolution=REG_RESOLUTION,
                        syn_iterations=None, seed=SEED, compose=True, use_t2w=True,
                        t1w_rigid=None, native=None, iron_img=None, iron_weight=None,
                        masked=None, refine=None, refine_box=None, refine_iterations=None):
    """Register a template (and SUIT) to one session's native MEGRE space.

    Parameters
    ----------
    magnitude_img : MegreData, nibabel image (3-D/4-D) or path
        The MEGRE magnitude; 4-D echoes are combined by RSS (`native_reference`).
    template : AtlasFiles or path or nibabel image
        `bids_iron.anatomy.templates.AtlasFiles` (its 2 mm T1w is used when present and its
        SUIT T1w, if any, is registered too) or a template T1w image.
    t1w_img : nibabel image or path, optional
        The session's T1w: then T1w -> MEGRE rigid and template -> T1w affine + SyN.
    work_dir : path, optional
        Where transform files are written (default: a new temporary folder).
    cache_dir : path, optional
        Where the SUIT -> template transform is cached (default ``work_dir``); give a folder
        shared by all sessions of a run to compute it once.
    n_threads : int, optional
        ITK threads (set before ANTs is first used in the process).
    reg_resolution : float
        Registration grid spacing (mm).
    syn_iterations : tuple of int, optional
        SyN iterations at 8, 4 and 2 mm (``(0, 0, 0)``: affine only); default
        `SYN_ITERATIONS`, or `SYN_ITERATIONS_REFINED` when the local refinement runs (the
        refinement at 1 mm replaces the costly 2 mm level where the nuclei are).
    seed : int
        antsRegistration random seed.
    compose : bool
        Also write the composed displacement fields (derivatives, ``files``).
    use_t2w : bool
        Without T1w, when the template has a T2w (``AtlasFiles.t2w_coarse``) and the MEGRE
        has several echoes, add a second mutual-information channel: template T2w <-> last
        echo (both show the iron-rich nuclei dark, which a T1w does not).
    t1w_rigid : RigidTransform, optional
        The T1w -> MEGRE rigid transform when the caller already has it (a session registers
        each image to MEGRE once); computed here otherwise.
    native : nibabel image, optional
        `native_reference` of ``magnitude_img`` when the caller already has it.
    iron_img : nibabel image, optional
        The session's R2* map (1/s) on the MEGRE grid: a second SyN channel, local correlation
        of this map (in the fixed space) with the template's iron contrast
        (`templates.iron_template`, built once per atlas set and cached), so that the nuclei
        that T1w barely shows (nigra, red nucleus, dentate, pulvinar) guide the warp.
    iron_weight : float, optional
        Weight of the iron channel against the anatomical one (1); default `IRON_WEIGHT`.
    masked : bool, optional
        Restrict every metric to the template brain dilated by `MASK_MARGIN_MM` (the scalp
        and neck do not pull); default `MASKED` with ``iron_img``, False without (the
        previous default, measured as such).
    refine : bool, optional
        With ``iron_img``: a local SyN refinement of the brainstem and cerebellar nuclei,
        pallidum and pulvinar (`REFINE_BOX_MM`) on the native grid, R2* against the warped
        1 mm iron template
        (`_refine_local`); default `REFINE`.
    refine_box : tuple of 3 (low, high) pairs, optional
        Template-space box (world mm) of the refinement; default `REFINE_BOX_MM`.
    refine_iterations : tuple of 3 int, optional
        Refinement SyN iterations at 4, 2, 1 x `REFINE_SPACING_MM`; default
        `REFINE_ITERATIONS`.

    Returns
    -------
    SessionRegistration
    """
    t_start = time.perf_counter()
    timings = {}
    work = Path(work_dir or tempfile.mkdtemp(prefix="bids_iron_reg_"))
    work.mkdir(parents=True, exist_ok=True)
    if isinstance(magnitude_img, (str, Path)):
        magnitude_img = nib.load(str(magnitude_img))
    native = native if native is not None else native_reference(magnitude_img)
    atlas_files = template if hasattr(template, "atlases") else None
    if atlas_files is not None:
        tpl_name = atlas_files.template
        tpl_img = _as_img3d(atlas_files.t1w_coarse or atlas_files.t1w, "template T1w")
    else:
        tpl_name = "template"
        tpl_img = _as_img3d(template, "template T1w")
    fixed = _save(_downsample(native, reg_resolution), work / "native_reg.nii")
    moving = _save(_downsample(tpl_img, reg_resolution), work / "template_reg.nii")
    extra = []
    t2w = getattr(atlas_files, "t2w_coarse", None) if use_t2w else None
    late = _last_echo(magnitude_img) if t2w is not None and t1w_img is None else None
    if late is not None:
        extra = [(_save(_downsample(late, reg_resolution), work / "native_late_reg.nii"),
                  _save(_downsample(_as_img3d(t2w, "template T2w"), reg_resolution),
                        work / "template_t2w_reg.nii"))]
    iron_weight = IRON_WEIGHT if iron_weight is None else float(iron_weight)
    refine = (REFINE and iron_img is not None and atlas_files is not None) if refine is None \
        else bool(refine)
    if syn_iterations is None:
        syn_iterations = SYN_ITERATIONS_REFINED if refine else SYN_ITERATIONS
    masked = (MASKED and iron_img is not None) if masked is None else bool(masked)
    files = {}
    suit = None
    if atlas_files is not None and atlas_files.suit_t1w is not None:
        t0 = time.perf_counter()
        suit = register_suit(atlas_files, cache_dir or work, n_threads, seed,
                             SUIT_SYN_ITERATIONS_REFINED if refine else SUIT_SYN_ITERATIONS)
        timings["suit_to_template"] = time.perf_counter() - t0
    rigid = None
    if t1w_img is not None:
        t0 = time.perf_counter()
        t1w = _as_img3d(t1w_img, "T1w")
        t1w_reg = _save(_downsample(t1w, reg_resolution), work / "t1w_reg.nii")
        rigid = t1w_rigid or register_rigid(t1w, native, work, prefix="from-T1w_to-MEGRE_",
                                            n_threads=n_threads, reg_resolution=reg_resolution,
                                            seed=seed)
        timings["t1w_to_megre"] = time.perf_counter() - t0
    syn_extra, masks, tpl_files = [], None, {}
    if atlas_files is not None:
        t0 = time.perf_counter()
        tpl_files = _template_channels(atlas_files, cache_dir or work, suit, reg_resolution,
                                       fine=bool(refine and iron_img is not None
                                                 and REFINE_FINE_IRON))
        if masked and tpl_files.get("mask"):
            masks = (None, tpl_files["mask"])
        if iron_img is not None:
            grid = t1w_reg if t1w_img is not None else fixed
            iron_fixed = _iron_on_grid(_as_img3d(iron_img, "R2* map"), grid,
                                       [rigid.path] if rigid is not None else [],
                                       work / "iron_reg.nii", n_threads, reg_resolution)
            syn_extra = [(iron_fixed, tpl_files["iron"], "CC", iron_weight)]
            extra = list(extra) + syn_extra
        timings["template_channels"] = time.perf_counter() - t0
    timings["prepare"] = time.perf_counter() - t_start
    t0 = time.perf_counter()
    if t1w_img is None:
        affine, warp, _ = _affine_syn(fixed, moving, work / f"from-{tpl_name}_to-MEGRE_",
                                      SYN_METRIC, syn_iterations, n_threads, seed, extra=extra,
                                      masks=masks, cc_radius=SYN_CC_RADIUS)
        transforms = [warp, affine] if warp else [affine]
        timings["template_to_megre"] = time.perf_counter() - t0
    else:
        affine, warp, _ = _affine_syn(t1w_reg, moving, work / f"from-{tpl_name}_to-T1w_",
                                      SYN_T1W_METRIC, syn_iterations, n_threads, seed,
                                      extra=extra, masks=masks, cc_radius=SYN_CC_RADIUS)
        timings["template_to_t1w"] = time.perf_counter() - t0
        transforms = [rigid.path] + ([warp, affine] if warp else [affine])
        files["from-T1w_to-MEGRE_mode-image_xfm.mat"] = rigid.path
        files[f"from-{tpl_name}_to-T1w_mode-image_xfm.mat"] = affine
        if warp:
            files[f"from-{tpl_name}_to-T1w_mode-image_xfm.nii.gz"] = warp
    quality = {}
    if refine and iron_img is not None and tpl_files.get("iron"):
        t0 = time.perf_counter()
        local = _refine_local(native, _as_img3d(iron_img, "R2* map"),
                              tpl_files.get("iron_fine", tpl_files["iron"]),
                              transforms, work, n_threads, seed,
                              box=REFINE_BOX_MM if refine_box is None else refine_box,
                              iterations=REFINE_ITERATIONS if refine_iterations is None
                              else tuple(refine_iterations), quality=quality)
        if local:
            transforms = [local] + list(transforms)
        timings["refine_local"] = time.perf_counter() - t0
    reg = SessionRegistration(native=native, template=tpl_name, transforms=transforms,
                              suit_transforms=suit, files=files, timings=timings, work_dir=str(work),
                              channels=dict(tpl_files), cache_dir=str(cache_dir or work),
                              quality=quality)
    if compose:
        t0 = time.perf_counter()
        ants = _ants(n_threads)
        grid = _to_ants(_downsample(native, reg_resolution), ants)
        for space, name in ((tpl_name, f"from-{tpl_name}_to-MEGRE_mode-image_xfm.nii.gz"),
                            ("SUIT", "from-SUIT_to-MEGRE_mode-image_xfm.nii.gz")):
            if space == "SUIT" and not suit:
                continue
            chain = reg.chain(space)
            out = ants.apply_transforms(fixed=grid, moving=grid, transformlist=chain,
                                        whichtoinvert=[False] * len(chain),
                                        compose=str(work / name.replace(".nii.gz", "_")),
                                        singleprecision=True)  # float32 fields, as ANTs' own
            final = work / name
            os.replace(out, final)
            files[name] = str(final)
        timings["compose"] = time.perf_counter() - t0
    cached = set(_CHANNEL_FILES)
    for p in [fixed, moving] + [q for pair in extra for q in pair[:2]]:
        for q in (str(p), str(p).replace(".nii", "_ones.nii")):
            if q not in cached and os.path.exists(q):
                os.remove(q)
    timings["total"] = time.perf_counter() - t_start
    return reg


def native_label_table(labels=None):
    """``[(index, name)]`` rows of the native dseg TSV (`rois.label_name`); only the indices
    present in ``labels`` when given."""
    present = None if labels is None else set(np.unique(labels).tolist())
    return [(i, rois.label_name(*rois.NATIVE_LABELS[i])) for i in sorted(rois.NATIVE_LABELS)
            if present is None or i in present]


def cached_template_labels(atlas_files, cache_dir=None):
    """`templates.build_template_labels` of ``atlas_files``, kept in ``cache_dir`` (one
    build per run and atlas set instead of one per session; a few seconds at 1 mm)."""
    from .templates import build_template_labels
    if cache_dir is None:
        return build_template_labels(atlas_files)
    cache = Path(cache_dir)
    srcs = [a.dseg for a in atlas_files.atlases] + [a.tsv for a in atlas_files.atlases] + \
        [p for p in (atlas_files.wm_probseg,) if p is not None]
    key = _file_key(srcs, {"v": CHANNELS_VERSION})
    spaces = list(dict.fromkeys(a.space for a in atlas_files.atlases))
    paths = {sp: cache / f"labels-{sp}-{key}.nii.gz" for sp in spaces}
    if all(p.exists() for p in paths.values()):
        return {sp: nib.load(str(p)) for sp, p in paths.items()}
    labels = build_template_labels(atlas_files)
    cache.mkdir(parents=True, exist_ok=True)
    for sp, img in labels.items():
        fd, tmp = tempfile.mkstemp(suffix=".nii.gz", dir=str(cache))
        os.close(fd)
        nib.save(img, tmp)
        os.replace(tmp, paths[sp])
    return labels


def warp_labels_to_native(registration, atlas_files, template_labels=None,
                          interpolation="genericLabel"):
    """Bring the atlases and the template brain mask onto the native MEGRE grid.

    Parameters
    ----------
    registration : SessionRegistration
    atlas_files : AtlasFiles
    template_labels : dict of space -> image, optional
        From `templates.build_template_labels` (computed when not given).
    interpolation : {"genericLabel", "nearestNeighbor"}

    Returns
    -------
    NativeLabels
        One label array with the fixed indices of `rois.NATIVE_LABELS`: the template-space map
        (MASSP20 with the pulvinar of MIAL67 overriding thalamus voxels, posterior internal
        capsule, white_matter reference), then the SUIT dentate nuclei written over it.
        Note: the ROI ``thalamus`` of the tables is thalamus + pulvinar labels.
    """
    if template_labels is None:
        template_labels = cached_template_labels(atlas_files, registration.cache_dir)
    native = registration.native
    labels = np.zeros(native.shape[:3], np.int16)
    for space, img in template_labels.items():
        if space != registration.template and space != "SUIT":
            raise BidsIronError(f"atlas space {space} differs from the registered template "
                                f"{registration.template}; use --atlas-template {registration.template}")
        if space == "SUIT" and not registration.suit_transforms:
            continue
        warped = np.rint(registration.to_native(img, interpolation, space=space)).astype(np.int16)
        labels = np.where(warped > 0, warped, labels) if space == "SUIT" else np.where(labels > 0, labels, warped)
    brain = None
    if atlas_files.brain_mask is not None:
        brain = mask_to_native(atlas_files.brain_mask, native, registration.chain())
    image = nib.Nifti1Image(labels, native.affine)
    image.header.set_data_dtype(np.int16)
    return NativeLabels(labels=labels, brain_mask=brain, image=image, table=native_label_table(labels))


def dice(a, b):
    """Dice coefficient of two boolean arrays (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2.0 * np.logical_and(a, b).sum() / s)
