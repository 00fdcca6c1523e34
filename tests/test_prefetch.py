"""``python -m bids_iron.anatomy.prefetch`` offline: one line that does not send the user back
to the same command."""

from bids_iron.anatomy import prefetch, templates
from bids_iron.errors import BidsIronError


def test_offline_prefetch_says_what_to_do(monkeypatch, tmp_path, capsys):
    def offline(template):  # what templates._tf_get raises when the download fails
        raise BidsIronError(
            f"TemplateFlow file tpl-{template}_res-01_T1w.nii.gz not found in "
            f"TEMPLATEFLOW_HOME={tmp_path} (template {template}; offline?); pre-fetch it with "
            "... (all default files: python -m bids_iron.anatomy.prefetch), ...")

    monkeypatch.setattr(templates, "fetch_atlas_files", offline)
    assert prefetch.main([]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "res-01_T1w.nii.gz" in err and "internet" in err and "bids-iron-demo" in err
    assert "python -m bids_iron.anatomy.prefetch" not in err
