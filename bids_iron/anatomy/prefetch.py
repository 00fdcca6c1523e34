"""Fetch the TemplateFlow files of the default atlases (run at image build time).

``python -m bids_iron.anatomy.prefetch`` downloads them into ``$TEMPLATEFLOW_HOME``; it
needs internet and exits non-zero when a file cannot be had.
"""

import sys

#: (template, query) pairs of every TemplateFlow file the default anatomy stage reads.
DEFAULT_TEMPLATE_FILES = (
    ("MNI152NLin2009cAsym", dict(resolution=1, suffix="T1w", desc=None, extension=".nii.gz")),
    ("MNI152NLin2009cAsym", dict(resolution=1, suffix="mask", desc="brain", extension=".nii.gz")),
    ("MNI152NLin2009cAsym", dict(resolution=1, label="WM", suffix="probseg", extension=".nii.gz")),
    ("MNI152NLin2009cAsym", dict(resolution=1, atlas="MASSP20", suffix="dseg", extension=".nii.gz")),
    ("MNI152NLin2009cAsym", dict(resolution=1, atlas="MIAL67ThalamicNuclei", suffix="dseg",
                                 extension=".nii.gz")),
    ("SUIT", dict(suffix="T1w", desc=None, extension=".nii.gz")),
    ("SUIT", dict(atlas="Diedrichsen2009", suffix="dseg", extension=".nii.gz")),
)


def main():
    from templateflow import api

    missing = []
    for template, query in DEFAULT_TEMPLATE_FILES:
        try:
            path = api.get(template, **query)
        except Exception as exc:  # network errors come in many types
            path, error = None, exc
        else:
            error = None
        if not path:
            missing.append(f"tpl-{template} {query}: {error or 'not found'}")
        else:
            print(f"fetched {path}")
    if missing:
        print("bids-iron prefetch: could not fetch\n  " + "\n  ".join(missing), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
