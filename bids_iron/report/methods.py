"""What each algorithm is called in sidecars and methods text, with its reference.

One place for the words, so sidecars (EstimationAlgorithm / EstimationReference) and the
report's methods paragraph never disagree.
"""

R2STAR = {
    "loglinear": ("Weighted log-linear least squares fit of S(TE) = S0 exp(-R2* TE), "
                  "weights S^2",
                  "Bjarnason TA, et al. Characterization of the NMR behavior of white matter in "
                  "bovine brain. Magn Reson Med 2005;54:1072-1081; Veraart J, et al. Weighted "
                  "linear least squares estimation of diffusion MRI parameters. NeuroImage "
                  "2013;81:335-346"),
    "arlo": ("Auto-Regression on Linear Operations (ARLO)",
             "Pei M, Nguyen TD, Thimmappa ND, et al. Algorithm for fast monoexponential fitting "
             "based on Auto-Regression on Linear Operations (ARLO) of data. Magn Reson Med "
             "2015;73:843-850"),
    "nlls": ("Non-linear least squares fit of S(TE) = S0 exp(-R2* TE) on the magnitude "
             "(Gauss-Newton/Levenberg-Marquardt, initialised by the weighted log-linear fit)",
             "Marquardt DW. An algorithm for least-squares estimation of nonlinear parameters. "
             "J Soc Ind Appl Math 1963;11:431-441"),
    "two-echo": ("Two-echo closed form R2* = ln(S1/S2)/(TE2-TE1) from the first two echoes",
                 "Khalil M, et al. Determinants of brain iron in multiple sclerosis: a "
                 "quantitative 3T MRI study. Neurology 2015;84:2396-2402"),
}


def describe(table, method):
    """(EstimationAlgorithm, EstimationReference) for ``method`` of ``table``."""
    return table[method]

MASK = ("Otsu threshold of the root-sum-of-squares magnitude over echoes, hole filling, "
        "morphological opening/closing and the largest connected component")

UNWRAP = {
    "region_growing": ("Quality-guided region growing (ROMEO-like) on echo 1, later echoes "
                       "unwrapped temporally",
                       "Dymerska B, Eckstein K, Bachrata B, et al. Phase unwrapping with a rapid "
                       "opensource minimum spanning tree algorithm (ROMEO). Magn Reson Med "
                       "2021;85:2294-2308"),
    "laplacian": ("Laplacian unwrapping (DCT Poisson solver), snapped to 2*pi multiples",
                  "Schofield MA, Zhu Y. Fast phase unwrapping algorithm for interferometric "
                  "applications. Opt Lett 2003;28:1194-1196"),
}

FIELD = ("MCPC-3D-S phase-offset removal, then a magnitude^2-weighted linear fit of the "
         "unwrapped phase over TE through the origin",
         "Eckstein K, Dymerska B, Bachrata B, et al. Computationally efficient combination of "
         "multi-channel phase data from multi-echo acquisitions (ASPIRE). Magn Reson Med "
         "2018;79:2996-3006")

BACKGROUND = {
    "vsharp": ("V-SHARP (variable-radius spherical mean value filtering, TSVD deconvolution)",
               "Wu B, Li W, Guidon A, Liu C. Whole brain susceptibility mapping using compressed "
               "sensing. Magn Reson Med 2012;67:137-147; Schweser F, et al. NeuroImage "
               "2011;54:2789-2807"),
    "resharp": ("RESHARP (Tikhonov-regularised SHARP, conjugate gradients)",
                "Sun H, Wilman AH. Background field removal using spherical mean value filtering "
                "and Tikhonov regularization. Magn Reson Med 2014;71:1151-1157"),
    "pdf": ("Projection onto dipole fields (PDF)",
            "Liu T, Khalidov I, de Rochefort L, et al. A novel background field removal method "
            "for MRI using projection onto dipole fields. NMR Biomed 2011;24:1129-1136"),
}

LFS = ("Local field shift: unwrapped, background-removed phase expressed in ppm of B0, with "
       "the mean of a reference region subtracted",
       "Hammond KE, Lupo JM, Xu D, et al. Development of a robust method for generating 7.0 T "
       "multichannel phase images of the brain with application to normal volunteers and "
       "patients with neurodegenerative diseases. NeuroImage 2008;39:1682-1692")

DIPOLE = {
    "tkd": ("Truncated k-space division (TKD)",
            "Shmueli K, de Zwart JA, van Gelderen P, et al. Magnetic susceptibility mapping of "
            "brain tissue in vivo using MRI phase data. Magn Reson Med 2009;62:1510-1522"),
    "tikhonov_cg": ("Iterative Tikhonov-regularised inversion (conjugate gradients)",
                    "Kressler B, de Rochefort L, Liu T, et al. Nonlinear regularization for per "
                    "voxel estimation of magnetic susceptibility distributions from MRI field "
                    "maps. IEEE Trans Med Imaging 2010;29:273-281"),
    "tv_admm": ("Total-variation-regularised inversion by ADMM (FANSI-like)",
                "Bilgic B, Fan AP, Polimeni JR, et al. Fast quantitative susceptibility mapping "
                "with L1-regularization and automatic parameter selection. Magn Reson Med "
                "2014;72:1444-1459; Milovic C, et al. Magn Reson Med 2018;80:814-821"),
    "medi": ("Magnitude-weighted total variation (MEDI-like morphology-enabled inversion)",
             "Liu T, Liu J, de Rochefort L, et al. Morphology enabled dipole inversion (MEDI) "
             "from a single-angle acquisition. Magn Reson Med 2011;66:777-783"),
}

SWI = ("Susceptibility-weighted imaging: magnitude multiplied by a positive-phase mask "
       "(1 - phase/pi on 0..pi) to the 4th power, from the background-removed phase",
       "Haacke EM, Xu Y, Cheng YC, Reichenbach JR. Susceptibility weighted imaging (SWI). Magn "
       "Reson Med 2004;52:612-618")
