"""Fetch the TemplateFlow files of the default template and atlases (image build time).

``python -m bids_iron.anatomy.prefetch [TEMPLATE]`` downloads into ``$TEMPLATEFLOW_HOME``
exactly the files `bids_iron.anatomy.templates.fetch_atlas_files` reads (and the optional
2 mm T1w/T2w that speed up and guide registration); it needs internet and exits non-zero,
with the missing file named, when a file cannot be had.
"""

import sys


def main(argv=None):
    from ..errors import BidsIronError
    from .templates import DEFAULT_TEMPLATE, fetch_atlas_files

    argv = sys.argv[1:] if argv is None else argv
    template = argv[0] if argv else DEFAULT_TEMPLATE
    try:
        files = fetch_atlas_files(template)
    except BidsIronError as exc:  # its advice names this command: say what to do instead
        reason = str(exc).split(" (template")[0]
        print(f"bids-iron prefetch: {reason}: this command downloads, so run it where there is "
              "internet and copy that TEMPLATEFLOW_HOME here (or use the container image, "
              "which has the files; `bids-iron-demo DIR` tries the app offline; "
              "--no-anatomy gives the maps without templates)", file=sys.stderr)
        return 1
    for path in (files.t1w, files.t1w_coarse, files.t2w_coarse, files.brain_mask,
                 files.wm_probseg, files.suit_t1w, *[a.dseg for a in files.atlases],
                 *[a.tsv for a in files.atlases]):
        if path is not None:
            print(f"have {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
