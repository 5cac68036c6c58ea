"""A face library missing from the environment is named with the extra that brings it."""

import pytest

from fastface_lite.faces.analyzer import import_face_library


def test_missing_face_library_names_the_faces_extra():
    with pytest.raises(ModuleNotFoundError, match=r"no_such_face_lib is not installed; .*fastface_lite\[faces\]"):
        import_face_library("no_such_face_lib.app")


def test_present_face_library_is_returned():
    assert import_face_library("dlib").__name__ == "dlib"
