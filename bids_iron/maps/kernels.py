"""k-space kernels shared by background removal and dipole inversion, and the B0 direction.

All kernels are returned in unshifted FFT order (DC at index 0), float32, for a grid of
``shape`` voxels of ``voxel_size`` mm. With ``rfft=True`` they match ``scipy.fft.rfftn`` (the
last axis has ``n // 2 + 1`` entries), which halves time and memory for real images.
"""

import numpy as np
import scipy.fft


def check_voxel_size(voxel_size):
    """``voxel_size`` as a float64 array of three finite, positive sizes (mm).

    Raises
    ------
    ValueError
        Naming ``voxel_size`` when it is not three finite positive numbers.

    Examples
    --------
    >>> check_voxel_size((1, 1, 2)).tolist()
    [1.0, 1.0, 2.0]
    """
    vs = np.asarray(voxel_size, dtype=np.float64).ravel()
    if vs.shape != (3,) or not np.all(np.isfinite(vs)) or not np.all(vs > 0):
        raise ValueError(f"voxel_size must be three positive numbers (mm), got {voxel_size!r}")
    return vs


def _check_grid(shape, voxel_size):
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be three positive integers, got {shape!r}")
    return shape, check_voxel_size(voxel_size)


def _kspace_grid(shape, voxel_size, rfft):
    """Spatial frequencies (cycles/mm) as three broadcastable float64 arrays."""
    freqs = [scipy.fft.fftfreq(n, d=d) for n, d in zip(shape, voxel_size)]
    if rfft:
        freqs[2] = scipy.fft.rfftfreq(shape[2], d=voxel_size[2])
    kx = freqs[0][:, None, None]
    ky = freqs[1][None, :, None]
    kz = freqs[2][None, None, :]
    return kx, ky, kz


def b0_direction_from_affine(affine):
    """Unit vector of the main field B0 in voxel axes, from a NIfTI affine.

    The scanner's B0 points along world +z (the NIfTI RAS+ "superior" axis). For an oblique
    slab the voxel axes are rotated, so B0 in voxel coordinates is ``R^-1 @ [0, 0, 1]`` with
    ``R`` the affine's rotation (its 3x3 part with voxel sizes divided out).

    Parameters
    ----------
    affine : (4, 4) array_like
        Voxel-to-world (mm) affine of the image.

    Returns
    -------
    ndarray, shape (3,)
        Unit vector (float64) along B0 in the voxel index axes (i, j, k).

    Examples
    --------
    >>> b0_direction_from_affine(np.diag([1.0, 1.0, 2.0, 1.0])).tolist()
    [0.0, 0.0, 1.0]
    """
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise ValueError("affine must be a finite 4x4 matrix")
    linear = affine[:3, :3]
    sizes = np.linalg.norm(linear, axis=0)
    if np.any(sizes == 0):
        raise ValueError("affine has a zero-length voxel axis")
    rotation = linear / sizes
    direction = np.linalg.solve(rotation, np.array([0.0, 0.0, 1.0]))
    direction = direction / np.linalg.norm(direction)
    direction[np.abs(direction) < 1e-12] = 0.0
    return direction


def dipole_kernel(shape, voxel_size, b0_dir=(0.0, 0.0, 1.0), rfft=False):
    """Unit dipole kernel D(k) = 1/3 - (k . b0)^2 / |k|^2 in k-space.

    ``field_ppm = ifft(D * fft(chi_ppm))`` for a susceptibility distribution ``chi_ppm``
    (paramagnetic positive gives a positive field along B0). D(0) is set to 0 (the mean field
    is not determined by the data).

    Parameters
    ----------
    shape : tuple of 3 int
        Grid size in voxels.
    voxel_size : sequence of 3 float
        Voxel size in mm (anisotropic allowed).
    b0_dir : sequence of 3 float
        B0 direction in voxel axes (see `b0_direction_from_affine`); normalised here.
    rfft : bool
        Return the half-spectrum for ``scipy.fft.rfftn``.

    Returns
    -------
    ndarray, float32
        Kernel of shape ``shape`` (or the rfft shape).

    References
    ----------
    Salomir R, de Senneville BD, Moonen CTW. A fast calculation method for magnetic field
    inhomogeneity due to an arbitrary distribution of bulk susceptibility. Concepts Magn
    Reson B 2003;19B:26-34.
    """
    shape, voxel_size = _check_grid(shape, voxel_size)
    b = np.asarray(b0_dir, dtype=np.float64)
    if b.shape != (3,) or not np.linalg.norm(b) > 0:
        raise ValueError(f"b0_dir must be a non-zero 3-vector, got {b0_dir!r}")
    b = b / np.linalg.norm(b)
    kx, ky, kz = _kspace_grid(shape, voxel_size, rfft)
    k2 = kx ** 2 + ky ** 2 + kz ** 2
    kb = kx * b[0] + ky * b[1] + kz * b[2]
    with np.errstate(invalid="ignore", divide="ignore"):
        kernel = 1.0 / 3.0 - kb ** 2 / k2
    kernel[0, 0, 0] = 0.0
    return kernel.astype(np.float32)


def sphere_kernel(shape, voxel_size, radius_mm, rfft=False, workers=-1):
    """k-space spherical mean value (SMV) kernel of radius ``radius_mm``.

    The image-space kernel is a normalised ball (sums to 1) centred on voxel (0, 0, 0) with
    periodic wrap, so ``ifft(S * fft(x))`` is the mean of ``x`` over the ball around each
    voxel, and ``1 - S`` is the SHARP high-pass that removes harmonic (background) fields.

    Parameters
    ----------
    shape : tuple of 3 int
    voxel_size : sequence of 3 float
        mm.
    radius_mm : float
        Ball radius in mm; at least one voxel besides the centre must fall inside it.
    rfft : bool
        Return the half-spectrum for ``scipy.fft.rfftn``.
    workers : int
        Threads for scipy.fft (-1: all cores).

    Returns
    -------
    ndarray, float32
        Real kernel S(k), S(0) = 1.
    """
    shape, voxel_size = _check_grid(shape, voxel_size)
    if not radius_mm > 0:
        raise ValueError(f"radius_mm must be > 0, got {radius_mm!r}")
    half = [int(np.floor(radius_mm / d)) for d in voxel_size]
    offsets = [np.arange(-h, h + 1) * d for h, d in zip(half, voxel_size)]
    ox, oy, oz = np.meshgrid(*offsets, indexing="ij")
    ball = (ox ** 2 + oy ** 2 + oz ** 2) <= radius_mm ** 2 + 1e-9
    if ball.sum() < 2:
        raise ValueError(f"radius_mm={radius_mm} is smaller than a voxel {tuple(voxel_size)}")
    image = np.zeros(shape, dtype=np.float32)
    idx = [np.mod(np.arange(-h, h + 1), n) for h, n in zip(half, shape)]
    image[np.ix_(*idx)] += (ball / ball.sum()).astype(np.float32)
    # the ball is point-symmetric, so its spectrum is real
    if rfft:
        return scipy.fft.rfftn(image, workers=workers).real.astype(np.float32)
    return scipy.fft.fftn(image, workers=workers).real.astype(np.float32)


def convolve(image, kernel, workers=-1):
    """Periodic convolution of a real image with a real half-spectrum kernel.

    ``irfftn(kernel * rfftn(image))`` on the image's own grid, float32: with `dipole_kernel`
    (``rfft=True``) the field (ppm) of a susceptibility distribution (ppm), with
    `sphere_kernel` a spherical mean. Two real FFTs.

    Parameters
    ----------
    image : ndarray, shape (X, Y, Z)
        Real image (e.g. chi, ppm).
    kernel : ndarray, shape (X, Y, Z // 2 + 1)
        Kernel on the ``scipy.fft.rfftn`` half-spectrum of that grid.
    workers : int
        ``scipy.fft`` threads (-1: all cores).

    Returns
    -------
    ndarray, float32, shape (X, Y, Z)

    Examples
    --------
    A paramagnetic sphere (+0.1 ppm) raises the field above and below it along B0 and lowers
    it beside it:

    >>> import numpy as np
    >>> g = np.indices((32, 32, 32)) - 16
    >>> chi = np.where((g ** 2).sum(0) <= 4 ** 2, 0.1, 0.0)
    >>> field = convolve(chi, dipole_kernel(chi.shape, (1, 1, 1), rfft=True))
    >>> field.dtype, bool(field[16, 16, 22] > 0 > field[22, 16, 16])
    (dtype('float32'), True)
    """
    spec = scipy.fft.rfftn(image, workers=workers)
    spec *= kernel
    return scipy.fft.irfftn(spec, s=image.shape, workers=workers,
                            overwrite_x=True).astype(np.float32, copy=False)
