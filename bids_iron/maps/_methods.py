"""The records of `bids_iron.maps.registry`: every method of every family, with its words.

The default of each family is marked where it is registered; the measurements that chose it
sit next to the constant in the family's module (``DEFAULT_*_METHOD``).
"""

from functools import partial

from . import background, dipole, r2star, tfi, unwrap
from .registry import Method, register


#: Each family's measured default (the constants beside the measurements in its module).
_DEFAULTS = {"r2star": r2star.DEFAULT_R2STAR_METHOD, "unwrap": unwrap.DEFAULT_UNWRAP_METHOD,
             "background": background.DEFAULT_BACKGROUND_METHOD,
             "dipole": dipole.DEFAULT_QSM_METHOD}


def _add(family, name, function, summary, algorithm, reference, needs=(), field="local"):
    register(Method(family, name, function, summary, algorithm, reference, tuple(needs),
                    field), default=name == _DEFAULTS[family])


def _r2star(name, summary, algorithm, reference):
    _add("r2star", name, partial(r2star.fit_r2star, method=name), summary, algorithm,
         reference)


_r2star("loglinear", "weighted log-linear",
        "Weighted log-linear least squares fit of S(TE) = S0 exp(-R2* TE), weights S^2",
        "Bjarnason TA, et al. Characterization of the NMR behavior of white matter in bovine "
        "brain. Magn Reson Med 2005;54:1072-1081; Veraart J, et al. Weighted linear least "
        "squares estimation of diffusion MRI parameters. NeuroImage 2013;81:335-346")
_r2star("arlo", "Pei 2015, needs >=3 equally spaced echoes",
        "Auto-Regression on Linear Operations (ARLO)",
        "Pei M, Nguyen TD, Thimmappa ND, et al. Algorithm for fast monoexponential fitting "
        "based on Auto-Regression on Linear Operations (ARLO) of data. Magn Reson Med "
        "2015;73:843-850")
_r2star("nlls", "non-linear least squares",
        "Non-linear least squares fit of S(TE) = S0 exp(-R2* TE) on the magnitude "
        "(Gauss-Newton/Levenberg-Marquardt, initialised by the weighted log-linear fit)",
        "Marquardt DW. An algorithm for least-squares estimation of nonlinear parameters. "
        "J Soc Ind Appl Math 1963;11:431-441")
_r2star("two-echo", "closed form on the first two echoes",
        "Two-echo closed form R2* = ln(S1/S2)/(TE2-TE1) from the first two echoes",
        "Khalil M, et al. Determinants of brain iron in multiple sclerosis: a quantitative 3T "
        "MRI study. Neurology 2015;84:2396-2402")

_add("unwrap", "region_growing", unwrap.unwrap_region_growing, "ROMEO-like region growing",
     "Quality-guided region growing (ROMEO-like) on echo 1, later echoes unwrapped temporally",
     "Dymerska B, Eckstein K, Bachrata B, et al. Phase unwrapping with a rapid opensource "
     "minimum spanning tree algorithm (ROMEO). Magn Reson Med 2021;85:2294-2308")
_add("unwrap", "laplacian", unwrap.unwrap_laplacian, "DCT Poisson solver",
     "Laplacian unwrapping (DCT Poisson solver), snapped to 2*pi multiples",
     "Schofield MA, Zhu Y. Fast phase unwrapping algorithm for interferometric applications. "
     "Opt Lett 2003;28:1194-1196")

_add("background", "vsharp", background.remove_background_vsharp, "V-SHARP",
     "V-SHARP (variable-radius spherical mean value filtering, TSVD deconvolution)",
     "Wu B, Li W, Guidon A, Liu C. Whole brain susceptibility mapping using compressed "
     "sensing. Magn Reson Med 2012;67:137-147; Schweser F, et al. NeuroImage "
     "2011;54:2789-2807")
_add("background", "resharp", background.remove_background_resharp, "RESHARP",
     "RESHARP (Tikhonov-regularised SHARP, conjugate gradients)",
     "Sun H, Wilman AH. Background field removal using spherical mean value filtering "
     "and Tikhonov regularization. Magn Reson Med 2014;71:1151-1157")
_add("background", "pdf", background.remove_background_pdf, "projection onto dipole fields",
     "Projection onto dipole fields (PDF)",
     "Liu T, Khalidov I, de Rochefort L, et al. A novel background field removal method "
     "for MRI using projection onto dipole fields. NMR Biomed 2011;24:1129-1136",
     needs=("b0_dir",))
_add("background", "lbv", background.remove_background_lbv, "Laplacian boundary value",
     "Laplacian boundary value (LBV) background removal: Laplace's equation inside the "
     "mask with the measured field on its boundary, preconditioned conjugate gradients",
     "Zhou D, Liu T, Spincemaille P, Wang Y. Background field removal by solving the "
     "Laplacian boundary value problem. NMR Biomed 2014;27:312-319")
_add("background", "ismv", background.remove_background_ismv, "iterative spherical mean value",
     "Iterative spherical mean value (iSMV): the mask eroded by the SMV radius, the "
     "background iterated as its own spherical mean inside, held to the field on the rim",
     "Wen Y, Zhou D, Liu T, Spincemaille P, Wang Y. An iterative spherical mean value method "
     "for background field removal in MRI. Magn Reson Med 2014;72:1065-1071")

_add("dipole", "tkd", dipole.invert_dipole_tkd, "truncated k-space division",
     "Truncated k-space division (TKD)",
     "Shmueli K, de Zwart JA, van Gelderen P, et al. Magnetic susceptibility mapping of "
     "brain tissue in vivo using MRI phase data. Magn Reson Med 2009;62:1510-1522")
_add("dipole", "tikhonov_cg", dipole.invert_dipole_tikhonov_cg,
     "iterative Tikhonov, conjugate gradients",
     "Iterative Tikhonov-regularised inversion (conjugate gradients)",
     "Kressler B, de Rochefort L, Liu T, et al. Nonlinear regularization for per voxel "
     "estimation of magnetic susceptibility distributions from MRI field maps. IEEE Trans "
     "Med Imaging 2010;29:273-281")
_add("dipole", "tv_admm", dipole.invert_dipole_tv_admm, "total variation by ADMM",
     "Total-variation-regularised inversion by ADMM (FANSI-like)",
     "Bilgic B, Fan AP, Polimeni JR, et al. Fast quantitative susceptibility mapping with "
     "L1-regularization and automatic parameter selection. Magn Reson Med "
     "2014;72:1444-1459; Milovic C, et al. Magn Reson Med 2018;80:814-821")
_add("dipole", "l1_tv", dipole.invert_dipole_l1_tv, "total variation, L1 data term (L1-QSM)",
     "Total-variation inversion with an L1 data-fidelity term (L1-QSM), by ADMM",
     "Milovic C, Lambert M, Langkammer C, et al. Streaking artifact suppression of "
     "quantitative susceptibility mapping reconstructions via L1-norm data fidelity "
     "optimization (L1-QSM). Magn Reson Med 2022;87:457-473")
_add("dipole", "nltv", dipole.invert_dipole_nltv, "total variation, nonlinear data term",
     "Total-variation inversion with FANSI's nonlinear (complex-exponential) data term, "
     "by ADMM", "Milovic C, Bilgic B, Zhao B, Acosta-Cabronero J, Tejos C. Fast nonlinear "
     "susceptibility inversion with variational regularization. Magn Reson Med "
     "2018;80:814-821", needs=("phase_scale",))
_add("dipole", "hybrid", dipole.invert_dipole_hybrid,
     "two stages: L1 data term, then L2 (HD-QSM-like)",
     "Total-variation inversion with a hybrid data term (HD-QSM-like): an L1 data-fidelity "
     "stage (robust to phase outliers), then an L2 stage started from it, both by ADMM",
     "Lambert M, Tejos C, Langkammer C, Milovic C. Hybrid data fidelity term approach for "
     "quantitative susceptibility mapping. Magn Reson Med 2022;88:962-972")
_add("dipole", "medi", dipole.invert_dipole_medi, "MEDI-like magnitude-weighted TV",
     "Magnitude-weighted total variation (MEDI-like morphology-enabled inversion)",
     "Liu T, Liu J, de Rochefort L, et al. Morphology enabled dipole inversion (MEDI) from "
     "a single-angle acquisition. Magn Reson Med 2011;66:777-783", needs=("magnitude",))
_add("dipole", "tfi", tfi.invert_total_field_tfi,
     "total field inversion: no background removal; the LFS still from "
     "--background-method",
     "Preconditioned total field inversion (TFI): one susceptibility map inside and around "
     "the brain mask fitted to the total field in the mask, preconditioner 1 inside and 30 "
     "outside, total variation inside the mask, Gauss-Newton with conjugate gradients "
     "(diagonally preconditioned inside the mask)",
     "Liu Z, Kee Y, Zhou D, Wang Y, Spincemaille P. Preconditioned total field inversion "
     "(TFI) method for quantitative susceptibility mapping. Magn Reson Med "
     "2017;78:303-315", field="total")
_add("dipole", "tfi_admm", partial(tfi.invert_total_field_tfi, solver="admm"),
     "total field inversion by ADMM (5x faster than tfi); the LFS still from "
     "--background-method",
     "Total field inversion solved by ADMM with closed-form steps: one susceptibility map "
     "inside and around the brain mask fitted to the total field in the mask, total "
     "variation inside the mask (none outside), started from PDF's background sources "
     "damped next to the mask, the total variation reweighted once where it converges, "
     "then Bregman steps until the data residual falls to the field's noise",
     "Liu Z, Kee Y, Zhou D, Wang Y, Spincemaille P. Preconditioned total field inversion "
     "(TFI) method for quantitative susceptibility mapping. Magn Reson Med "
     "2017;78:303-315; Milovic C, Bilgic B, Zhao B, et al. Magn Reson Med 2018;80:814-821 "
     "(ADMM splitting); Osher S, Burger M, Goldfarb D, Xu J, Yin W. An iterative "
     "regularization method for total variation-based image restoration. Multiscale Model "
     "Simul 2005;4:460-489 (Bregman steps)", field="total", needs=("noise_sd",))
