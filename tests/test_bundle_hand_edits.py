"""Hand edits of ``bundle.json`` that were read as something else, without a word (a CLI walk)."""

from __future__ import annotations

import json

import pytest

from sensorguard.service.bundle import BundleError, save_bundle
from sensorguard.service.bundle_loading import load_bundle


def _edited(tiny_bundle, tmp_path, **fields):
    path = save_bundle(tiny_bundle, tmp_path / "b")
    meta_path = path / "bundle.json"
    meta = json.loads(meta_path.read_text())
    for key, value in fields.items():
        if key.startswith("cleaning_"):
            meta["cleaning"][key.removeprefix("cleaning_")] = value
        else:
            meta[key] = value
    meta_path.write_text(json.dumps(meta))
    return path


@pytest.mark.parametrize(("fields", "said"), [
    ({"sample_period": 0}, "sample_period must be a positive number of seconds or null, got 0"),
    ({"sample_period": "1s"}, "sample_period must be a positive number"),
    ({"cleaning_regular": "no"}, "cleaning regular must be true or false, got no"),
    ({"cleaning_fill_limit": 2.5}, "cleaning fill_limit must be a whole number, got 2.5"),
    ({"cleaning_fil_limit": 3}, "cleaning has no field 'fil_limit' (its fields: fill_limit, jitter,"),
])
def test_a_hand_edit_read_as_something_else_is_refused_naming_it(tiny_bundle, tmp_path, fields, said):
    """``sample_period: 0`` was read as none (the rate and gap checks off), ``"regular": "no"`` as
    true, ``fill_limit: 2.5`` as 2, and a misspelt field was ignored: each scored without a note."""
    with pytest.raises(BundleError, match="bundle.json: .*" + said.replace("(", r"\(").replace("'", "'")):
        load_bundle(_edited(tiny_bundle, tmp_path, **fields))


def test_the_edits_a_user_may_make_still_load(tiny_bundle, tmp_path):
    loaded = load_bundle(_edited(tiny_bundle, tmp_path, cleaning_regular=False, cleaning_fill_limit=2,
                                 sample_period=None))
    assert (loaded.regular, loaded.fill_limit, loaded.sample_period) == (False, 2, None)
