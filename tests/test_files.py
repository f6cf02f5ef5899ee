"""keras_cnns.files: a file is replaced whole or not at all."""
import os

import pytest

from keras_cnns.files import replaced_atomically


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path):
    path = tmp_path / "report.json"
    path.write_text("old")
    with pytest.raises(OSError):
        with replaced_atomically(str(path), ".json") as tmp:
            assert tmp.endswith(".json") and os.path.dirname(tmp) == str(tmp_path)
            assert os.path.basename(tmp).startswith(".")  # hidden from a reader listing *.json
            with open(tmp, "w") as f:
                f.write("half")
            raise OSError(28, "No space left on device")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["report.json"]
    with replaced_atomically(str(path)) as tmp:
        with open(tmp, "w") as f:
            f.write("new")
        assert path.read_text() == "old"  # not yet: only when the block ends
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["report.json"]
