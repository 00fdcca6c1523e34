"""Total field inversion (TFI): total field (ppm) to susceptibility (ppm), no background step.

The usual chain removes the background field first (`bids_iron.maps.background`) and then
inverts the local field (`bids_iron.maps.dipole`). Each step loses something: background
removal takes away part of the brain's own low spatial frequencies (the contrast of large
structures such as the thalamus) or erodes the mask, and the inversion cannot give it back.
TFI (Liu Z et al. 2017) estimates ONE susceptibility distribution on the whole padded field
of view, inside the brain mask and around it, whose field matches the TOTAL field inside the
mask. The sources outside the mask play PDF's role (their field is the background), the
sources inside are the brain's; both are fitted together, so nothing is subtracted before
the inversion and no SMV erosion is needed.

Outside the mask the susceptibility is unconstrained by any prior and large (air +9.4 ppm
and bone -2 ppm relative to tissue, against brain contrasts of 0.1 ppm), which makes the
plain problem badly conditioned. TFI solves for ``y`` with ``chi = P y``, the
preconditioner ``P`` being 1 in the mask and larger outside (30 in the paper), so that an
iterative solver reaches the background sources in a few iterations instead of smearing
their field into the brain. That solver (``solver="cg"``, the default: Gauss-Newton steps of
conjugate gradients) stops before it converges and costs about 10x a TV dipole inversion.

The other solver (``solver="admm"``) gives the background sources a small TV weight instead
(1/30 of the brain's) and solves by ADMM with closed-form steps (the data term per voxel, TV
by soft thresholding, chi by one division in Fourier space), as TV-ADMM does for the local
field, starting from PDF's background sources damped next to the mask: on the straight
1 mm head it is as accurate as the CG solver or more in a seventh of its time, on the
oblique heads less accurate (tables beside the constants).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import distance_transform_edt

from ._numerics import (blas_dot, check_array, check_field, check_max_iter, check_noise_sd,
                        check_positive, check_weights, check_workers, fft_box, pcg)
from .dipole import (DipoleInversionResult, _admm_chi_step, _admm_filters, _admm_warm_start,
                     _check_count, _grad, _unit_b0, mask_rim_weights)
from .background import pdf_sources
from .kernels import check_voxel_size, convolve, dipole_kernel

#: Settings of `invert_total_field_tfi`, chosen on the realistic whole-head phantom through
#: the whole chain from raw phase (``python benchmarks/accuracy_whole_head.py --set
#: qsm_method=tfi --qsm-param key=value``, default mask, PDF only for the LFS; chi NRMSE %
#: over the output mask / without its outer 2 mm, XSIM, deep-GM slope, nucleus bias % CN PUT
#: GP TH PUL SN RN DN, CG iterations in all). 2 mm, SNR 100 (default chain PDF + TV-ADMM:
#: 74.1 / 49.5, 0.53, 0.916, +3 -1 +1 +22 +8 -3 -7 -9):
#:
#: ==============================================  =====================  ===================
#: P, free_rim, steps x CG (tol), weights, alpha   NRMSE / inner, XSIM    slope, CG iter.
#: ==============================================  =====================  ===================
#: 30, 0, 10 x 50 (0.01), 1/field_sd, 1e-4         73.1 / 57.9, 0.50      0.720, 473
#: 30, 0, 10 x 50 (0.01), uniform, 1e-4            66.8 / 47.3, 0.57      0.948, 464
#: 30, 0, 5 x 200 (0.001), 1/field_sd, 1e-4        65.3 / 45.4, 0.57      0.952, 937
#: 30, 0, 5 x 200 (0.001), uniform, 1e-4           60.5 / 36.1, 0.60      0.963, 877
#: 30, 1, 5 x 200 (0.001), uniform, 1e-4           57.9 / 36.4, 0.63      0.967, 875
#: 30, 2, same                                     64.1 / 42.0, 0.59      0.968, 877
#: 30, 1, same, alpha 5e-5                         60.6 / 39.3, 0.63      0.980, 876
#: 30, 1, same, alpha 2e-4                         56.2 / 35.1, 0.61      0.954, 873
#: 30, 1, 3 x 300 (0.001), uniform, 1e-4           60.0 / 39.2, 0.61      0.959, 675
#: 30, 1, 8 x 100 (0.001), uniform, 1e-4           61.8 / 40.8, 0.62      0.976, 775
#: 100, 0, 10 x 50 (0.01), uniform                 78.1 / 62.1, 0.48      0.732, 462
#: 20, 1, 5 x 200 (0.001), uniform, 1e-4           52.5 / 33.5, 0.64      0.956, 860
#: 15, 1, same                                     49.5 / 32.5, 0.64      0.945, 850
#: 10, 1, same                                     48.6 / 32.7, 0.63      0.936, 841
#: 7, 1, same                                      52.2 / 32.3, 0.63      0.940, 841
#: 5, 0, 10 x 50 (0.01), 1/field_sd                88.1 / 92.6, 0.27      0.833, 471
#: 1 (no preconditioner), same                     411 / 503, 0.03        0.123, 486
#: ==============================================  =====================  ===================
#:
#: (All rows above: ``jacobi`` 0, i.e. the paper's P alone, and a 20 mm margin.)
#:
#: 1 mm, SNR 100, the same run (``--voxel 1 1 1``; inversion time on 2 cores, peak RSS of
#: the stage; rows with ``tfi``: ``jacobi`` 0, 5 x 200 CG, 20 mm margin):
#:
#: ===============================  =====================  ======  ==========================
#: method                           NRMSE / inner, XSIM    slope   nucleus bias %, time, RSS
#: ===============================  =====================  ======  ==========================
#: PDF + tv_admm (default chain)    61.4 / 39.9, 0.571     0.943   +10 +7 +1 +10 +3 -1 -3 -7,
#:                                                                 17 s, 2.0 GiB
#: tfi (then default: P 30, 5x200)  47.5 / 34.0, 0.617     0.964   +12 -2 0 +11 +2 +3 +1 -6,
#:                                                                 290 s, 2.5 GiB
#: P 20                             42.5 / 30.8, 0.622     0.950   +14 -1 0 +11 +1 +2 0 -9
#: P 15                             40.4 / 29.6, 0.620     0.940   +14 0 0 +12 0 +1 -1 -10
#: P 30, 3 x 150 (376 CG iter.)     56.7 / 43.8, 0.565     0.949   +7 -10 -5 +11 +2 +3 +2 -6
#: P 15, alpha 5e-5                 42.3 / 31.8, 0.634     0.948   +17 +1 +1 +16 +3 +3 +1 -8
#: P 30, pad_mm 10                  47.5 / 34.1, 0.615     0.963   as 20 mm, 10 % faster
#: SNR 50: PDF + tv_admm            66.5 / 41.2, 0.557     0.951   +6 +3 +1 +6 -1 -2 -4 -8,
#:                                                                 12 s
#: SNR 50: tfi (then default)       52.0 / 34.5, 0.612     0.964   +8 -5 -2 +5 +1 +2 0 -6,
#:                                                                 346 s, 2.5 GiB
#: ===============================  =====================  ======  ==========================
#:
#: From the TRUE total field in the true mask, no noise (``benchmarks/accuracy_inversion.py
#: --part total``): tfi 63.6 / 29.0, XSIM 0.638, slope 0.970, 344 s; PDF + tv_admm 89.8 /
#: 49.2, 0.502, 0.968, 29 s (the true mask keeps the whole rim the chain's refined mask
#: partly drops, hence the larger whole-brain errors).
#:
#: Speed (issue 16): TFI alone on the input the chain gives it (the same run's total field
#: and masks, cached; ``python benchmarks/bench_tfi.py [--voxel 1 1 1] --run
#: label:key=value,...``; CPU seconds of the process, all threads, and wall seconds on 2
#: cores shared with other jobs, load 5-11, so wall times are only indicative; peak RSS of
#: the call alone):
#:
#: ===================================  ====================  ======  ===========  =========
#: variant (P 30, free_rim 1)           NRMSE / inner, XSIM   slope   CG iter.     CPU s
#: ===================================  ====================  ======  ===========  =========
#: 2 mm: 5 x 200, 20 mm (the old        57.9 / 36.4, 0.631    0.967   875          32.3
#: defaults; before this change)
#: the same after it (TV on the         the same              0.967   875          29.9
#: mask's box only)
#: 8 x 200                              55.1 / 33.5, 0.643    0.965   1475
#: 5 x 400                              52.3 / 31.4, 0.648    0.955   1675
#: 10 mm margin                         58.0 / 36.6, 0.628    0.966   876          23.3
#: CG started from the last step        58.1 / 37.6, 0.626    0.967   875
#: jacobi 0.3                           56.1 / 35.5, 0.636    0.967   873
#: jacobi 0.09                          53.5 / 34.4, 0.645    0.968   871
#: jacobi 0.03                          50.9 / 33.3, 0.653    0.968   869
#: jacobi 0.01                          52.5 / 32.7, 0.655    0.967   868
#: jacobi 0.03, 5 x 120                 55.6 / 37.9, 0.630    0.975   549
#: jacobi 0.01, 5 x 100                 58.5 / 38.7, 0.626    0.971   468
#: jacobi 0.03, 10 mm, 5 x 200          51.2 / 33.5, 0.649    0.967   870
#: jacobi 0.03, 10 mm, 5 x 150          53.6 / 35.9, 0.637    0.972   670
#: the same on the 7/11-smooth grid     53.8 / 36.0, 0.635    0.971   670          22.3
#: (88, 105, 88): the defaults
#: jacobi 0.03, 10 mm, 4 x 200          53.5 / 35.8, 0.637    0.970   670
#: jacobi 0.03, 10 mm, 4 x 150          56.1 / 38.4, 0.623    0.970   520
#: + Fourier preconditioner (|D|^2 +    55.0 / 36.3, 0.607    0.961   453 (x 6
#: TV Laplacian), 5 x 100, 20 mm                                      FFTs)
#: coarse-to-fine (4 mm, then 3 x 100)  61.9 / 48.8, 0.598    0.944   300 + coarse
#: 1 mm: the old defaults (old code)    47.5 / 34.0, 0.617    0.964   876          324
#: (wall 703 s, 1.71 GiB; bias +12 -2
#: 0 +11 +2 +3 +1 -6)
#: jacobi 0.03, 10 mm, 5 x 150 on       48.1 / 32.5, 0.623    0.970   674          200
#: (180, 216, 180) (wall 427 s, 1.10
#: GiB; bias +10 -5 -1 +6 +2 +2 0 -5)
#: the same, whole chain (stage: wall   48.1 / 32.5, 0.623    0.970   674          219
#: 688 s at load 9, RSS 2.26 GiB)
#: jacobi 0.03, 10 mm, 5 x 200          45.7 / 29.8, 0.632    0.963   874          264
#: the defaults: 5 x 150 on (168, 210,  48.4 / 32.5, 0.621    0.969   672          206
#: 175) (1.02 GiB; +10 -5 -2 +6 +1 +2
#: 0 -5)
#: PDF + tv_admm (default chain), the   61.4 / 39.9, 0.571    0.943   55           19.3
#: inversion alone (2 mm: 2.3 s CPU)
#: ===================================  ====================  ======  ===========  =========
#:
#: Back to back in one process (the code before issue 16 with its defaults, then this one):
#: 2 mm 32.1 and 33.2 s CPU (wall 55 s) against 17.9 and 17.8 s (wall 25-27 s), 1.8x; 1 mm
#: 319 s CPU (wall 568 s, peak RSS of the call 1.25 GiB) against 189 s (wall 284 s, 1.06
#: GiB), 1.7x CPU and 2.0x wall. Whole chain at 2 mm with these defaults: 53.8 / 36.0, 0.635,
#: 0.971, stage 16.8 s CPU; oblique 20 degrees 63.3 / 38.3, 0.630, 0.935 (before: 63.3 /
#: 38.8, 0.932).
#:
#: More CG iterations keep improving the map (8 x 200, 5 x 400): the solver, not the model,
#: limits the accuracy. The diagonal preconditioner (``jacobi``) lets the voxels that TV
#: holds loosely (edges, the free rim) move faster, which buys the accuracy of about twice
#: the iterations; part of that gain was spent on fewer iterations (5 x 150). Grid FFTs of
#: (180, 216, 180) instead of (192, 225, 192) at 1 mm (10 mm margin) cost 0.084 instead of
#: 0.118 s CPU per forward + inverse pair, and sizes with factors 7 and 11 as well, (168,
#: 210, 175), 7 % less CPU per CG iteration again (329-340 against 348-367 ms, alternated
#: three times); the rest of an iteration (about 40 % at 1 mm) is memory-bound array
#: arithmetic. Multiresolution and the Fourier preconditioner lost accuracy.
#:
#: The CG is stopped early, so P and the iteration counts shape the result (more of them
#: help, as above, so they are not a regularisation to tune down): a smaller P
#: lets the brain's sources carry more of the field near the mask edge (lower error in the
#: rim, where the phantom's brain voxels share volume with bone) but gives the background a
#: little of the nuclei's contrast (lower slope). The noise weights (1 / field standard
#: error) lower the weight of the iron-rich nuclei (short T2*, noisier phase) and let TV
#: flatten them (putamen -16 %), so the default is uniform weights.
TFI_ALPHA = 1e-4
TFI_PRECONDITIONER = 30.0
TFI_MAX_ITER = 5
TFI_CG_MAX_ITER = 150
TFI_CG_TOL = 1e-3
#: Relative size of a Gauss-Newton step at which to stop.
TFI_TOL = 0.01
#: Smoothing of |G chi| in the IRLS weights (ppm/mm; 3e-3 at 2 mm: 61.6 / 38.7, 0.969).
TFI_TV_EPS = 1e-3
#: Margin (mm) around the mask's bounding box where background sources may lie (10 mm at
#: 2 mm: 58.0 / 36.6, the same as 20 mm; at 1 mm 47.5 / 34.1 against 47.5 / 34.0, with
#: 16 % fewer grid voxels).
TFI_PAD_MM = 10.0
#: Mask layers left out of the TV term (`bids_iron.maps.dipole.mask_rim_weights`).
TFI_FREE_RIM = 1
#: Floor of the diagonal preconditioner in the mask (0: P alone, as in the paper).
TFI_JACOBI = 0.03

#: Solvers of `invert_total_field_tfi`, and the default (CG: the ADMM solver below is 5x
#: faster with lower NRMSE on the 1 mm heads, straight and oblique, but its deep-GM slope
#: is 0.02 lower, 0.950 against 0.969 at 1 mm; its tables).
TFI_SOLVERS = ("cg", "admm")
TFI_SOLVER = "cg"

#: Settings of the ADMM solver (``solver="admm"``), chosen with ``benchmarks/bench_tfi.py``
#: on the chain's own TFI input (realistic head, SNR 100, the cache of the table above;
#: ``--run label:solver=admm,key=value,...``; chi NRMSE % over the output mask / without
#: its outer 2 mm, XSIM, deep-GM slope, ADMM iterations, CPU s on 2 shared cores; nucleus
#: bias % CN PUT GP TH PUL SN RN DN). It minimises the same kind of objective as the CG
#: solver, ``1/2 ||W (f - D chi)||^2 + alpha ||T G chi||_1`` on the padded grid, but with
#: TV outside the mask too, weighted ``exterior_tv`` (the background sources nearly free,
#: what P 30 encodes for CG; this table used 1/30, the default is now 0, see
#: `TFI_ADMM_EXTERIOR_TV`), and splits ``u = D chi`` and ``z = G chi`` so that every step
#: is closed form: 4 FFTs per iteration and no inner CG. ADMM alone moves the background
#: sources far too slowly (the exchange between the sources outside the mask and the
#: brain's low spatial frequencies is its slowest mode): it starts from PDF's background
#: sources (a CG on the exterior only, as `bids_iron.maps.background.remove_background_pdf`),
#: whose Tikhonov damping in a shell just outside the mask keeps PDF from imitating the
#: field of the mask's outer voxels with large alternating sources (the brain keeps it).
#: 2 mm (CG defaults above: 53.8 / 36.0, 0.635, 0.971, 17.3 s; PDF + tv_admm: 74.1 / 49.5,
#: 0.530, 0.916, 1.7 s):
#:
#: ==============================================  =====================  ================
#: variant (alpha 1e-4)                            NRMSE / inner, XSIM    slope, it., CPU
#: ==============================================  =====================  ================
#: no start (chi 0), 150 iterations                1068 / 1319, 0.005     -0.48, 150
#: (small phantom, 2000 iterations: 125 % against CG's 71 %: not converging)
#: PDF start (CG tol 0.01), free_rim 1, mu 1 /     84.0 / 47.8, 0.598     0.974, 75, 2.8 s
#: 0.01, tol 0.003
#: the same, PDF tol 0.003                         77.1 / 41.7, 0.594     0.968, 75
#: ..., free_rim 0                                 69.8 / 39.6, 0.624     0.973, 70
#: ..., free_rim 1, exterior_tv 0.1 / 0.3          77.3 / 43.0, 0.577 /   0.951 / 0.892
#:                                                 81.8 / 51.7, 0.487
#: free_rim 0, mu_grad 0.03                        71.0 / 40.7, 0.634     0.988, 55, 2.4 s
#: ..., PDF tol 0.001 / 0.01 / 0.03                74.5 / 43.2 / 76.5 /   0.996 / 0.984 /
#:                                                 46.4 / 116.9 / 91.9    1.012
#: ..., exterior_tv 0 / 0.01                       74.6 / 43.1, 74.5 /    1.000 / 0.999
#: (PDF tol 0.001)                                 43.1
#: ..., mu_grad 0.1 / 0.003                        74.1 / 44.8 / 78.6 /   0.998 / 0.953
#:                                                 41.7
#: ..., mu_data 0.3 (mu_grad 0.01 / 0.03)          68.2 / 40.0, 0.603 /   0.943 / 0.958
#:                                                 70.5 / 41.5, 0.610
#: ..., alpha 5e-5 / 2e-4                          73.4 / 43.2 / 76.3 /   1.022 / 0.923
#:                                                 42.0
#: ..., relax 1.5                                  74.4 / 43.0, 0.613     0.985, 50
#: ..., tol 0.001 (135 it.) / 3e-4 (200 it.)       69.2 / 39.5 / 73.3 /   0.964 / 0.968
#:                                                 42.0
#: free rim 1 with TV 0.1 / 0.3 on it              74.9 / 41.9 / 73.7 /   0.983
#:                                                 41.4
#: start without the sources of the first 1 / 2    73.3 / 40.1 / 80.5 /   1.006 / 1.012
#: voxels outside the mask                         48.1
#: start by an early-stopped joint CG, P 30 / 10   69.4 / 46.4 / 77.2 /   0.951 / 0.911
#: / 100 (no TV; then ADMM)                        64.1 / 76.5 / 48.7     / 0.976
#: PDF damped 1e-4 / 1e-3 / 1e-2 everywhere        69.7 / 41.8 / 103.8 /  0.972 / 0.859
#: outside                                         94.0 / 368 / 437       / 0.127
#: PDF damped 1e-2 within 2 / 4 / 6 / 9 mm of      70.8 / 38.6, 61.8 /    1.000 / 0.997 /
#: the mask                                        36.8, 58.5 / 36.0,     0.999 / 0.996
#:                                                 59.3 / 37.9
#: damped 1e-3 / 3e-3 / 3e-2 within 4 mm           60.0 / 35.6, 58.3 /    0.992 / 0.997 /
#:                                                 35.4, 68.2 / 40.5      1.006
#: damped 3e-3 within 4 mm, PDF tol 0.01 / 0.001   65.8 / 47.4, 69.0 /    1.003 / 1.004
#:                                                 41.9
#: damped 1e-3 within 8 mm                         59.6 / 36.6, 0.668     0.998
#: damped 3e-3 within 8 mm                         57.1 / 35.4, 0.674     0.995, 55
#: **damped 3e-3 within 6 mm** ("A": the          57.5 / 35.1, 0.673     0.992, 55, 2.8 s
#: defaults but mu_data 1; -3 -16 -4 -3 -3 +1 -1
#: -6)
#: A, two passes (the start again on the field     58.6 / 36.5, 0.665     0.985, 85
#: chi in the mask leaves, then ADMM)
#: ==============================================  =====================  ================
#:
#: The same on the 20-degree oblique head (``--variant oblique``; CG defaults 63.3 / 38.3,
#: 0.630, 0.935, +3 -11 -7 -9 -7 -3 -11 -9; PDF + tv_admm 76.8 / 57.2, 0.504, 0.900): A
#: 70.1 / 52.8, 0.533, 0.932 (+1 -9 -4 +13 0 0 -7 -10); the extra error lies 1.5
#: to 10 voxels inside the mask edge and is not smooth (the low-frequency part of the inner
#: error equals CG's). Tried there: PDF tol 0.001 / 0.01 / 0.02 97.3 / 80.1, 73.3 / 57.7,
#: 79.7 / 67.1; shell_damp 0 / 1e-3 / 1e-2 77.0 / 54.3, 70.2 / 51.2, 78.2 / 60.5; shell 3
#: mm 73.7 / 54.2; free_rim 1 76.3 / 54.3; exterior_tv 0 / 0.1 70.1 / 52.6, 69.9 / 52.9;
#: tol 0.001 69.6 / 51.9; mu_grad 0.01 / 0.1 / 0.3 68.7 / 50.2, 71.6 / 57.0, 73.2 / 61.8;
#: mu_data 3 74.0 / 58.5; 30 iterations 73.5 / 59.6; two passes 71.2 / 53.6 (three of 30
#: iterations 75.9 / 60.0); pad 20 mm 66.5 / 48.7; alpha 1.5e-4 67.0 / 48.6 (straight:
#: 56.6 / 35.3, 0.968); alpha 2e-4 65.2 / 46.4; mu_data 0.3 66.8 / 48.8 (straight 56.6 /
#: 35.8, 0.959); mu_data 0.3 with alpha 1.5e-4 64.3 / 45.8, 0.577, 0.918 (straight 54.8 /
#: 34.7, 0.648, 0.953).
#:
#: 1 mm (CG defaults: 48.4 / 32.5, 0.621, 0.969, 672 CG iterations, 189-206 s, +10 -5 -2
#: +6 +1 +2 0 -5; oblique 55.2 / 30.8, 0.622, 0.991, +10 -4 -1 -1 0 +3 +1 -4, 183 s;
#: PDF + tv_admm: 61.4 / 39.9, 0.571, 0.943, 19.3 s; oblique 61.3 / 42.8, 0.539, 0.968,
#: +6 +4 +4 +39 +17 +5 +4 -1; PDF start in 57 CG iterations):
#:
#: ==============================================  =====================  ================
#: variant                                         NRMSE / inner, XSIM    slope, it., CPU
#: ==============================================  =====================  ================
#: undamped PDF start, free_rim 0, mu_grad 0.03    57.7 / 34.0, 0.648     0.961, 55, 19 s
#: (+6 -6 -2 +8 0 -1 -2 -5)
#: the same, free_rim 1 / mu_grad 0.01             59.1 / 34.1, 0.641 /   0.960 / 0.937
#:                                                 57.7 / 34.9, 0.623
#: the same, tol 0.001 (110 iterations)            56.4 / 32.6, 0.650     0.956, 110, 34 s
#: A (+4 -9 -2 +12 +2 +1 +1 -5, 0.95 GiB)          47.6 / 31.7, 0.667     0.965, 55, 27 s
#: A, damping 1e-3                                 50.6 / 32.5, 0.661     0.969, 55, 28 s
#: A, tol 0.001 (+5 -7 -2 +9 0 0 -1 -6)            45.3 / 30.2, 0.674     0.961, 110, 41 s
#: A, oblique (+12 +2 +4 +31 +11 +10 +11 -6)       54.3 / 37.1, 0.577     0.993, 55, 27 s
#: oblique: A, mu_data 0.3, alpha 1.5e-4           50.6 / 33.8, 0.582     0.970, 45 (TH +19)
#: (straight: 45.6 / 30.2, 0.646, 0.961)
#: oblique: mu_data 0.3, alpha 2e-4 / the same,    49.6 / 33.5, 0.564 /   0.962 / 0.961 /
#: mu_grad 0.01 / tol 0.001                        48.4 / 32.0, 0.587 /   0.967
#:                                                 48.4 / 31.7, 0.590
#: oblique: mu_data 0.1, alpha 1e-4 / 1.5e-4 /     50.7 / 33.3, 0.602 /   0.971 / 0.967 /
#: 1.5e-4 with mu_grad 0.01                        49.0 / 32.2, 0.590 /   0.969
#:                                                 46.1 / 29.6, 0.600
#: oblique: mu_data 0.01, alpha 1.5e-4 (100 it.,   44.9 / 26.6, 0.609     0.975, 100, 40 s
#: the cap)
#: oblique: mu_data 0.03, alpha 1.5e-4 / with      45.7 / 27.8, 0.612 /   0.972 / 0.970,
#: mu_grad 0.1 (straight: 42.5 / 29.3, 0.614,      49.5 / 31.9, 0.596     85, 35 s
#: 0.943)
#: oblique: mu_data 0.03, alpha 7e-5 (straight:    49.8 / 31.6, 0.622     0.976, 85, 38 s
#: 44.0 / 28.7, 0.674, 0.954)
#: **the defaults** (mu_data 0.03): straight (+6   43.1 / 28.7, 0.651     0.950, 80, 35 s
#: -8 -2 +1 -3 -2 -4 -9)
#: **the defaults**: oblique (+9 -2 0 +5 0 +2 +1   48.1 / 30.0, 0.622     0.975, 80, 35 s
#: -7)
#: the defaults, tol 0.01: straight / oblique      46.5 / 30.3, 0.646 /   0.960 / 0.972,
#: (TH +2 / +8)                                    51.0 / 33.1, 0.601     40, 29 s
#: mu_data 0.1: straight / oblique (TH +3 / +15)   45.1 / 29.2, 0.671 /   0.959 / 0.971,
#:                                                 50.7 / 33.3, 0.602     50, 32 s
#: ==============================================  =====================  ================
#:
#: At 2 mm the defaults give 52.7 / 33.9, 0.633, 0.951 (90 iterations, 4.1 s; -15 % putamen)
#: and on the oblique head 61.5 / 43.3, 0.593, 0.914 (alpha 1.5e-4: 51.0 / 33.8, 0.611,
#: 0.943 and 59.0 / 40.3, 0.606, 0.912; mu_data 0.01, alpha 1.5e-4: 51.8 / 36.7, 0.571,
#: 0.932 and 58.4 / 39.1, 0.611, 0.916; alpha 7e-5: 54.2 / 34.5, 0.646, 0.957 and 63.6 /
#: 45.7, 0.582, 0.917; tol 0.005 / 0.01: 53.8 / 34.2, 0.642, 0.954 and 62.5 / 44.3, 0.589,
#: 0.912 / 55.0 / 34.8, 0.651, 0.960 and 63.8 / 46.0, 0.578, 0.916; mu_data 0.1: 54.7 /
#: 34.1, 0.662, 0.963 and 64.3 / 46.2, 0.580, 0.917). A smaller mu_data takes ADMM
#: further towards the minimiser in the same iterations (the data term is then enforced
#: almost exactly at each step): the oblique head's thalamus, +31 % with mu_data 1, comes
#: to +5 %, but TV's shrinkage lowers the slope (0.950 at 1 mm against A's 0.965); a
#: smaller alpha does not give it back, a looser tol (0.01) only part of it.
#:
#: Whole chain from raw phase (``benchmarks/accuracy_whole_head.py --set qsm_method=tfi
#: [--qsm-param solver=cg]``; inversion stage CPU s, peak RSS of the stage):
#:
#: ====================  ==================================  ==================================
#: head                  ADMM, A (mu_data 1)                 CG (its defaults)
#: ====================  ==================================  ==================================
#: 1 mm                  47.6 / 31.7, 0.667, 0.965; +4 -9    48.4 / 32.5, 0.621, 0.969; +10 -5
#:                       -2 +12 +2 +1 +1 -5; 27 s, 2.1 GiB   -2 +6 +1 +2 0 -5; 189 s, 2.3 GiB
#: 1 mm, SNR 50          52.4 / 33.0, 0.656, 0.964; +1 -11   (before issue 16: 52.0 / 34.5,
#:                       -3 +6 +1 +1 0 -8; 27 s, 2.3 GiB     0.61, 0.964)
#: 1 mm, oblique 20 deg  54.3 / 37.1, 0.577, 0.993; +12 +2   55.2 / 30.8, 0.622, 0.991; +10 -4
#:                       +4 +31 +11 +10 +11 -6; 30 s         -1 -1 0 +3 +1 -4; 183 s
#: 2 mm                  57.5 / 35.1, 0.673, 0.992; -3 -16   53.8 / 36.0, 0.635, 0.971; +4 -11
#:                       -4 -3 -3 +1 -1 -6; 2.9 s            -3 -4 -2 +1 -4 -7; 17.5 s
#: 2 mm, SNR 50          59.3 / 36.2, 0.653, 1.008; -7 -21   53.4 / 35.6, 0.641, 0.974; +3 -13
#:                       -6 -8 -4 +2 -2 -6; 3.1 s            -4 -6 -3 +1 -4 -8; 16.2 s
#: 2 mm, oblique         70.1 / 52.8, 0.533, 0.932; 4.0 s    63.3 / 38.3, 0.630, 0.935; 16.2 s
#: ====================  ==================================  ==================================
#:
#: (PDF + tv_admm, the default chain: 1 mm 61.4 / 39.9, 0.571, 0.943, 19 s; 2 mm 74.1 /
#: 49.5, 0.530, 0.916; 2 mm SNR 50 77.2 / 50.7, 0.509, 0.914; 2 mm oblique 76.8 / 57.2,
#: 0.504, 0.900.) ADMM with mu_data 1 beats the default chain wherever both were measured,
#: and CG on the straight 1 mm head in a seventh of its time, but not on the oblique heads
#: (1 mm thalamus +31 %). With the defaults (mu_data 0.03), whole chain: 1 mm 43.1 / 28.7,
#: 0.651, 0.950, +6 -8 -2 +1 -3 -2 -4 -9, 35 s, 2.1 GiB; 1 mm SNR 50 48.5 / 30.2, 0.632,
#: 0.945, +5 -10 -3 -1 -4 -3 -5 -10, 36 s, 2.3 GiB; 1 mm oblique 48.1 / 30.0, 0.622, 0.975,
#: +9 -2 0 +5 0 +2 +1 -7, 36 s, 2.1 GiB; 2 mm 52.7 / 33.9, 0.633, 0.951, +2 -15 -5 -7 -6
#: -3 -6 -11, 4.1 s; 2 mm SNR 50 54.7 / 34.2, 0.624, 0.955; 2 mm oblique 61.5 / 43.3, 0.593,
#: 0.914, 4.6 s. Against CG: lower NRMSE but at 2 mm SNR 50 (54.7 against 53.4), XSIM as
#: high or higher at 1 mm, lower at 2 mm; slope 0.02 lower
#: (0.950 against 0.969 at 1 mm, within the 0.95-1.05 target only just). So CG stays the
#: default solver of ``tfi``, ADMM (5x faster) is selectable, and it is the app's default
#: as the method ``tfi_admm`` (`bids_iron.maps.dipole.DEFAULT_QSM_METHOD`: it beats PDF +
#: tv_admm on every head). At 2 mm, from no start (chi 0): 680 /
#: 840 %; the start without its damping: 68.6 / 42.0, 0.570, 0.941.
#:
#: The start matters because ADMM hardly moves sources between the outside and the brain
#: afterwards: a looser PDF (tol 0.01, 0.03) leaves background in the brain, a tighter one
#: (0.001) takes more of the brain's low frequencies and outer voxels; undamped PDF fits the
#: outer voxels' own field with sources next to them (2 mm: 44.5 % of the truth's squared
#: norm is the error of the outer voxel layer, against 23.1 % for CG; 1.8 against 3.0 %
#: deeper than 4 voxels). free_rim 0: with no TV on the outer layer ADMM (which, unlike the
#: early-stopped CG, goes to the minimiser) lets it trade field with the sources outside.
#: ADMM iterations before the reweighting, at most; relative change of chi in the mask over
#: one iteration (checked every 5) at which to stop; the penalties of the two splits. They do
#: not change the minimiser, but the iterations stop at the tolerance, so the gradient
#: penalty decides where on the way they stop. With no TV outside the mask and alpha 1.4e-4
#: (`TFI_ADMM_EXTERIOR_TV`), on the chain's own TFI input (``benchmarks/bench_tfi.py
#: [--voxel 1 1 1] [--variant V] --run label:solver=admm,mu_grad=M,max_iter=N``; NRMSE %
#: over the output mask / without its outer 2 mm, XSIM, slope, iterations):
#:
#: ==============  ==========================  ==========================  ===================
#: head            mu_grad 0.03, 100 (before)  **mu_grad 0.01, 150**       mu_grad 0.01, 100
#: ==============  ==========================  ==========================  ===================
#: 1 mm            38.2 / 21.7, .702, .990,    34.4 / 18.7, .719, .988,    the same
#:                 110                         120
#: 1 mm SNR 50     43.4 / 22.8, .694, .986     40.5 / 19.4, .712, .988
#: 1 mm oblique    45.6 / 25.3, .640, .990     42.4 / 21.7, .660, .993     the same
#: 2 mm            48.8 / 27.0, .700, .988     44.9 / 23.5, .719, .995
#: 2 mm SNR 50     51.5 / 28.1, .686, .992     48.5 / 25.0, .701, .999
#: 2 mm oblique    59.7 / 39.6, .622, .935,    56.3 / 34.5, .653, .935,    56.8 / 36.5, .630,
#:                 140                         150 (reweighted at 110)     .914, 100 (not
#:                                                                         reweighted)
#: 2 mm, vertex    49.0 / 30.8, .676, .973     45.3 / 27.3, .697, .980
#: cut
#: 2 mm,           49.7 / 30.7, .686, .929     45.3 / 27.2, .701, .943
#: cerebellum cut
#: 2 x 2 x 4 mm    66.4 / 47.1, .548, .928,    62.8 / 42.4, .581, .952,    63.9 / 44.4, .554,
#:                 100 (not reweighted)        150 (reweighted at 110)     .926, 100
#: ==============  ==========================  ==========================  ===================
#:
#: (Where the table has one entry the iterations converged before 100, so ``max_iter`` did
#: not matter.) Nucleus bias at 1 mm (CN PUT GP TH PUL SN RN DN, %): +4 -6 -1 -2 -2 0 -1 -4
#: (before +5 -6 -1 -2 -2 0 -1 -4). Also measured at 2 mm: mu_grad 0.003 / 0.005 / 0.02
#: 45.3 / 24.4, 0.971 / 45.5 / 24.7, 0.973 (both stop at 100 unconverged) / 47.1 / 25.5,
#: 0.991; with mu_grad 0.01: alpha 1e-4 46.3 / 24.9, 0.716, 0.992, mu_data 0.01 / 0.1 46.4 /
#: 24.5, 0.976 / 47.3 / 26.1, 0.994. With mu_grad 0.03 the 2 x 2 x 4 mm head stopped at
#: 100 with a change of 0.0030 (150: 65.9 / 46.6 %, 0.558, 0.950). The test phantom
#: (tests/test_tfi.py) never converges and runs the 150.
TFI_ADMM_MAX_ITER = 150
TFI_ADMM_TOL = 0.003
TFI_ADMM_MU_DATA = 0.03
TFI_ADMM_MU_GRAD = 0.01
TFI_ADMM_FREE_RIM = 0
#: TV weight of the differences that touch a voxel outside the mask, and the TV weight
#: (``alpha``) of the ADMM solver. 0 outside: TV only between mask voxels, as in the CG
#: solver's model (the background sources are placed by the start and the data alone).
#: With the one reweighting below, on the chain's own TFI input (``benchmarks/bench_tfi.py
#: [--voxel 1 1 1] [--variant V] --run label:solver=admm,exterior_tv=E,alpha=A``; NRMSE %
#: over the output mask / without its outer 2 mm, XSIM, deep-GM slope):
#:
#: ==============  ===================  ===================  ===================  ===================
#: head            E 1/30, A 1e-4       E 0, A 1e-4          **E 0, A 1.4e-4**    E 0, A 2e-4
#:                 (before)                                  (default)
#: ==============  ===================  ===================  ===================  ===================
#: 1 mm            41.2 / 26.3, .676,   39.8 / 22.6, .720,   38.2 / 21.7, .702,   37.0 / 21.3, .676,
#:                 .969                 .988                 .990                 .991
#: 1 mm SNR 50     45.9 / 27.9, .657,   44.7 / 24.1, .705,   43.4 / 22.8, .694,   42.4 / 21.8, .674,
#:                 .963                 .983                 .986                 .992
#: 1 mm oblique    48.1 / 28.1, .638,   47.9 / 27.9, .640,   45.6 / 25.3, .640,   43.6 / 23.5, .629,
#:                 .988                 .989                 .990                 .993
#: 2 mm            51.8 / 32.3, .650,   50.9 / 29.0, .697,   48.8 / 27.0, .700,   46.9 / 25.3, .698,
#:                 .967                 .986                 .988                 .992
#: 2 mm SNR 50     53.8 / 33.1, .637,   53.2 / 30.1, .680,   51.5 / 28.1, .686,   50.0 / 26.3, .687,
#:                 .973                 .993                 .992                 .994
#: 2 mm oblique    61.9 / 43.1, .603,                        59.7 / 39.6, .622,   57.6 / 36.6, .634,
#:                 .932                                      .935                 .939
#: 2 mm, vertex    51.2 / 33.6, .664,                        49.0 / 30.8, .676,
#: cut             .970                                      .973
#: 2 mm,           51.8 / 32.9, .687,                        49.7 / 30.7, .686,
#: cerebellum cut  .932                                      .929
#: 2 x 2 x 4 mm    69.2 / 52.3, .489,                        66.4 / 47.1, .548,
#:                 .911                                      .928
#: ==============  ===================  ===================  ===================  ===================
#:
#: Nucleus bias at 1 mm (CN PUT GP TH PUL SN RN DN, %): before +7 -5 -1 -1 -2 -1 -2 -8; E 0,
#: A 1e-4 +5 -4 -0 -1 -2 +0 -1 -5; the default +5 -6 -1 -2 -2 +0 -1 -4. The default is
#: better than before on every head by every number (XSIM equal within 0.001 on the
#: cerebellum cut); a larger alpha lowers NRMSE further (2.8e-4: 1 mm 36.3 / 21.2, 2 mm 45.8
#: / 24.5) but loses XSIM (0.644, 0.687; 4e-4 at 2 mm 0.661), i.e. it smooths. Also measured
#: at 2 mm with E 0: E 0.003 / 0.01 / 0.02 50.9 / 29.2, 51.1 / 29.7, 51.3 / 30.7 (A 1e-4);
#: reweighting eps 0.01 / 0.1 51.5 / 29.2, 51.0 / 29.4; mu_data 0.01 / 0.1 51.0 / 29.8,
#: 53.9 / 32.1; no reweighting 51.7 / 30.6, 0.970. Why it helps: the reweighting
#: shrinks the exterior's TV at the bone and air edges anyway, elsewhere outside the TV
#: held the background sources near the start's, so the iterations could not move them
#: where the brain's field needs them (inner error 26.3 -> 22.6 % at 1 mm, alpha unchanged).
TFI_ADMM_EXTERIOR_TV = 0.0
TFI_ADMM_ALPHA = 1.4e-4
#: The start: PDF's CG (iterations at most, relative residual) and its Tikhonov damping
#: (dimensionless, against the unit dipole kernel's normal operator, at most 4/9) of the
#: sources within ``TFI_ADMM_SHELL_MM`` of the mask.
TFI_ADMM_START_MAX_ITER = 200
TFI_ADMM_START_TOL = 0.003
TFI_ADMM_SHELL_DAMP = 3e-3
TFI_ADMM_SHELL_MM = 6.0
#: One reweighting of the TV term where the ADMM iterations first converge: each
#: difference's weight times ``eps / (|G chi| + eps)`` (reweighted L1, Candes et al. 2008),
#: then at most ``TFI_ADMM_REWEIGHT_ITER`` more iterations to ``tol``. Issue 16 ("no lost
#: iron": TV shrinks the nuclei's contrast), on the chain's own TFI input
#: (``benchmarks/bench_tfi.py [--voxel 1 1 1] [--variant oblique|snr50] --run
#: label:solver=admm,reweight_eps=E,reweight_iter=N``; NRMSE % over the output mask /
#: without its outer 2 mm, XSIM, deep-GM slope, ADMM iterations; nucleus bias % CN PUT GP
#: TH PUL SN RN DN):
#:
#: ====================  ==========================  ==========================  ============
#: head                  no reweighting (before)     eps 0.03, 40 (default)      eps 0.01, 40
#: ====================  ==========================  ==========================  ============
#: 2 mm                  52.7 / 33.9, 0.633, 0.951,  51.8 / 32.3, 0.650, 0.967,  52.3 / 32.2,
#:                       90; +2 -15 -5 -7 -6 -3 -6   125; +3 -11 -3 -6 -5 -2 -4  0.660, 0.969
#:                       -11                         -10
#: 2 mm SNR 50           54.7 / 34.2, 0.624, 0.955   53.8 / 33.1, 0.637, 0.973
#: 2 mm oblique 20 deg   61.5 / 43.3, 0.593, 0.914   61.9 / 43.1, 0.603, 0.932   62.8 / 44.0,
#:                                                                               0.604, 0.935
#: 1 mm                  43.1 / 28.7, 0.651, 0.950,  41.2 / 26.3, 0.676, 0.969,  41.2 / 25.6,
#:                       80; +6 -8 -2 +1 -3 -2 -4 -9  105; +7 -5 -1 -1 -2 -1 -2   0.687, 0.968
#:                                                   -8
#: 1 mm oblique          48.1 / 30.0, 0.622, 0.975   48.1 / 28.1, 0.638, 0.988   48.7 / 28.0,
#:                                                                               0.647, 0.989
#: ====================  ==========================  ==========================  ============
#:
#: Also measured at 2 mm: eps 0.1 51.8 / 32.8, 0.640, 0.964; eps 0.03 (0.01) with 20
#: iterations 52.3 / 32.7, 0.651, 0.978 (53.1 / 32.8, 0.660, 0.979; 1 mm 41.4 / 26.3, 0.677,
#: 0.967, oblique 48.7 / 28.8, 0.991); 60 / 80 iterations (eps 0.01 / 0.001) 52.2 / 32.1,
#: 0.969 / 53.9 / 33.6, 0.960; reweighting again after each new convergence, two / three
#: times, 51.6 / 32.1, 0.652, 0.968 / 51.4 / 32.0, 0.654, 0.970 (not worth the
#: iterations). On the test phantom of ``tests/test_tfi.py``, whose nuclei
#: TV already overestimates (+9 %), the slope rises too (0.956 -> 0.982) and so does the
#: overshoot (largest nucleus error 10 -> 14 %).
TFI_ADMM_REWEIGHT_EPS = 0.03
TFI_ADMM_REWEIGHT_ITER = 40
#: Bregman steps after the reweighted iterations (issue 16, "no lost iron"): with the
#: field's noise given (``noise_sd``, the echo fit's standard error), each further ADMM
#: iteration adds the data residual ``field - D chi`` back to the field it fits (Bregman
#: iteration, Osher et al. 2005, as ``--qsm-alpha discrepancy`` does for tv_admm), so the
#: contrast TV took is fitted again, until the residual falls to the noise (Morozov's
#: discrepancy principle), falls by less than ``TFI_ADMM_BREGMAN_MIN_DECREASE`` over a step
#: (what is left is model error: the rim, the background), or after
#: ``TFI_ADMM_BREGMAN_MAX`` steps; a rising residual undoes the last step. Residual and
#: noise leave out the mask's outer ``TFI_ADMM_BREGMAN_MARGIN_MM``. On the chain's own TFI
#: input (``benchmarks/bench_tfi.py [--voxel 1 1 1] [--variant V] --run
#: off:solver=admm,bregman_max=0 --run on:solver=admm``; NRMSE % over the output mask /
#: without its outer 2 mm, XSIM, deep-GM slope; nucleus bias % CN PUT GP TH PUL SN RN DN
#: with both maps referenced to the ventricles, as the app's default ``--chi-reference
#: csf``; Bregman steps taken):
#:
#: ==============  ============================  ============================  ============================
#: head            without (before)              min decrease 0.1              **min decrease 0.2 (default)**
#: ==============  ============================  ============================  ============================
#: 1 mm            34.4 / 18.7, .719, .988;      33.9 / 17.4, .771, .991;      33.9 / 17.6, .767, .985;
#:                 -2 -13 -3 -13 -7 -3 -5 -7     +4 -8 -1 -4 -4 0 -3 -5; 4     +4 -8 -1 -3 -3 -1 -3 -5; 3
#: 1 mm SNR 50     40.5 / 19.4, .712, .988;      40.3 / 18.9, .734, .980;      the same (1 step)
#:                 -2 -13 -3 -13 -7 -3 -4 -7     +1 -11 -3 -8 -5 -2 -4 -6; 1
#: 1 mm oblique    42.4 / 21.7, .660, .993;      42.4 / 21.3, .687, .991;      42.3 / 21.1, .693, .988;
#:                 +1 -12 -2 -15 -8 -2 -3 -8     +7 -6 -1 -6 -5 0 -1 -6; 5     +7 -7 -1 -6 -4 0 -1 -7; 3
#: 1 mm, second    38.9 / 20.1, .705, .979;      38.5 / 18.8, .752, .981;      38.6 / 19.0, .749, .979;
#: head            -1 -6 -3 -17 -7 -4 -3 -7      +3 -3 -1 -7 -3 -2 -1 -6; 4    +3 -3 -1 -7 -3 -2 -1 -6; 3
#: 2 mm            44.9 / 23.5, .719, .995;      45.0 / 24.0, .728, .992;      44.8 / 23.3, .733, .991;
#:                 -4 -16 -4 -18 -8 -2 -4 -8     +1 -13 -3 -11 -6 0 -4 -7; 5   +2 -12 -3 -9 -5 0 -3 -7; 3
#: 2 mm SNR 50     48.5 / 25.0, .701, .999;      48.4 / 25.0, .708, .996;      the same (2 steps)
#:                 -3 -18 -4 -20 -9 -2 -5 -8     +1 -14 -3 -13 -6 0 -4 -7
#: 2 mm oblique    56.3 / 34.5, .653, .935;      56.8 / 35.7, .650, .944;      the same (4 steps)
#:                 -2 -16 -8 -20 -13 -7 -15 -12  +3 -12 -6 -12 -10 -4 -14 -10
#: 2 x 2 x 4 mm    62.8 / 42.4, .581, .952;      63.3 / 43.7, .583, .960;      the same (4 steps)
#:                 -1 -18 -5 -13 -10 -5 -8 -15   +6 -14 -3 -7 -8 -2 -8 -14
#: 2 mm, cut at    45.3 / 27.3, .697, .980       45.3 / 27.5, .709, .977       45.1 / 26.9, .714, .977
#: the vertex
#: 2 mm, cut       45.3 / 27.2, .701, .943       45.5 / 28.2, .701, .944       45.2 / 27.2, .712, .942
#: cerebellum
#: 2 mm, second    47.9 / 24.5, .700, .973;      47.9 / 24.5, .711, .978;      47.8 / 24.2, .714, .976;
#: head            -2 -7 -3 -19 -8 -5 -4 -8      +3 -4 -1 -8 -5 -2 -3 -7       +3 -4 -2 -8 -4 -2 -2 -6; 3
#: ==============  ============================  ============================  ============================
#:
#: The steps also add noise: the RMS difference of the 16 nucleus means between two noise
#: realisations of the head (seeds 1 and 2, the whole chain; ``benchmarks/
#: repeatability_noise.py [--voxel 1 1 1] --set without:bregman_max=0 --set
#: d10:bregman_min_decrease=0.1 --set default:``) is 0.23 / 0.30 / 0.27 ppb at 1 mm
#: (without / 0.1 / 0.2) and 0.81 / 0.97 / 0.86 ppb at 2 mm, while their mean error
#: against the truth falls from 1.71 to 1.58 / 1.55 ppb at 1 mm and from 2.52 to 2.65 /
#: 2.48 ppb at 2 mm. 0.2 keeps most of the gain in accuracy for about half the added
#: noise; at 2 mm it is as good as or better than no steps on every head but the oblique
#: and thick-slice ones (+0.5 point NRMSE, +1.2 / 1.3 inner), by XSIM everywhere but the
#: oblique head (0.650 against 0.653). The caudate, beside the ventricles, now reads high
#: (+2 to +7 % against them). 1 mm CPU: +2-3 s. Steps every iteration without a stop
#: diverge on the 2 mm head after about 10 (the residual grows again from 0.025 ppm^2: the
#: sources outside the mask take what the brain cannot fit); without the 4 mm margin the
#: first 5 steps gave 45.0 / 24.4 % there. On the real 3-echo crop (TE 4-12 ms, a noisy
#: field) TV's residual (0.28 ppm^2) is already below the noise (0.67): no step is taken.
TFI_ADMM_BREGMAN_MAX = 10
TFI_ADMM_BREGMAN_MARGIN_MM = 4.0
TFI_ADMM_BREGMAN_MIN_DECREASE = 0.2


def _tv_mask(m, free_rim):
    """Per-axis 0/1 weights of the forward differences inside ``m`` (both voxels in the
    mask; periodic neighbour excluded), minus those touching its outer ``free_rim`` layers."""
    out = np.zeros((3,) + m.shape, dtype=np.float32)
    for axis in range(3):
        both = m & np.roll(m, -1, axis=axis)
        last = [slice(None)] * 3
        last[axis] = slice(-1, None)
        both[tuple(last)] = False
        out[axis][both] = 1.0
    if free_rim:
        out *= mask_rim_weights(m, free_rim)
    return out


def _solve(fg, mg, w2, kernel, vs, *, alpha, preconditioner, max_iter, cg_max_iter, cg_tol,
           tol, tv_eps, free_rim, workers, jacobi):
    """The IRLS / Gauss-Newton CG iterations of `invert_total_field_tfi` on one padded grid.

    ``fg``: field (ppm, zero outside the data), ``mg``: mask, ``w2``: squared data weights,
    all on the padded grid; ``kernel`` the unit dipole kernel on its rfft half-spectrum,
    ``vs`` voxel size (mm). Returns chi on the grid (ppm) and a dict of statistics.
    """
    shape = fg.shape
    p = np.where(mg, np.float32(1), np.float32(preconditioner)).astype(np.float32)
    n_fft = 0

    def conv_d(x):
        nonlocal n_fft
        n_fft += 2
        return convolve(x, kernel, workers)

    # The TV term lives on the mask's bounding box only (its weights are zero elsewhere):
    # unscaled forward differences there, the per-axis 1 / voxel size squared folded into
    # the IRLS weights (G^T V G = Delta^T (V / d^2) Delta).
    sub = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(mg))
    tv = _tv_mask(mg[sub], free_rim) * np.float32(alpha)
    inv_d2 = (1.0 / vs ** 2).astype(np.float32)
    lo = [tuple(slice(None, -1) if a == axis else slice(None) for a in range(3))
          for axis in range(3)]
    hi = [tuple(slice(1, None) if a == axis else slice(None) for a in range(3))
          for axis in range(3)]
    diff = [np.empty(tv.shape[1:], np.float32) for _ in range(3)]

    def differences(x):
        """Forward differences of ``x`` on the box, per axis (the last plane unused)."""
        xs = x[sub]
        for axis in range(3):
            np.subtract(xs[hi[axis]], xs[lo[axis]], out=diff[axis][lo[axis]])
            diff[axis][hi[axis][:axis] + (slice(-1, None),)] = 0
        return diff

    def tv_weights(chi):
        """IRLS weights ``alpha T / sqrt((G chi)^2 + tv_eps^2) / d^2`` per axis."""
        vw = np.empty_like(tv)
        for axis, g in enumerate(differences(chi)):
            g *= np.float32(np.sqrt(inv_d2[axis]))
            np.square(g, out=g)
            g += np.float32(tv_eps * tv_eps)
            np.sqrt(g, out=g)
            np.divide(tv[axis], g, out=vw[axis])
            vw[axis] *= inv_d2[axis]
        return vw

    def add_tv(chi, vw, out):
        """``out += G^T (vw G chi)`` (the reweighted TV term's Hessian times ``chi``)."""
        acc = out[sub]
        for axis, g in enumerate(differences(chi)):
            g *= vw[axis]
            acc[lo[axis]] -= g[lo[axis]]
            acc[hi[axis]] += g[lo[axis]]
        return out

    wf = w2 * fg
    chi = np.zeros(shape, np.float32)
    model = np.zeros(shape, np.float32)  # D chi
    cg_total, steps, converged = 0, 0, False
    cg_steps, changes = [], []
    for steps in range(1, max_iter + 1):
        # IRLS weights of the TV term at the current chi (alpha and T folded in)
        vw = tv_weights(chi)
        # gradient of the reweighted objective with respect to chi, then to y (times P)
        resid = w2 * model
        resid -= wf
        grad = add_tv(chi, vw, conv_d(resid))
        grad *= p

        def hessian(dy):
            x = dy * p
            d = conv_d(x)
            d *= w2
            hx = add_tv(x, vw, conv_d(d))
            hx *= p
            return hx

        scale = None
        if jacobi:
            # diagonal of the TV term's Hessian in the mask, data term's diagonal ~ jacobi
            dg = np.zeros(tv.shape[1:], np.float32)
            for axis in range(3):
                dg += vw[axis]
                dg[hi[axis]] += vw[axis][lo[axis]]
            msub = mg[sub]
            typical = float(np.median(dg[msub]))
            scale = np.ones(shape, np.float32)
            scale[sub] = np.where(msub, (np.float32(jacobi) + np.float32(typical))
                                  / (np.float32(jacobi) + dg), np.float32(1))
        cg = pcg(hessian, -grad, tol=cg_tol, max_iter=cg_max_iter, dot=blas_dot,
                 precond=None if scale is None else scale.__mul__)
        cg_total += cg.n_iter
        cg_steps.append(cg.n_iter)
        dchi = cg.x * p
        chi += dchi
        model += conv_d(dchi)
        change = float(np.linalg.norm(dchi.ravel()))
        norm = float(np.linalg.norm(chi.ravel()))
        changes.append(round(change / norm, 4) if norm > 0 else 0.0)
        if norm > 0 and change < tol * norm:
            converged = True
            break
    return chi, {"n_iter": cg_total, "gn_steps": steps, "converged": converged, "n_fft": n_fft,
                 "cg_iter_per_step": cg_steps, "step_change": changes, "shape": list(shape)}


def _admm_tv_weights(mg, free_rim, exterior):
    """Per-axis TV weights of the ADMM solver on the whole (periodic) grid, float32 of
    shape (3, *mg.shape): 1 between two mask voxels, ``exterior`` for a difference that
    touches a voxel outside the mask, 0 for one that touches the mask's outer ``free_rim``
    layers."""
    t = _tv_mask(mg, 0)
    t *= np.float32(1.0 - exterior)
    t += np.float32(exterior)
    if free_rim:
        t *= mask_rim_weights(mg, free_rim)
    return t


def _reweight_tv(tau, chi, inv_d, eps):
    """``tau *= eps / (|G chi| + eps)`` per difference, in place (``tau``: the TV thresholds
    of `_solve_admm`, shape (3, *chi.shape); ``eps`` ppm/mm)."""
    g = _grad(chi, inv_d, np.empty_like(tau))
    np.abs(g, out=g)
    g += np.float32(eps)
    np.divide(np.float32(eps), g, out=g)
    tau *= g


def _solve_admm(fg, mg, w2, kernel, vs, *, alpha, exterior, free_rim, max_iter, tol, mu_data,
                mu_grad, start_tol, start_max_iter, shell_damp, shell_mm, workers,
                reweight_eps=0.0, reweight_iter=0, noise2=None, bregman_max=0,
                bregman_margin_mm=0.0, bregman_min_decrease=0.0):
    """ADMM for ``1/2 ||W (f - D chi)||^2 + alpha ||T * G chi||_1`` on the padded grid.

    ``fg``: field (ppm, 0 outside the mask), ``mg`` mask, ``w2`` squared data weights (0
    outside the mask), all on the grid; ``kernel`` the unit dipole kernel on its rfft
    half-spectrum; ``T`` from `_admm_tv_weights`. Splits ``u = D chi``
    (data, closed form per voxel: ``u = (W^2 f + mu_data b) / (W^2 + mu_data)``) and ``z =
    G chi`` (soft threshold at ``alpha T / mu_grad``); the chi step divides in Fourier space
    by ``mu_data |D|^2 + mu_grad |G|^2`` (periodic differences; k = 0: chi's grid mean stays
    0, the map is unreferenced). The scaled duals are folded as in
    `bids_iron.maps.dipole._tv_admm`. Starts from PDF's background sources
    (`bids_iron.maps.background.pdf_sources`; ``start_max_iter`` 0: from chi = 0). With
    ``reweight_eps > 0``, where the iterations first meet ``tol`` the TV weights are
    multiplied once by ``reweight_eps / (|G chi| + reweight_eps)`` per difference and the
    iterations go on from there, at most ``reweight_iter`` more (reweighted L1; iterations
    that stop at ``max_iter`` unconverged are not reweighted: their map is no basis for the
    weights). Then, with ``noise2`` (the field's noise variance per voxel, ppm^2, on the
    grid) and ``bregman_max > 0``, Bregman steps: each iteration adds ``W^2 (f - D chi)``
    (inside the mask less its outer ``bregman_margin_mm``) to the data it fits, until the
    residual there falls to the sum of ``noise2``, falls by less than
    ``bregman_min_decrease`` (relative) over a step, or after ``bregman_max`` steps (a
    rising residual undoes the last step). Returns chi (ppm, grid) and a dict of
    statistics.
    """
    shape = fg.shape
    inv_d = (1.0 / vs).astype(np.float32)
    k_data, k_grad = _admm_filters(kernel, shape, vs, mu_data, mu_grad)
    tau = _admm_tv_weights(mg, free_rim, exterior)
    tau *= np.float32(alpha / mu_grad)
    neg_tau = -tau
    mu = np.float32(mu_data)
    wf = w2 * fg
    inv_v = (1.0 / (w2 + mu)).astype(np.float32)
    # state: rhs_u = u + dual_u, s = -dual_u (data); q = z + dual_z, p = -dual_z (gradient)
    rhs_u = fg.copy()
    s = np.zeros(shape, np.float32)
    q = np.zeros((3,) + shape, np.float32)
    p = np.zeros((3,) + shape, np.float32)
    tmp = np.empty(shape, np.float32)
    scratch = np.empty(shape, np.float32)
    n_start, n_fft = 0, 0
    if start_max_iter:  # the splits at the start's sources (chi 0 in the mask), duals zero
        # PDF's background sources, Tikhonov-damped within shell_mm of the mask
        start = pdf_sources(fg, mg, w2, kernel, vs, tol=start_tol, max_iter=start_max_iter,
                            shell_damp=shell_damp, shell_mm=shell_mm, workers=workers)
        n_start = start.n_iter
        rhs_u = _admm_warm_start(start.x, kernel, inv_d, q, workers)
        del start
        n_fft = 4 * n_start + 4
    def splits(chi, bvec):
        """The data and gradient splits and their duals, in place, after a chi step."""
        # data split: b = D chi + s; u = (W^2 f + mu b) / (W^2 + mu); s = b - u; 2 u - b
        # (in-place ufuncs: the closure updates the state arrays, it does not rebind them)
        bvec += s
        np.multiply(bvec, mu, out=tmp)
        np.add(tmp, wf, out=tmp)
        np.multiply(tmp, inv_v, out=tmp)
        np.subtract(bvec, tmp, out=s)
        np.multiply(tmp, 2, out=rhs_u)
        np.subtract(rhs_u, bvec, out=rhs_u)
        # gradient split: a = G chi + p; p = clip(a, +-tau); z + dual = a - 2 p
        _grad(chi, inv_d, q)
        np.add(q, p, out=q)
        np.clip(q, neg_tau, tau, out=p)
        np.subtract(q, p, out=q)
        np.subtract(q, p, out=q)

    def chi_step():
        # (mu_data |D|^2 + mu_grad |G|^2) chi = mu_data D rhs_u + mu_grad G^T q; also D chi
        return _admm_chi_step(rhs_u, q, k_data, k_grad, kernel, inv_d, tmp, scratch, workers)

    # the main phase: to tol (reweighting once where it first gets there), or max_iter
    chi, chi_prev, converged, changes, n_iter = None, None, False, [], 0
    limit, reweighted_at = max_iter, None
    while n_iter < limit:
        n_iter += 1
        chi, bvec = chi_step()
        n_fft += 4
        splits(chi, bvec)
        del bvec
        met = False
        if (n_iter % 5 == 0 or n_iter == limit) and chi_prev is not None:
            np.subtract(chi, chi_prev, out=tmp)
            change = float(np.linalg.norm(tmp[mg]))
            inside = chi[mg]
            norm = float(np.linalg.norm(inside - inside.mean()))
            changes.append(round(change / norm, 4) if norm > 0 else 0.0)
            met = norm > 0 and change < tol * norm
        chi_prev = chi
        if reweight_eps and reweight_iter and reweighted_at is None and met:
            # reweighted L1 (Candes et al. 2008): the differences chi already jumps across
            # (nucleus edges) are shrunk less from here on, the flat ones as before
            _reweight_tv(tau, chi, inv_d, reweight_eps)
            np.negative(tau, out=neg_tau)
            reweighted_at, limit = n_iter, n_iter + reweight_iter
        elif met:
            converged = True
            break
    # the Bregman steps: the residual (without the outer margin) fitted again until it falls
    # to the noise, falls too little, rises (the step is undone) or bregman_max steps
    bregman = noise2 is not None and bregman_max > 0
    residuals, breg_steps, target = [], 0, None
    if bregman:
        inner = mg & (distance_transform_edt(mg, sampling=vs) > bregman_margin_mm)
        target = float(np.sum(noise2[inner], dtype=np.float64))
        before = chi  # the main phase's last map
        while True:
            n_iter += 1
            chi, bvec = chi_step()
            n_fft += 4
            np.subtract(fg, bvec, out=tmp)
            tmp *= inner
            res2 = float(np.sum(tmp[inner] ** 2, dtype=np.float64))
            if residuals and res2 >= residuals[-1]:  # rising: keep the step before
                chi = before
                break
            residuals.append(res2)
            if (res2 <= target or breg_steps == bregman_max or (
                    len(residuals) > 1 and res2 > (1 - bregman_min_decrease) * residuals[-2])):
                if not breg_steps:  # no step taken: the main phase's map
                    chi = before
                break
            before = chi
            tmp *= w2
            wf += tmp
            breg_steps += 1
            splits(chi, bvec)
            del bvec
    return chi, {"n_iter": n_iter, "converged": converged, "n_fft": n_fft,
                 "start_cg_iter": n_start, "change": changes, "reweighted_at": reweighted_at,
                 "bregman_steps": breg_steps,
                 "discrepancy_target": None if target is None else round(target, 6),
                 "residuals": [round(r, 6) for r in residuals]}


def invert_total_field_tfi(total_field_ppm, mask, voxel_size, b0_dir=(0.0, 0.0, 1.0),
                           field_sd=None, weights=None, alpha=None, solver=TFI_SOLVER,
                           max_iter=None, tol=None, free_rim=None, pad_mm=TFI_PAD_MM,
                           preconditioner=TFI_PRECONDITIONER, cg_max_iter=TFI_CG_MAX_ITER,
                           cg_tol=TFI_CG_TOL, tv_eps=TFI_TV_EPS, jacobi=TFI_JACOBI,
                           exterior_tv=TFI_ADMM_EXTERIOR_TV, mu_data=TFI_ADMM_MU_DATA,
                           mu_grad=TFI_ADMM_MU_GRAD, start_max_iter=TFI_ADMM_START_MAX_ITER,
                           start_tol=TFI_ADMM_START_TOL, shell_damp=TFI_ADMM_SHELL_DAMP,
                           shell_mm=TFI_ADMM_SHELL_MM, reweight_eps=TFI_ADMM_REWEIGHT_EPS,
                           reweight_iter=TFI_ADMM_REWEIGHT_ITER, noise_sd=None,
                           bregman_max=TFI_ADMM_BREGMAN_MAX,
                           bregman_margin_mm=TFI_ADMM_BREGMAN_MARGIN_MM,
                           bregman_min_decrease=TFI_ADMM_BREGMAN_MIN_DECREASE, workers=-1):
    """Total field inversion (TFI) with total variation: total field to chi in one step.

    One susceptibility map on the padded grid (the mask's bounding box plus ``pad_mm``) is
    fitted to the TOTAL field (background included) inside ``mask``::

        1/2 || W (F^-1 D F chi - field) ||^2  +  alpha || T * G chi ||_1

    ``W`` the data weights (``1 / field_sd``, or ``weights``, normalised to mean 1 in the
    mask, zero outside: the field outside the brain is not data); ``D`` the unit dipole
    kernel; ``G`` forward differences per mm (anisotropic TV, as
    `bids_iron.maps.dipole.invert_dipole_tv_admm`); ``T`` 1 between two mask voxels and 0
    on the mask's outer ``free_rim`` layers. The sources outside the mask are the
    background; they must be nearly free, which each solver encodes in its own way:

    ``solver="admm"``: ``T = exterior_tv`` (small; default 0, TV between mask voxels
    only) for the differences that touch a voxel outside the mask. ADMM splits ``u = D
    chi`` (data step closed form per voxel) and ``z = G chi`` (weighted soft threshold), so
    the chi step is one division in Fourier space by ``mu_data |D|^2 + mu_grad |G|^2``: 4
    FFTs per iteration, no inner solver. It
    starts from PDF's background sources (CG on the sources outside the mask alone, at most
    ``start_max_iter`` iterations to a relative residual ``start_tol``, Tikhonov-damped by
    ``shell_damp`` within ``shell_mm`` of the mask) with chi 0 in the mask, and stops when
    the relative change of chi in the mask falls below ``tol`` (checked every 5 iterations)
    or after ``max_iter`` iterations. Where it first meets ``tol``, ``T`` is multiplied
    once by ``reweight_eps / (|G chi| + reweight_eps)`` (reweighted L1: the edges chi
    already has are shrunk less, so the nuclei keep more of their contrast) and the
    iterations go on to ``tol`` again, at most ``reweight_iter`` more. With ``noise_sd``
    (the field's noise), Bregman steps follow (`TFI_ADMM_BREGMAN_MAX`): each iteration adds
    the data residual back to the field it fits, so what TV shrank is fitted again, until
    the residual falls to the noise (discrepancy principle), a step lowers it by less than
    ``bregman_min_decrease``, or after ``bregman_max`` steps; residual and noise leave out
    the mask's outer ``bregman_margin_mm``.

    ``solver="cg"`` (default; Liu Z et al. 2017): ``T`` is 0 outside the mask and the unknown is
    ``y``, ``chi = P y``, ``P = 1`` in the mask and ``preconditioner`` outside. The L1 norm
    is handled by iteratively reweighted least squares (weights ``1 / sqrt((G chi)^2 +
    tv_eps^2)`` per axis); each reweighted problem gives one Gauss-Newton step, solved by
    conjugate gradients on ``P H P dy = -P grad`` (at most ``cg_max_iter`` iterations to a
    relative residual ``cg_tol``, with a diagonal preconditioner in the mask, ``jacobi``),
    at most ``max_iter`` steps, stopping when ``||P dy|| < tol ||chi||``.

    The data term is linear in the (unwrapped) field, not the complex exponential of the
    paper: the chain's field is unwrapped and fitted over echoes before it gets here.

    Parameters
    ----------
    total_field_ppm : ndarray, shape (X, Y, Z)
        Total field (tissue + background, unwrapped), ppm of B0; used only inside ``mask``.
        Its mean in the mask is removed first (chi is unreferenced anyway).
    mask : ndarray of bool, shape (X, Y, Z)
        Brain mask: where the field is data and chi is reported.
    voxel_size : sequence of 3 float
        Voxel size, mm (anisotropic allowed).
    b0_dir : sequence of 3 float
        B0 direction in voxel axes (`bids_iron.maps.kernels.b0_direction_from_affine`).
    field_sd : ndarray, shape (X, Y, Z), optional
        Standard error of the field (any unit; only relative values count), > 0 in the
        mask; the data weights are ``1 / field_sd``, capped at 5 times their median.
    weights : ndarray, shape (X, Y, Z), optional
        Data weights used when ``field_sd`` is None (e.g. the magnitude); default uniform.
    alpha : float, optional
        TV weight (> 0), ppm of field per (ppm/mm) of chi gradient; default `TFI_ADMM_ALPHA`
        (ADMM) or `TFI_ALPHA` (CG).
    solver : {"cg", "admm"}
        Default `TFI_SOLVER` ("cg").
    max_iter : int, optional
        ADMM iterations before the reweighting (``reweight_iter`` more after it), or
        Gauss-Newton steps of CG, at most; default `TFI_ADMM_MAX_ITER` or `TFI_MAX_ITER`.
    tol : float, optional
        Stopping tolerance (see above); default `TFI_ADMM_TOL` or `TFI_TOL`.
    free_rim : int, optional
        Outer mask layers left out of the TV term (0: none); default `TFI_ADMM_FREE_RIM`
        (0) or `TFI_FREE_RIM` (1).
    pad_mm : float
        Margin (mm, >= 0) around the mask's bounding box holding background sources.
    preconditioner : float
        CG: ``P`` outside the mask (>= 1); default `TFI_PRECONDITIONER` (30, Liu Z et al.
        2017).
    cg_max_iter : int
        CG: iterations per Gauss-Newton step at most; default `TFI_CG_MAX_ITER`.
    cg_tol : float
        CG: relative residual at which CG stops; default `TFI_CG_TOL`.
    tv_eps : float
        CG: IRLS smoothing of the chi gradient, ppm/mm (> 0); default `TFI_TV_EPS`.
    jacobi : float
        CG: diagonal preconditioner in the mask (>= 0; 0: off, ``P`` alone as in the
        paper): the residual in each mask voxel is scaled by ``(jacobi + t) / (jacobi +
        h)``, ``h`` the diagonal of the reweighted TV Hessian there and ``t`` its median in
        the mask. Default `TFI_JACOBI`.
    exterior_tv : float
        ADMM: TV weight (>= 0, dimensionless, 1 in the mask) of the differences touching a
        voxel outside the mask; default `TFI_ADMM_EXTERIOR_TV`.
    mu_data, mu_grad : float
        ADMM penalties (> 0) of the two splits (field ppm, gradient ppm/mm); they do not
        change the minimiser but how fast the iterations get there. Defaults
        `TFI_ADMM_MU_DATA`, `TFI_ADMM_MU_GRAD`.
    start_max_iter : int
        ADMM: CG iterations of the start at most (0: start from chi = 0, not recommended:
        the background then stays in the brain); default `TFI_ADMM_START_MAX_ITER`.
    start_tol : float
        ADMM: relative residual of the start's CG; default `TFI_ADMM_START_TOL`.
    shell_damp : float
        ADMM: Tikhonov damping (>= 0) of the start's sources within ``shell_mm`` of the
        mask, against the normal operator of the unit dipole kernel (at most 4/9);
        default `TFI_ADMM_SHELL_DAMP`.
    shell_mm : float
        ADMM: width (mm, >= 0) of that shell; default `TFI_ADMM_SHELL_MM`.
    reweight_eps : float
        ADMM: the reweighting's scale of the chi gradient, ppm/mm (>= 0; 0: no
        reweighting); default `TFI_ADMM_REWEIGHT_EPS`.
    reweight_iter : int
        ADMM: iterations after the reweighting at most; default `TFI_ADMM_REWEIGHT_ITER`.
    noise_sd : float or ndarray, shape (X, Y, Z), optional
        ADMM: standard error of the field, ppm, >= 0 in the mask (the echo fit's,
        `bids_iron.maps.combine.FieldMap.field_sd_hz` in ppm): turns the Bregman steps on.
        The app passes it for ``tfi_admm``.
    bregman_max : int
        ADMM: Bregman steps at most (0: none); default `TFI_ADMM_BREGMAN_MAX`.
    bregman_margin_mm : float
        ADMM: outer mask layer (mm, >= 0) left out of the residual and the noise; default
        `TFI_ADMM_BREGMAN_MARGIN_MM`.
    bregman_min_decrease : float
        ADMM: the Bregman steps stop when a step lowers the residual by less than this
        fraction (0 <= x < 1); default `TFI_ADMM_BREGMAN_MIN_DECREASE`.
    workers : int
        ``scipy.fft`` threads (-1: all cores).

    Returns
    -------
    DipoleInversionResult
        ``chi``: float32, ppm (paramagnetic positive), zero outside ``mask``, unreferenced;
        ``n_iter``: ADMM iterations (ADMM) or CG iterations over all steps (CG); ``n_fft``
        the real 3-D FFTs, the start's and the final background field's included;
        ``parameters`` hold the settings, the input (``"total field"``), the RMS of the
        background sources' field in the mask (``background_field_rms_ppm``) and, for ADMM,
        the start's CG iterations (``start_cg_iter``), the relative changes of chi
        (``change``, every 5 iterations) and the iteration the TV was reweighted at
        (``reweighted_at``, None if it was not), the Bregman steps taken
        (``bregman_steps``), the noise level (``discrepancy_target``, ppm^2 summed, None
        without ``noise_sd``) and the residual before each step (``residuals``); for CG the
        Gauss-Newton steps run
        (``gn_steps``), the CG iterations of each (``cg_iter_per_step``) and its size
        relative to chi (``step_change``); method ``"tfi"``.

    Raises
    ------
    ValueError
        If an argument has a wrong shape, type or range (the message names it).

    Examples
    --------
    A sphere of +0.1 ppm inside a spherical "brain", next to an air-like block outside the
    mask (+9 ppm relative to tissue) whose field in the mask is 12 times the sphere's; TFI
    gets the sphere back from the total field (TV-ADMM on the same field: 0.47 ppm), with
    either solver:

    >>> import numpy as np
    >>> from bids_iron.maps.kernels import dipole_kernel
    >>> g = np.indices((48, 48, 48)) - 23.5
    >>> r2 = (g ** 2).sum(0)
    >>> mask = r2 < 12 ** 2
    >>> chi = np.where(r2 < 5 ** 2, 0.1, 0.0)
    >>> chi[20:28, 20:28, 2:8] = 9.0
    >>> d = dipole_kernel(chi.shape, (1, 1, 1))
    >>> total = np.fft.ifftn(d * np.fft.fftn(chi)).real
    >>> shell = mask & (r2 > 8 ** 2)
    >>> res = invert_total_field_tfi(total * mask, mask, (1, 1, 1), pad_mm=8, max_iter=3)
    >>> res.parameters["solver"], res.chi.dtype
    ('cg', dtype('float32'))
    >>> bool(abs(res.chi[r2 < 3 ** 2].mean() - res.chi[shell].mean() - 0.1) < 0.015)
    True
    >>> res = invert_total_field_tfi(total * mask, mask, (1, 1, 1), pad_mm=8, solver="admm")
    >>> bool(abs(res.chi[r2 < 3 ** 2].mean() - res.chi[shell].mean() - 0.1) < 0.015)
    True
    >>> res.parameters["reweighted_at"] > 0, res.parameters["start_cg_iter"] > 0
    (True, True)

    References
    ----------
    Liu Z, Kee Y, Zhou D, Wang Y, Spincemaille P. Preconditioned total field inversion (TFI)
    method for quantitative susceptibility mapping. Magn Reson Med 2017;78:303-315.
    Liu T, Liu J, de Rochefort L, et al. Morphology enabled dipole inversion (MEDI) from a
    single-angle acquisition. Magn Reson Med 2011;66:777-783 (the Gauss-Newton CG solver).
    Boyd S, Parikh N, Chu E, Peleato B, Eckstein J. Distributed optimization and statistical
    learning via the alternating direction method of multipliers. Found Trends Mach Learn
    2011;3:1-122 (ADMM); Milovic C, Bilgic B, Zhao B, Acosta-Cabronero J, Tejos C. Fast
    nonlinear susceptibility inversion with variational regularization (FANSI). Magn Reson
    Med 2018;80:814-821 (the splitting of TV dipole inversion). Candes EJ, Wakin MB, Boyd
    SP. Enhancing sparsity by reweighted l1 minimization. J Fourier Anal Appl
    2008;14:877-905 (the reweighting).
    """
    if solver not in TFI_SOLVERS:
        raise ValueError(f"solver must be one of {TFI_SOLVERS}, got {solver!r}")
    admm = solver == "admm"
    f, m = check_field(total_field_ppm, mask, "total_field_ppm")
    vs = check_voxel_size(voxel_size)
    b = _unit_b0(b0_dir)
    alpha = check_positive("alpha", (TFI_ADMM_ALPHA if admm else TFI_ALPHA)
                           if alpha is None else alpha)
    max_iter = check_max_iter((TFI_ADMM_MAX_ITER if admm else TFI_MAX_ITER)
                              if max_iter is None else max_iter)
    tol = check_positive("tol", (TFI_ADMM_TOL if admm else TFI_TOL) if tol is None else tol)
    free_rim = _check_count((TFI_ADMM_FREE_RIM if admm else TFI_FREE_RIM)
                            if free_rim is None else free_rim, "free_rim")
    pad_mm = check_positive("pad_mm", pad_mm, allow_zero=True)
    preconditioner = check_positive("preconditioner", preconditioner)
    if preconditioner < 1:
        raise ValueError(f"preconditioner must be >= 1, got {preconditioner!r}")
    cg_max_iter = check_max_iter(cg_max_iter, "cg_max_iter")
    cg_tol = check_positive("cg_tol", cg_tol, below=1)
    tv_eps = check_positive("tv_eps", tv_eps)
    jacobi = check_positive("jacobi", jacobi, allow_zero=True)
    exterior_tv = check_positive("exterior_tv", exterior_tv, allow_zero=True)
    mu_data = check_positive("mu_data", mu_data)
    mu_grad = check_positive("mu_grad", mu_grad)
    start_max_iter = _check_count(start_max_iter, "start_max_iter")
    start_tol = check_positive("start_tol", start_tol, below=1)
    shell_damp = check_positive("shell_damp", shell_damp, allow_zero=True)
    shell_mm = check_positive("shell_mm", shell_mm, allow_zero=True)
    reweight_eps = check_positive("reweight_eps", reweight_eps, allow_zero=True)
    reweight_iter = _check_count(reweight_iter, "reweight_iter")
    bregman_max = _check_count(bregman_max, "bregman_max")
    bregman_margin_mm = check_positive("bregman_margin_mm", bregman_margin_mm, allow_zero=True)
    bregman_min_decrease = check_positive("bregman_min_decrease", bregman_min_decrease,
                                          allow_zero=True, below=1)
    workers = check_workers(workers)
    like = "shape of total_field_ppm"
    noise2 = None
    if noise_sd is not None:
        if not admm:
            raise ValueError("noise_sd: only the ADMM solver takes Bregman steps; use "
                             "solver='admm' or leave noise_sd out")
        sd = check_noise_sd(noise_sd, m, like)
        noise2 = sd * sd
    if field_sd is not None:
        sd = check_array(field_sd, "field_sd", shape=f.shape, like=like, where=m)
        if np.any(sd[m] <= 0):
            raise ValueError("field_sd must be finite and > 0 inside the mask")
        inv = np.divide(1.0, sd, out=np.zeros_like(sd), where=m)
        inv = np.minimum(inv, np.float32(5.0 * np.median(inv[m])))
        w = check_weights(inv, m, "field_sd", like)
        source = "1 / field_sd"
    else:
        w = check_weights(weights, m, like=like)
        source = "uniform" if weights is None else "weights"

    # sizes with factors 2, 3, 5, 7 and 11 (not only 2, 3, 5): fewer voxels for the same
    # margin, (168, 210, 175) instead of (180, 216, 180) at 1 mm, 10 % less time per CG step
    box = fft_box(m, pad_mm / vs + 1, real=False)
    shape = box.shape
    mg = box.to_grid(m, dtype=bool)
    w2 = box.to_grid(w * w)
    mean = float(np.sum(w2 * box.to_grid(f), dtype=np.float64) / np.sum(w2, dtype=np.float64))
    fg = box.to_grid(np.where(m, f - np.float32(mean), np.float32(0)))
    kernel = dipole_kernel(shape, vs, b, rfft=True)  # the solver's and the background's
    params = {"input": "total field (no background removal)", "solver": solver,
              "alpha": alpha, "max_iter": max_iter, "tol": tol, "free_rim": free_rim,
              "pad_mm": pad_mm, "data_weights": source}
    if admm:
        chi, stats = _solve_admm(fg, mg, w2, kernel, vs, alpha=alpha, exterior=exterior_tv,
                                 free_rim=free_rim, max_iter=max_iter, tol=tol,
                                 mu_data=mu_data, mu_grad=mu_grad, start_tol=start_tol,
                                 start_max_iter=start_max_iter, shell_damp=shell_damp,
                                 shell_mm=shell_mm, workers=workers,
                                 reweight_eps=reweight_eps, reweight_iter=reweight_iter,
                                 noise2=None if noise2 is None else box.to_grid(noise2),
                                 bregman_max=bregman_max,
                                 bregman_margin_mm=bregman_margin_mm,
                                 bregman_min_decrease=bregman_min_decrease)
        params.update(exterior_tv=exterior_tv, mu_data=mu_data, mu_grad=mu_grad,
                      start_max_iter=start_max_iter, start_tol=start_tol,
                      shell_damp=shell_damp, shell_mm=shell_mm, reweight_eps=reweight_eps,
                      reweight_iter=reweight_iter, reweighted_at=stats["reweighted_at"],
                      start_cg_iter=stats["start_cg_iter"], change=stats["change"],
                      bregman_max=bregman_max if noise2 is not None else 0,
                      bregman_margin_mm=bregman_margin_mm,
                      bregman_min_decrease=bregman_min_decrease,
                      bregman_steps=stats["bregman_steps"],
                      discrepancy_target=stats["discrepancy_target"],
                      residuals=stats["residuals"])
    else:
        chi, stats = _solve(fg, mg, w2, kernel, vs, max_iter=max_iter, cg_max_iter=cg_max_iter,
                            alpha=alpha, preconditioner=preconditioner, cg_tol=cg_tol,
                            tol=tol, tv_eps=tv_eps, free_rim=free_rim, workers=workers,
                            jacobi=jacobi)
        params.update(preconditioner=preconditioner, cg_max_iter=cg_max_iter,
                      cg_tol=cg_tol, tv_eps=tv_eps, jacobi=jacobi, gn_steps=stats["gn_steps"],
                      cg_iter_per_step=stats["cg_iter_per_step"],
                      step_change=stats["step_change"])
    del fg, w2
    # the field of the background sources (chi outside the mask) in the mask
    bg_field = convolve(np.where(mg, np.float32(0), chi), kernel, workers)
    bg_rms = float(np.sqrt(np.mean(np.square(bg_field[mg], dtype=np.float64))))
    del bg_field
    params.update(padded_shape=list(shape), voxel_size=vs.tolist(), b0_dir=b.tolist(),
                  background_field_rms_ppm=round(bg_rms, 6))
    out = np.where(m, box.from_grid(chi), np.float32(0)).astype(np.float32)
    return DipoleInversionResult(chi=out, n_fft=stats["n_fft"] + 2, n_iter=stats["n_iter"],
                                 method="tfi", parameters=params,
                                 converged=stats["converged"])
