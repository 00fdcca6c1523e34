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
