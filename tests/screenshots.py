"""Headless-Chromium screenshots of the HTML reports, to look at them as a person would.

Used by ``tests/test_report.py`` (layout checks) and ``benchmarks/screenshot_report.py``
(screenshots to look at). Chromium runs offline (no network, sync, updates or first-run
screens) in a throw-away profile beside the PNG.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars")


def chromium():
    """The Chromium executable, or None when none is installed."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(html, png, width=1400, height=24000, tile=1600):
    """Screenshot of the page ``html`` into ``png``, cropped to its content, and cut into tiles.

    Parameters
    ----------
    html, png : pathlib.Path
        The page and the PNG to write (its folder also holds Chromium's profile).
    width, height : int
        Window size (px); the page is cut at ``height`` (a message says when it may be).
    tile : int
        Height of the ``<png stem>_partN.png`` tiles (px), small enough for an image viewer
        to show at full size; tiles of an earlier, longer page are removed.

    Returns
    -------
    list of pathlib.Path
        The tiles, top to bottom.
    """
    from PIL import Image

    profile = png.parent / ".chromium-profile"
    cmd = [chromium() or "chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
           f"--screenshot={png}", f"--window-size={width},{height}", html.resolve().as_uri()]
    subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
    image = Image.open(png).convert("RGB")
    # drop the empty (white) bottom of the window
    rows = np.flatnonzero(np.any(np.asarray(image) < 250, axis=(1, 2)))
    if rows.size and rows[-1] >= height - 40:
        print(f"  {html.name}: the page may be longer than the window ({height} px); "
              "use a larger height")
    if rows.size:
        image = image.crop((0, 0, width, min(image.height, int(rows[-1]) + 20)))
        image.save(png)
    for old in png.parent.glob(f"{png.stem}_part*.png"):
        old.unlink()
    tiles = []
    for i, top in enumerate(range(0, image.height, tile)):
        path = png.with_name(f"{png.stem}_part{i + 1}.png")
        image.crop((0, top, width, min(top + tile, image.height))).save(path)
        tiles.append(path)
    return tiles
