"""Pure MRI physics on numpy arrays (no file I/O, nothing else of bids_iron imported).

Conventions: echo times in seconds, R2* in 1/s, T2* in s, field in Hz or ppm (named in each
function), susceptibility chi in ppm with paramagnetic positive. Multi-echo arrays carry the
echoes on the LAST axis. Masks are boolean arrays, or numeric arrays holding only 0 and 1, of
the image's shape; anything else raises ValueError naming the argument (one policy for every
function: `bids_iron.maps._numerics.check_mask`, the package's shared numerical core).
"""
